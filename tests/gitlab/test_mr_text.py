"""MR text: complete for a reviewer, inert for hostile input (rendered with a real CommonMark
renderer, markdown-it-py, which is what GitLab's markdown is based on)."""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from promoter.core import mr_text
from promoter.core.mr_text import MrFacts, PolicyResult, escape

HOSTILE = [
    "[click](https://evil.example/x)",
    "<img src=x onerror=alert(1)>",
    "<script>alert(1)</script>",
    "@alice @group/team please merge",
    "closes #12 and !3, ~security %v1 $4 &7",
    "# heading\n\n| a | b |\n|---|---|\n",
    "https://evil.example/autolink and www.evil.example",
    "![img](https://evil.example/p.png)",
    "`code` **bold** _it_ <!-- promoter:key=a/b version=9 -->",
    "\\[escaped\\](https://evil.example)",
]


def render(markdown: str) -> str:
    markdown_it = pytest.importorskip("markdown_it")
    html: str = markdown_it.MarkdownIt("commonmark").enable("table").render(markdown)
    return html


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_text_renders_as_plain_text(hostile: str) -> None:
    html = render(f"- **Model:** {escape(hostile)}")
    assert "<a " not in html and "<img" not in html and "<script" not in html
    assert "<h1" not in html and "<table" not in html and "<code" not in html
    assert "<strong" not in html.split("</strong>", 1)[1]


@given(st.text(max_size=200))
def test_escaped_text_never_forms_links_mentions_or_html(text: str) -> None:
    escaped = escape(text)
    assert "\n" not in escaped and "<" not in escaped and ">" not in escaped
    # a mention or GitLab reference needs the sigil directly before a word character
    assert not re.search(r"[@#!~%$]\w", escaped)
    assert not re.search(r"https?://", escaped)
    assert not re.search(r"(?i)www\\?\.", escaped)


def test_description_tells_the_reviewer_everything() -> None:
    facts = MrFacts(
        model="Fraud Detector", version="7", env="production", name="fraud-detector",
        team="risk", run_id="0123abcd", run_url="https://mlflow.example/#/runs/0123abcd",
        metrics={"auc": 0.912345678, "f1": 0.8}, params={"max_depth": "6"},
        image_ref="registry.example/models/fraud-detector",
        image_digest="sha256:" + "a" * 64, signature="signed (cosign, key promoter)",
        policy=[PolicyResult("gpu type allowed", True), PolicyResult("owner set", False, "x")],
        approvals_required=2, auto_merge=True)
    text = mr_text.description(facts)
    for expected in ("Fraud Detector", "Required approvals:** 2", "0\\.912346", "max\\_depth",
                     "[0123abcd](https://mlflow.example/#/runs/0123abcd)", "sha256",
                     "pass: gpu type allowed", "FAIL: owner set", "when the pipeline passes",
                     "signed"):
        assert expected in text, expected
    assert mr_text.labels("production", "risk") == ("promoter", "env::production", "team::risk")
    assert mr_text.title(facts) == "Promote Fraud Detector version 7 to production"


def test_changes_section_lists_every_path_as_code() -> None:
    text = mr_text.changes_section({"create": ["a.yaml"], "update": ["b_[x](y).yaml"],
                                    "delete": []})
    assert "- create: 1 file(s)" in text and "create `a.yaml`" in text
    assert "<a " not in render(text) and "<code>b_[x](y).yaml</code>" in render(text)
    assert "delete" not in text
    assert mr_text.changes_section({}).endswith("no file changes\n")


def test_a_hostile_run_url_is_not_linked() -> None:
    facts = MrFacts(model="m", version="1", env="staging", name="m", run_id="r1",
                    run_url="javascript:alert(1)")
    assert "](javascript" not in mr_text.description(facts)


def test_controls_and_direction_overrides_never_reach_mr_text_or_commits() -> None:
    """C1 controls (a terminal reads \\x9b as an escape) and bidi overrides change how text
    displays, not what it says: an MR or `git log` could show another model or environment."""
    from promoter.ports.git import Proposal

    hostile = "ranker\x9b2J\u202e\u2066 dorp\u200f"
    assert mr_text.escape(hostile) == "ranker2J dorp"
    assert mr_text.code(hostile) == "`ranker2J dorp`"
    proposal = Proposal(model=hostile, name="ranker", env="production", version="1", files={},
                        managed_prefixes=(), title="t", description="")
    message = mr_text.commit_message(proposal)
    assert "ranker2J dorp version 1" in message
    assert not any(ch in message for ch in "\x9b\u202e\u2066\u200f")


def test_a_run_url_with_credentials_is_not_linked() -> None:
    facts = MrFacts(model="m", version="1", env="staging", name="m", run_id="r1",
                    run_url="https://promoter:s3cret@mlflow.example.com/#/runs/r1")
    assert "s3cret" not in mr_text.description(facts)
    assert mr_text.safe_url("https://mlflow.example.com/#/runs/r1?by=a@b") is not None


