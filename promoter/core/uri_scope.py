"""Whether an artifact URI is under a root: the one rule for every "may promoter read there"
and "do these files belong to that run" question.

The URIs come from whoever registered a model version, and promoter reads them with its own
credentials, so the answer is no whenever a store could read the URI as somewhere else: a
different scheme or bucket/host, a path that is only a string prefix (``s3://b/team`` does not
hold ``s3://b/team-evil``), ``.``/``..`` segments, empty segments (``a//b``), and characters a
store may decode, cut at or normalise (``%`` escapes, ``?``, ``#``, backslashes, whitespace,
control characters). Roots and URIs are compared segment by segment after the same parsing.

A root may name a whole scheme whose URIs need no host (``mlflow-artifacts:``: the tracking
server's own artifact proxy, not ``mlflow-artifacts://other-host/…``; ``dbfs:``), a whole bucket
(``s3://ml-artifacts`` or ``s3://ml-artifacts/``) or a directory (``s3://ml-artifacts/team-a``,
``file:///srv/mlruns``, ``dbfs:/models``). Trailing slashes do not matter; schemes compare
without case; the bucket/host compares exactly (``file://localhost/x`` is ``file:///x``).
"""

from __future__ import annotations

import re
from typing import NamedTuple

_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*):(?P<rest>.*)$", re.DOTALL)
# Characters a store may decode or cut at (percent escapes, query, fragment, backslashes):
# a URI holding them is never taken to be under a root.
_AMBIGUOUS = re.compile(r"[%?#\\\s\x00-\x1f\x7f]")


class _Place(NamedTuple):
    scheme: str
    authority: str
    segments: tuple[str, ...]


def is_within(uri: str, root: str) -> bool:
    """Whether ``uri`` is ``root`` or below it (see the module docstring for what is refused)."""
    inner, outer = _place(uri), _place(root)
    if inner is None or outer is None:
        return False
    return (inner.scheme, inner.authority) == (outer.scheme, outer.authority) \
        and inner.segments[:len(outer.segments)] == outer.segments


def names_a_directory(uri: str) -> bool:
    """Whether ``uri`` is unambiguous and has a path below its scheme and bucket/host (it is
    not a whole bucket or a whole scheme)."""
    place = _place(uri)
    return place is not None and bool(place.segments)


# Stores whose URIs always name a bucket, container or host: a root of the bare scheme
# (``s3:``, ``gs://``) would match no URI of theirs, so it is refused rather than quietly
# refusing every version.
_BUCKET_SCHEMES = frozenset({"s3", "s3a", "s3n", "gs", "wasb", "wasbs", "abfs", "abfss", "oss",
                             "http", "https"})


def root_problem(root: str) -> str | None:
    """Why ``root`` cannot be a root (it would hold nothing, or the whole local filesystem),
    or None when it can."""
    place = _place(root)
    if place is None:
        return ("is not a root: write a scheme (mlflow-artifacts:) or an absolute URI "
                "(s3://bucket/dir, file:///dir) with no '.', '..' or empty path segments and no "
                "'%', '?', '#', backslash or whitespace")
    if place.scheme in _BUCKET_SCHEMES and not place.authority:
        return (f"names no bucket or host, so it would hold nothing: write "
                f"{place.scheme}://BUCKET/ or {place.scheme}://BUCKET/dir")
    if place.scheme == "file" and not place.authority and not place.segments:
        return ("is the whole local filesystem, promoter's own secrets included: name the "
                "directory the runs' artifacts are in (file:///srv/mlruns)")
    return None


def is_plain_path(path: str) -> bool:
    """Whether a URI path has no ``.``/``..`` segment and no character a store may decode."""
    return not _AMBIGUOUS.search(path) and not any(
        segment in (".", "..") for segment in path.split("/"))


def _place(uri: str) -> _Place | None:
    """(scheme, authority, path segments) of an artifact URI, or None when it is ambiguous.
    A bare absolute path is a ``file`` URI, as MLflow treats it."""
    if uri.startswith("/"):
        scheme, rest = "file", uri
    elif (found := _SCHEME.match(uri)) is not None:
        scheme, rest = found["scheme"].lower(), found["rest"]
    else:
        return None
    if scheme == "file" and not rest.startswith("/"):
        return None  # file:dir/x is relative to the reader's working directory
    authority = ""
    if rest.startswith("//"):
        authority, _, path = rest[2:].partition("/")
    else:
        path = rest.removeprefix("/")
    if scheme == "file" and authority == "localhost":
        authority = ""
    trimmed = path.rstrip("/")
    segments = tuple(trimmed.split("/")) if trimmed else ()
    # An empty segment (``a//b``) is a different key in object stores, or not, per store.
    if not is_plain_path(authority + "/" + path) or "" in segments:
        return None
    return _Place(scheme, authority, segments)
