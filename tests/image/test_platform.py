"""Choosing a base image's platform as containerd does: normalised names, variants, order."""

from __future__ import annotations

from typing import Any

import pytest

from promoter.errors import UserError
from promoter.image.config import image_config
from promoter.image.dependencies import pip_platforms
from promoter.image.platform import (
    Platform,
    config_platform,
    offered,
    parse_platform,
    pick,
    resolved,
    serves,
)


def _index(*platforms: str) -> list[dict[str, Any]]:
    entries = []
    for number, text in enumerate(platforms):
        os_name, architecture, *variant = text.split("/")
        platform = {"os": os_name, "architecture": architecture}
        if variant:
            platform["variant"] = variant[0]
        entries.append({"digest": f"sha256:{number:064x}", "platform": platform})
    return entries


def _picked(wanted: str, *platforms: str) -> str | None:
    found = pick(_index(*platforms), parse_platform(wanted))
    return None if found is None else platforms[found[0]] + f" #{found[0]}"


@pytest.mark.parametrize(("text", "expected"), [
    ("linux/amd64", Platform("linux", "amd64")),
    ("linux/arm64/v8", Platform("linux", "arm64")),    # the default variant: one spelling
    ("linux/arm64/8.0", Platform("linux", "arm64")),
    ("linux/amd64/v1", Platform("linux", "amd64")),
    ("linux/amd64/v3", Platform("linux", "amd64", "v3")),
    ("linux/arm/v7", Platform("linux", "arm", "v7")),
    ("linux/arm/7", Platform("linux", "arm", "v7")),
    ("linux/aarch64", Platform("linux", "arm64")),
    ("linux/x86_64", Platform("linux", "amd64")),
    ("linux/x86-64", Platform("linux", "amd64")),
    ("linux/armhf", Platform("linux", "arm", "v7")),
])
def test_platforms_are_normalised_as_containerd_does(text: str, expected: Platform) -> None:
    assert parse_platform(text) == expected


@pytest.mark.parametrize("text", ["linux", "Linux/AMD64", "linux/arm/v7/x", "linux//v7",
                                  "unknown/unknown"])
def test_a_malformed_platform_names_the_setting_and_an_example(text: str) -> None:
    with pytest.raises(UserError, match=r"image\.platform .*e\.g\. linux/amd64"):
        parse_platform(text)


def test_a_given_arm_variant_is_matched_exactly_wherever_it_is_listed() -> None:
    assert _picked("linux/arm/v7", "linux/arm/v6", "linux/arm/v7") == "linux/arm/v7 #1"
    assert _picked("linux/arm/v6", "linux/arm/v7", "linux/arm/v6") == "linux/arm/v6 #1"


def test_a_given_arm_variant_falls_back_to_older_ones_only() -> None:
    """containerd: an arm/v7 node runs v6 and v5 images (newest first), never v8's."""
    assert _picked("linux/arm/v7", "linux/arm/v5", "linux/arm/v6") == "linux/arm/v6 #1"
    assert _picked("linux/arm/v6", "linux/arm/v7", "linux/arm/v5") == "linux/arm/v5 #1"
    assert _picked("linux/arm/v5", "linux/arm/v7", "linux/arm/v6") is None


def test_arm_without_a_variant_prefers_v7_then_v6_then_v5() -> None:
    assert _picked("linux/arm", "linux/arm/v5", "linux/arm/v6", "linux/arm/v7") == \
        "linux/arm/v7 #2"
    assert _picked("linux/arm", "linux/arm/v5", "linux/arm/v6") == "linux/arm/v6 #1"
    assert _picked("linux/arm", "linux/arm/v5") == "linux/arm/v5 #0"
    # An index entry for arm without a variant is v7 (containerd normalises it so).
    assert _picked("linux/arm/v7", "linux/arm/v6", "linux/arm") == "linux/arm #1"