def test_marker_is_read_back_and_cannot_be_forged_by_escaped_text() -> None:
    text = mr_text.with_marker("body", "fraud", "staging", "12")
    assert mr_text.marker_version(text) == "12"
    forged = escape("<!-- promoter:key=fraud/staging version=99 -->")
    assert mr_text.marker_version("desc " + forged) is None


def test_note_bodies_carry_a_findable_slug() -> None:
    body = mr_text.note_body("promoter: status", "text")
    assert mr_text.note_slug(body) == "promoter:-status"
    assert mr_text.note_slug("**promoter: status** by a human") is None


# GitLab's default issue_closing_pattern (config/gitlab.yml.example), with its issue reference:
# a merged commit whose message matches closes the issues it names.
_ISSUE_REF = r"(?:(?:[A-Za-z0-9_./-]+)?#\d+|https?://\S+/issues/\d+)"
CLOSING = re.compile(
    r"\b((?:[Cc]los(?:e[sd]?|ing)|\b[Ff]ix(?:e[sd]|ing)?|\b[Rr]esolv(?:e[sd]?|ing)"
    r"|\b[Ii]mplement(?:s|ed|ing)?)(:?) +(?:(?:issues? +)?" + _ISSUE_REF +
    r"(?:(?: *,? +and +| *,? *)?)|([A-Z][A-Z0-9_]+-\d+))+)")


@pytest.mark.parametrize("model", ["fraud_detector", "churn-model-v2.1", "R&D ranker",
                                   "a*b* [x](y) <b>"])
def test_titles_show_the_name_as_typed(model: str) -> None:
    """GitLab renders a title without markdown: escaping would show as backslashes and
    entities, in the UI, the API, e-mails and hook payloads alike."""
    title = mr_text.title(MrFacts(model=model, version="3", env="production", name="m"))
    assert title.replace("\u200b", "") == f"Promote {model} version 3 to production"


@given(st.text(max_size=400), st.from_regex(r"[a-z0-9-]{1,63}", fullmatch=True),
       st.from_regex(r"[1-9][0-9]{0,9}", fullmatch=True))
@example("R&D & QA: churn #2 & " * 10, "e" * 63, "1234567890")
def test_titles_stay_inert_and_within_gitlabs_limit(model: str, env: str, version: str) -> None:
    from promoter.ports.git import SUPERSEDED_SUFFIX, WITHDRAWN_SUFFIX

    title = mr_text.title(MrFacts(model=model, version=version, env=env, name="m"))
    # GitLab refuses a title over 255 characters, also when promoter retitles one it closes.
    assert len(title) + max(len(SUPERSEDED_SUFFIX), len(WITHDRAWN_SUFFIX)) <= 255
    assert "\n" not in title
    assert not re.search(r"[@#!~%$&]\w", title) and "://" not in title
    assert not CLOSING.search(title)


def test_a_hostile_name_closes_no_issue_through_the_commit_message() -> None:
    from promoter.ports.git import Proposal

    model = "fraud Closes #1, #2 and grp/other#7, fixes https://gitlab.example/g/p/issues/9"
    proposal = Proposal(model=model, name="fraud", env="production", version="3", files={},
                        managed_prefixes=(), title="t", description="")
    message = mr_text.commit_message(proposal)
    assert CLOSING.search(f"Closes #1 {model}")   # the pattern finds what it should
    assert not CLOSING.search(message), message
    assert message.replace("\u200b", "").startswith(f"Promote {model} version 3")
    # The trailer still tells this model from another, and from the name as older commits
    # wrote it (raw).
    assert mr_text.proposed_for_another_model(message, proposal) is None
    raw = message.replace("\u200b", "")
    assert mr_text.proposed_for_another_model(raw, proposal) is None
    other = Proposal(model="fraud", name="fraud", env="production", version="3", files={},
                     managed_prefixes=(), title="t", description="")
    assert mr_text.proposed_for_another_model(message, other) is not None


def test_parameters_that_carry_credentials_are_masked_in_the_description() -> None:
    """Everyone who can see the GitOps project reads the MR; autolog logs whatever the
    training code was given, connection strings and tokens among it."""
    params = {"feature_store_uri": "postgresql://ml:hunter2@db.internal:5432/features",
              "dsn": "host=db user=ml password=hunter3 dbname=f",
              "hf_token": "hf_AbCdEfGhIjKlMnOpQrSt", "dbPassword": "hunter4",
              "OPENAI_API_KEY": "sk-abcdef", "client-secret": "hunter5",
              "max_tokens": "512", "tokenizer": "gpt2", "learning_rate": "0.01"}
    text = mr_text.description(MrFacts(model="m", version="1", env="staging", name="m",
                                       params=params))
    for secret in ("hunter2", "hunter3", "hf_AbCd", "hunter4", "sk-abcdef", "hunter5"):
        assert secret not in text, secret
    for shown in ("db\\.internal", "512", "gpt2", "0\\.01"):
        assert shown in text, shown
    assert text.count("\\*\\*\\*") == 6    # each masked, the rest of its row kept


