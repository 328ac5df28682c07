"""Image platforms (os/architecture[/variant]): parsing, normalising and picking one from an
index, the way containerd's ``platforms`` package does, so promoter runs what a node would.

Pure: no I/O. ``promoter.image.base`` uses it to choose a base image's platform manifest.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from promoter.errors import UserError

EXAMPLE = "linux/amd64, linux/arm64 or linux/arm/v7"
SHOWN_OFFERS = 10
# containerd's normalisation of other spellings; armhf/armel also fix the variant.
_ARCH_ALIASES = {"x86_64": ("amd64", ""), "x86-64": ("amd64", ""),
                 "aarch64": ("arm64", ""), "armhf": ("arm", "v7"), "armel": ("arm", "v6")}
# 32-bit arm runs its own variant or an older one, newest first (containerd's order); without a
# variant it is v7.
_ARM_PREFERENCE = ("v7", "v6", "v5")
# Variants that are their architecture's default: dropped, so each platform has one spelling.
_DEFAULT_VARIANTS = frozenset({("arm64", "v8"), ("amd64", "v1")})
_SEGMENT = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
# BuildKit lists its attestation manifests under this platform: never an image to run.
_ATTESTATION = ("unknown", "unknown")


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""  # "" for arm64 (v8) and amd64 (v1); 32-bit arm: taken from the index

    def parts(self) -> tuple[str, ...]:
        """os, architecture and (only when given) variant: stable across versions, so the
        digests of builds without a variant stay what they were."""
        return (self.os, self.architecture, self.variant) if self.variant else (
            self.os, self.architecture)

    def __str__(self) -> str:
        return "/".join(self.parts())

    def variant_open(self) -> bool:
        """True when the base's index decides the variant (32-bit arm without one)."""
        return self.architecture == "arm" and not self.variant


def platform_problem(text: str) -> str | None:
    """What is wrong with ``text`` as a platform, said after the setting's name; None if fine."""
    segments = text.split("/")
    if not 2 <= len(segments) <= 3 or not all(_SEGMENT.fullmatch(part) for part in segments):
        return f"must be os/arch or os/arch/variant in lowercase, e.g. {EXAMPLE}"
    if tuple(segments[:2]) == _ATTESTATION:
        return f"names BuildKit's attestation entries, not an image; use e.g. {EXAMPLE}"
    return None


def parse_platform(text: str) -> Platform:
    """``os/arch`` or ``os/arch/variant``, normalised; a UserError names image.platform."""
    problem = platform_problem(text)
    if problem is not None:
        raise UserError(f"image.platform {text!r} {problem}",
                        hint="set image.platform in promoter.yaml")
    segments = text.split("/")
    return normalise(segments[0], segments[1], segments[2] if len(segments) == 3 else "")


def normalise(os_name: str, architecture: str, variant: str = "") -> Platform:
    architecture = architecture.lower()
    variant = variant.lower()
    if architecture in _ARCH_ALIASES:
        architecture, implied = _ARCH_ALIASES[architecture]
        variant = variant or implied
    if re.fullmatch(r"v?\d+(\.0)?", variant):  # containerd: arm "7" is v7, "v8.0" is v8
        variant = "v" + variant.removeprefix("v").split(".")[0]
    if (architecture, variant) in _DEFAULT_VARIANTS:
        # One spelling per platform: linux/arm64/v8 and linux/arm64 are one build input (and
        # one digest), as containerd treats them as one platform.
        variant = ""
    return Platform(os_name.lower(), architecture, variant)


def _match_variant(platform: Platform) -> str:
    """The variant two normalised platforms are compared by: an index entry for arm
    without one is v7 (containerd)."""
    return "v7" if platform.architecture == "arm" and not platform.variant else platform.variant


def _rank(wanted: Platform, offered: Platform) -> int | None:
    """How well ``offered`` serves ``wanted``: 0 is exact, higher is a fallback, None no match."""
    if (offered.os, offered.architecture) != (wanted.os, wanted.architecture):
        return None
    found = _match_variant(offered)
    if wanted.architecture == "arm" and _match_variant(wanted) in _ARM_PREFERENCE:
        # containerd's platforms.Only: arm/v7 also runs v6 and v5 images, in that order (and
        # arm without a variant is v7).
        acceptable = _ARM_PREFERENCE[_ARM_PREFERENCE.index(_match_variant(wanted)):]
        return acceptable.index(found) if found in acceptable else None
    return 0 if found == _match_variant(wanted) else None


def entry_platform(entry: Mapping[str, Any]) -> Platform | None:
    """The platform an index entry declares; None when it declares none or a malformed one."""
    found = entry.get("platform")
    if not isinstance(found, Mapping):
        return None
    os_name, architecture = found.get("os"), found.get("architecture")
    variant = found.get("variant") or ""
    if not (isinstance(os_name, str) and isinstance(architecture, str) and os_name
            and architecture and isinstance(variant, str)):
        return None
    return normalise(os_name, architecture, variant)


def config_platform(config: Mapping[str, Any]) -> Platform | None:
    """The platform an image config declares (os, architecture, variant at its top level);
    None when it declares none."""
    return entry_platform({"platform": config})


def serves(wanted: Platform, offered: Platform) -> bool:
    """Whether an image for ``offered`` runs where ``wanted`` is asked for, by containerd's
    rule. Without a variant ``offered`` is judged by os and architecture: many image configs
    name none, even for 32-bit arm."""
    if not offered.variant:
        return (offered.os, offered.architecture) == (wanted.os, wanted.architecture)
    return _rank(wanted, offered) is not None


def pick(entries: Sequence[Mapping[str, Any]], wanted: Platform) -> tuple[int, Platform] | None:
    """The position of the entry that serves ``wanted`` best and the platform it declares: an
    exact variant before any fallback wherever each is listed; among equals the first (as
    containerd). None when no entry serves it."""
    best: tuple[int, int, Platform] | None = None
    for position, entry in enumerate(entries):
        offered = entry_platform(entry)
        if offered is None or (offered.os, offered.architecture) == _ATTESTATION:
            continue
        rank = _rank(wanted, offered)
        if rank is not None and (best is None or rank < best[0]):
            best = (rank, position, offered)
    return None if best is None else (best[1], best[2])


def offered(entries: Sequence[Mapping[str, Any]]) -> str:
    """The platforms an index offers (attestations left out), at most SHOWN_OFFERS, for an
    error that lets the user choose one."""
    names: list[str] = []
    for entry in entries:
        found = entry_platform(entry)
        if found is not None and (found.os, found.architecture) != _ATTESTATION \
                and str(found) not in names:
            names.append(str(found))
    if not names:
        return "none (its entries name no platform)"
    shown = ", ".join(names[:SHOWN_OFFERS])
    return shown + (f" and {len(names) - SHOWN_OFFERS} more" if len(names) > SHOWN_OFFERS
                    else "")


def resolved(wanted: Platform, chosen: Platform) -> Platform:
    """The platform the image is for: ``wanted``, with the variant of the base entry
    ``chosen`` when ``wanted`` left it open (arm without a variant got v6, say)."""
    if wanted.variant_open() and _match_variant(chosen) in _ARM_PREFERENCE:
        return Platform(wanted.os, wanted.architecture, _match_variant(chosen))
    return wanted
