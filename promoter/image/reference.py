"""Image references: ``registry/repository[:tag][@sha256:hex]`` parsed the way Docker does."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import TypeGuard

from promoter.errors import PermanentError, UserError

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
# The names Docker Hub goes by in references: one registry, however it is written.
_DOCKER_HUB_NAMES = frozenset({DOCKER_HUB, "index.docker.io", DOCKER_HUB_API})
# fullmatch throughout: ``$`` would let a trailing newline through.
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
# The distribution spec's tag grammar, ASCII only: a tag becomes a URL path segment
# (/v2/<repo>/manifests/<tag>), so Unicode word characters or dots-and-slashes must not pass.
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
TAG_HINT = ("a tag is 1-128 ASCII letters, digits, '_', '.' and '-', not starting with "
            "'.' or '-' (e.g. v7)")
_REPO_PART = re.compile(r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$")


@dataclass(frozen=True)
class Reference:
    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def api_host(self) -> str:
        """The host that serves the distribution API (Docker Hub's differs from its name)."""
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def name(self) -> str:
        """``registry/repository``: cosign's docker-reference, without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def cosign_name(self) -> str:
        """The repository as cosign writes it into signatures (go-containerregistry's name)."""
        registry = "index.docker.io" if self.registry == DOCKER_HUB else self.registry
        return f"{registry}/{self.repository}"

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.registry, self.repository, None, digest)

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def parse_reference(text: str) -> Reference:
    """Parse a reference; a missing registry means Docker Hub, as in ``docker pull``."""
    original = text
    if text != text.strip():
        # Never trimmed: a name that only looks like another once trimmed ("models/x\n")
        # must not be pushed, signed or pinned as that other one.
        raise UserError(f"image reference {text!r} has leading or trailing whitespace")
    rest, digest = original, None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not _DIGEST.fullmatch(digest):
            raise UserError(f"image reference {original!r} has an invalid digest {digest!r}",
                            hint="digests look like sha256:<64 lowercase hex characters>")
    tag = None
    last = rest.rsplit("/", 1)[-1]
    if ":" in last:
        rest, tag = rest.rsplit(":", 1)
        check_tag(tag, f"image reference {original!r}")
    first, _, remainder = rest.partition("/")
    if remainder and ("." in first or ":" in first or first == "localhost"):
        registry, repository = first, remainder
    else:
        registry, repository = DOCKER_HUB, rest
        if "/" not in repository:
            repository = f"library/{repository}"
    if not repository or not all(_REPO_PART.fullmatch(part) for part in repository.split("/")):
        raise UserError(f"image reference {original!r} has an invalid repository name",
                        hint="use lowercase letters, digits and . _ - separated by /, "
                             "e.g. 127.0.0.1:5000/models/fraud-detector")
    return Reference(registry, repository, tag, digest)


def same_registry(first: str, second: str) -> bool:
    """Whether two references' registry parts name the same registry: host names compare
    without case, and Docker Hub's aliases are one registry. Anything else must match
    exactly, ports included ("r.io" and "r.io:443" count as two): a false "different" only
    costs a copy where a mount would have done, a false "same" a failed mount."""
    def key(registry: str) -> str:
        lowered = registry.lower()
        return DOCKER_HUB if lowered in _DOCKER_HUB_NAMES else lowered
    return key(first) == key(second)


def check_tag(tag: str, where: str) -> str:
    """``tag`` if it is a valid tag; else a UserError naming ``where`` it came from."""
    if not _TAG.fullmatch(tag):
        raise UserError(f"{where}: {tag[:140]!r} is not a valid image tag", hint=TAG_HINT)
    return tag


def is_digest(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and bool(_DIGEST.fullmatch(value))


def check_digest(value: object, source: str) -> str:
    """A descriptor digest read from a registry or an image layout, checked before it goes
    into a URL or a file path (``sha256:../..`` would otherwise steer either)."""
    if not is_digest(value):
        raise PermanentError(f"{source} names an invalid digest {str(value)[:100]!r}",
                             hint="digests look like sha256:<64 lowercase hex characters>; "
                                  "the image or its registry is damaged or not to be trusted")
    return value


def is_loopback_registry(registry: str) -> bool:
    """Whether ``registry`` (host[:port], IPv6 hosts in brackets) is this machine, which is
    spoken to over plain HTTP. The host is parsed as an address, so a name that merely starts
    with ``127.`` (``127.evil.example``) is not loopback."""
    if registry.startswith("["):
        host = registry[1:].partition("]")[0]
    else:
        host = registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