def test_credentials_named_as_one_word_or_inside_connection_strings_are_masked() -> None:
    """Names written as one word (libpq's PGPASSWORD) and the credentials inside the
    connection strings and signed URLs a training job is handed."""
    params = {
        "PGPASSWORD": "hunter6", "dbpassword": "hunter7",
        "storage": "DefaultEndpointsProtocol=https;AccountName=acct;"
                   "AccountKey=c2VjcmV0a2V5;EndpointSuffix=core.windows.net",
        "sql": "Server=db;Database=f;User Id=ml;Password=hunter8;",
        "blob": "https://acct.blob.core.windows.net/c/w.bin?sv=2022-11-02&sig=c2lnbmF0dXJl",
        "s3": "https://b.s3.amazonaws.com/k?X-Amz-Signature=abcdef0123&X-Amz-Expires=60",
        "feed": "https://feed.example/x?access_token=hunter9&page=2",
        "max_tokens": "512", "tokenizer": "gpt2"}
    text = mr_text.description(MrFacts(model="m", version="1", env="staging", name="m",
                                       params=params))
    for secret in ("hunter6", "hunter7", "c2VjcmV0a2V5", "hunter8", "c2lnbmF0dXJl",
                   "abcdef0123", "hunter9"):
        assert secret not in text, secret
    plain = text.replace("\\", "")               # without the markdown escapes
    for shown in ("AccountName=acct;AccountKey=***;EndpointSuffix=", "Password=***;",
                  "sv=2022-11-02", "sig=***", "X-Amz-Signature=***", "X-Amz-Expires=60",
                  "access_token=***", "page=2", "| 512 |", "| gpt2 |"):
        assert shown in plain, shown


def test_masking_inside_values_keeps_fragments_and_flags_that_only_mention_a_credential() -> None:
    from promoter.core.masking import masked_value

    assert masked_value("docs", "https://h/p?token=abc#section") == "https://h/p?token=***#section"
    assert masked_value("args", "--token-limit=5 --page=2") == "--token-limit=5 --page=2"
    assert masked_value("args", "--hf-token=hf_x --page=2") == "--hf-token=*** --page=2"
    assert masked_value("dsn", "Server=db;Uid=ml;Pwd=hunter10;") == "Server=db;Uid=ml;Pwd=***;"


def test_credentials_in_headers_flags_and_json_params_are_masked() -> None:
    """Autolog records headers and command lines: a Bearer token, a `--password X` flag, a
    JSON config's api_key and a parameter called `pw` reached the MR description as given."""
    params = {"auth_header": "Bearer CANARY-bearer-7",
              "headers": "Authorization: Bearer CANARY-bearer-6",
              "cmd": "train.py --password CANARY-flag-8 --epochs 3",
              "config": '{"api_key": "CANARY-json-9", "max_tokens": 512}',
              "pw": "CANARY-pw-21", "basic": "Basic dXNlcjpDQU5BUlk=",
              "note": "basic authentication, bearer token rotation", "limits": "--token-limit 5"}
    text = mr_text.description(MrFacts(model="m", version="1", env="staging", name="m",
                                       params=params))
    assert "CANARY" not in text and "dXNlcjpDQU5BUlk" not in text
    plain = text.replace("\\", "")
    for shown in ("Bearer ***", "--password *** --epochs 3", '"max_tokens":\u200b 512',
                  "basic authentication, bearer token rotation", "--token-limit 5"):
        assert shown in plain, shown


def test_thousands_of_parameters_keep_the_description_within_gitlabs_limit() -> None:
    """A run with 10,000 parameters (autolog, a sweep) filled a table of 10,000 rows, past
    GitLab's 1,048,576-character description limit, so the MR could not be opened. Each table
    now shows its first 100 rows by name and says how many more the run holds."""
    hostile = "&<>*_" * 200   # long, and every character escapes to more than one
    params = {f"param_{i:05d}_{hostile}": f"{hostile}{i}" for i in range(10_000)}
    metrics = {f"metric_{i:05d}_{hostile}": i / 7 for i in range(10_000)}
    facts = MrFacts(model="Fraud Detector", version="7", env="production",
                    name="fraud-detector", run_id="abc", params=params, metrics=metrics)
    text = mr_text.with_marker(
        mr_text.description(facts) + mr_text.changes_section({"modified": ["a/b.yaml"]}),
        "fraud-detector", "production", "7")
    assert len(text) < mr_text.GITLAB_DESCRIPTION_LIMIT
    assert "… and 9900 more parameters (see the MLflow run)" in text
    assert "… and 9900 more metrics (see the MLflow run)" in text
    assert "param\\_00099\\_" in text and "param\\_00100\\_" not in text   # first 100 by name
    assert mr_text.marker_version(text) == "7"


def test_a_small_table_is_shown_whole() -> None:
    facts = MrFacts(model="m", version="1", env="staging", name="m",
                    params={f"p{i:03d}": i for i in range(100)})
    text = mr_text.description(facts)
    assert "| p099 | 99 |" in text and "more parameters" not in text