def test_arm64_without_a_variant_is_v8_on_either_side() -> None:
    assert _picked("linux/arm64", "linux/amd64", "linux/arm64/v8") == "linux/arm64/v8 #1"
    assert _picked("linux/arm64/v8", "linux/amd64", "linux/arm64") == "linux/arm64 #1"
    assert _picked("linux/aarch64", "linux/arm64/v8") == "linux/arm64/v8 #0"
    assert _picked("linux/arm64", "linux/arm64/v9") is None


def test_attestations_are_never_picked_and_equal_entries_give_the_first() -> None:
    assert _picked("linux/amd64", "unknown/unknown", "linux/amd64") == "linux/amd64 #1"
    assert pick(_index("unknown/unknown"), parse_platform("linux/amd64")) is None
    assert _picked("linux/amd64", "linux/arm64", "linux/amd64", "linux/amd64") == \
        "linux/amd64 #1"
    assert _picked("linux/amd64", "linux/amd64/v3", "linux/amd64") == "linux/amd64 #1"


def test_the_offered_platforms_are_listed_without_attestations_and_bounded() -> None:
    assert offered(_index("unknown/unknown", "linux/arm/v6", "linux/arm/v6", "linux/s390x")) \
        == "linux/arm/v6, linux/s390x"
    many = _index(*(f"linux/arch{number}" for number in range(13)))
    assert offered(many) == ", ".join(f"linux/arch{n}" for n in range(10)) + " and 3 more"


def test_an_open_arm_variant_becomes_the_one_the_base_offered() -> None:
    assert resolved(parse_platform("linux/arm"), Platform("linux", "arm", "v6")) == \
        Platform("linux", "arm", "v6")
    assert resolved(parse_platform("linux/arm64"), Platform("linux", "arm64", "v8")) == \
        Platform("linux", "arm64")


@pytest.mark.parametrize(("wanted", "config", "ok"), [
    ("linux/arm64", {"os": "linux", "architecture": "arm64", "variant": "v8"}, True),
    ("linux/arm64/v8", {"os": "linux", "architecture": "aarch64"}, True),
    ("linux/arm64", {"os": "linux", "architecture": "amd64"}, False),
    ("linux/amd64", {"os": "windows", "architecture": "amd64"}, False),
    ("linux/arm/v7", {"os": "linux", "architecture": "arm", "variant": "v6"}, True),
    ("linux/arm/v6", {"os": "linux", "architecture": "arm", "variant": "v7"}, False),
    ("linux/arm/v6", {"os": "linux", "architecture": "arm"}, True),  # many configs name none
    ("linux/arm64", {"os": "linux", "architecture": "arm64", "variant": "v9"}, False),
])
def test_a_single_image_config_serves_the_platforms_its_node_would_run(
        wanted: str, config: dict[str, str], ok: bool) -> None:
    declared = config_platform(config)
    assert declared is not None
    assert serves(parse_platform(wanted), declared) is ok


def test_the_image_config_carries_the_variant_only_when_there_is_one() -> None:
    with_variant = image_config(None, [], {}, platform=parse_platform("linux/arm/v7"),
                                with_deps=False)
    assert (with_variant["os"], with_variant["architecture"], with_variant["variant"]) == \
        ("linux", "arm", "v7")
    assert "variant" not in image_config(None, [], {}, platform=parse_platform("linux/amd64"),
                                         with_deps=False)


@pytest.mark.parametrize(("setting", "machine"), [
    ("linux/arm64", "aarch64"), ("linux/arm64/v8", "aarch64"), ("linux/aarch64", "aarch64"),
    ("linux/amd64", "x86_64"), ("linux/arm/v7", "armv7l"), ("linux/arm/v6", "armv6l"),
])
def test_wheels_are_chosen_for_the_platforms_machine(setting: str, machine: str) -> None:
    assert pip_platforms(parse_platform(setting)) == [
        f"manylinux_2_28_{machine}", f"manylinux_2_17_{machine}", f"linux_{machine}"]
