"""Values promoter produced are copyable from the MR; outside text stays inert; the terminal
shows titles as they are. Rendered with markdown-it-py (CommonMark, what GitLab builds on)."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from promoter.adapters import localgit
from promoter.core import mr_text
from promoter.core.mr_text import MrFacts, PolicyResult, code
from promoter.settings import load_settings
from tests.gitlab.conftest import proposal
from tests.gitlab.test_mr_text import HOSTILE, render

DIGEST = "sha256:" + "0123456789abcdef" * 4
REFERENCE = "127.0.0.1:5000/models/fraud-detector@" + DIGEST
Run = Callable[..., tuple[int, str, str]]


def facts(**changes: object) -> MrFacts:
    base = dict(model="fraud-detector", version="7", env="production", name="fraud-detector",
                run_id="0123abcd", image_ref=REFERENCE, image_digest=DIGEST, signature="signed")
    return MrFacts(**{**base, **changes})  # type: ignore[arg-type]


def code_spans(markdown: str) -> list[str]:
    return [html.unescape(span) for span in re.findall(r"<code>(.*?)</code>", render(markdown))]


def test_digest_reference_branch_and_paths_copy_byte_for_byte() -> None:
    description = mr_text.description(facts())
    description += mr_text.changes_section(
        {"create": ["manifests/fraud-detector/overlays/production/kustomization.yaml"]})
    assert f"`{DIGEST}`" in description and f"`{REFERENCE}`" in description
    spans = code_spans(description)
    assert DIGEST in spans and REFERENCE in spans
    assert "promote/fraud-detector/production" in spans
    assert "manifests/fraud-detector/overlays/production/kustomization.yaml" in spans
    digest_line = next(line for line in description.splitlines() if "Digest" in line)
    assert "\u200b" not in digest_line and "\\" not in digest_line


def test_hostile_outside_text_stays_inert_next_to_code_spans() -> None:
    for hostile in HOSTILE:
        rendered = render(mr_text.description(facts(
            model=hostile, team=hostile, metrics={hostile: hostile}, params={hostile: hostile},
            policy=[PolicyResult(hostile, False, hostile)])))
        assert "<a " not in rendered and "<img" not in rendered and "<script" not in rendered
        assert "<h1" not in rendered
        # only promoter's own values are code; the hostile text never opens a span of its own
        spans = code_spans(mr_text.description(facts(model=hostile)))
        assert spans == ["fraud-detector", "promote/fraud-detector/production", REFERENCE,
                         DIGEST]


@given(st.text(min_size=1, max_size=80).filter(lambda t: t.isprintable() and t.strip() != ""))
def test_a_code_span_holds_exactly_its_value(value: str) -> None:
    expected = " ".join(value.split())
    rendered = render(code(value))
    inner = re.fullmatch(r"<p><code>(.*)</code></p>\n", rendered, re.DOTALL)
    assert inner is not None, rendered
    assert html.unescape(inner.group(1)).strip(" ") == expected.strip(" ")


@pytest.mark.parametrize("model", ["fraud_detector_v2", "fraud*detector*", "a_b [x] #1 @me"])
def test_mr_list_and_show_print_titles_unescaped(model: str, run_cli: Run,
                                                 tmp_path: Path) -> None:
    settings = load_settings(None, {"PROMOTER_STATE_DIR": str(tmp_path / "state")})
    title = mr_text.title(facts(model=model, env="staging"))
    if "#" in model:  # the MR itself carries no live reference or mention
        assert title != f"Promote {model} version 7 to staging"
    result = localgit.from_settings(settings).propose(proposal("1", title=title))
    code_, out, _ = run_cli("mr", "show", str(result.mr_iid))
    assert code_ == 0 and out.splitlines()[0] == \
        f"!{result.mr_iid} Promote {model} version 7 to staging"
    code_, out, _ = run_cli("mr", "list")
    assert code_ == 0 and out.rstrip("\n").endswith(f"Promote {model} version 7 to staging")


def test_terminal_titles_drop_control_characters() -> None:
    shown = mr_text.plain(mr_text.title(facts(model="evil\x1b]0;pwned\x07name")))
    assert "\x1b" not in shown and "\x07" not in shown and "evil]0;pwnedname" in shown
