"""Whether an artifact URI is under a root: the one rule for every "may promoter read there"
and "do these files belong to that run" question.

The URIs come from whoever registered a model version, and promoter reads them with its own
credentials, so the answer is no whenever a store could read the URI as somewhere else: a
different scheme or bucket/host, a path that is only a string prefix (``s3://b/team`` does not
hold ``s3://b/team-evil``), ``.``/``..`` segments, empty segments (``a//b``), and characters a
store may decode, cut at or normalise (``%`` escapes, ``?``, ``#``, backslashes, whitespace,
control characters). Roots and URIs are compared segment by segment after the same parsing.

A root may name a whole scheme whose URIs need no host (only ``mlflow-artifacts:``: the
tracking server's own artifact proxy, not ``mlflow-artifacts://other-host/…``; and ``dbfs:``),
a whole bucket or host (``s3://ml-artifacts`` or ``s3://ml-artifacts/``) or a directory
(``s3://ml-artifacts/team-a``, ``file:///srv/mlruns``, ``dbfs:/models``). Trailing slashes do
not matter; schemes compare without case; the bucket/host compares exactly. A ``file`` URI is
taken as MLflow reads it: its host is no part of where it is (``file://nas/x`` is the local
``/x``), and ``FILE:/x`` or a bare ``//host/x`` is not the local ``/x`` at all (refused).
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


# The schemes whose root may name no bucket or host: the URIs of these stores need none
# (``mlflow-artifacts:/…`` is the tracking server's own proxy, ``dbfs:/…`` the workspace's
# DBFS). Every other store's host-less URI names nothing (``s3:``) or whatever the reader's
# own configuration makes it (``hdfs:/…`` is the default namenode), so its root must name one.
# ``file`` roots are checked apart: they need a directory.
_HOSTLESS_SCHEMES = frozenset({"mlflow-artifacts", "dbfs"})


def root_problem(root: str) -> str | None:
    """Why ``root`` cannot be a root (it would hold nothing, somewhere the reader chooses, or
    the whole local filesystem), or None when it can."""
    place = _place(root)
    if place is None:
        return ("is not a root: write a scheme (mlflow-artifacts:) or an absolute URI "
                "(s3://bucket/dir, file:///dir) with no '.', '..' or empty path segments and no "
                "'%', '?', '#', backslash or whitespace")
    if place.scheme == "file":
        if not place.segments:   # whatever its host: see _place
            return ("is the whole local filesystem, promoter's own secrets included: name "
                    "the directory the runs' artifacts are in (file:///srv/mlruns)")
    elif not place.authority and place.scheme not in _HOSTLESS_SCHEMES:
        return (f"names no bucket or host (only mlflow-artifacts:, dbfs: and file:///dir may "
                f"omit it): write {place.scheme}://BUCKET/ or {place.scheme}://BUCKET/dir, "
                "BUCKET being the bucket, container or host")
    return None


def is_plain_path(path: str) -> bool:
    """Whether a URI path has no ``.``/``..`` segment and no character a store may decode."""
    return not _AMBIGUOUS.search(path) and not any(
        segment in (".", "..") for segment in path.split("/"))


def _place(uri: str) -> _Place | None:
    """(scheme, authority, path segments) of an artifact URI, or None when it is ambiguous.
    A bare absolute path is a ``file`` URI, as MLflow treats it."""
    if uri.startswith("//"):
        return None  # a bare path: MLflow reads //host/x as the path //host/x, not /x
    if uri.startswith("/"):
        scheme, rest = "file", uri
    elif (found := _SCHEME.match(uri)) is not None:
        scheme, rest = found["scheme"].lower(), found["rest"]
        if scheme == "file" and found["scheme"] != "file":
            return None  # MLflow strips only a lower-case file: and reads FILE:/x as relative
    else:
        return None
    if scheme == "file" and not rest.startswith("/"):
        return None  # file:dir/x is relative to the reader's working directory
    authority = ""
    if rest.startswith("//"):
        authority, _, path = rest[2:].partition("/")
    else:
        path = rest.removeprefix("/")
    trimmed = path.rstrip("/")
    segments = tuple(trimmed.split("/")) if trimmed else ()
    # An empty segment (``a//b``) is a different key in object stores, or not, per store.
    if not is_plain_path(authority + "/" + path) or "" in segments:
        return None
    if scheme == "file":
        # MLflow reads a file URI as its path alone, on POSIX whatever the host
        # (mlflow.utils.file_utils.local_file_uri_to_path keeps urlparse(uri).path; the host
        # only makes a UNC path on Windows): file://nas/srv/x is the local /srv/x.
        authority = ""
    return _Place(scheme, authority, segments)
