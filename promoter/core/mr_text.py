"""Merge-request title, description, bot notes and commit message — everything a reviewer reads.

Pure. Every string that comes from outside (model names, descriptions, metric and param keys
and values, policy details) goes through ``escape`` so a hostile value renders as inert text:
no links, HTML, headings, tables, mentions (@user) or GitLab references (#1, !1, ~label, ...).
Values promoter produced itself and a reviewer copies into a shell (image reference, digest,
branch, file paths) go through ``code`` instead: a code span shows them byte for byte, with
no escaping characters a copy would carry along. ``plain`` turns escaped text back into what
a terminal should show (the local provider's ``promoter mr``).
Promoter's own machine-readable markers are HTML comments, which escaped text can never forge.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from promoter.core.masking import masked_value
from promoter.core.naming import DISPLAY_CONTROLS
from promoter.ports.git import Proposal, branch_for

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~^=])")
_REFERENCE_CHARS = re.compile(r"([@#!~%$:])")  # followed by a zero-width space
_TITLE_SIGILS = re.compile(r"([@#!~%$:&])")      # ... and, unescaped in a title, "&" (epics)
_ZWSP = "\u200b"
_MAX_FIELD = 300
_MARKER = re.compile(
    r"<!-- promoter:key=([a-z0-9-]+/[a-z0-9-]+) version=([0-9]+) -->\s*\Z")
_NOTE_MARKER = re.compile(r"\A<!-- promoter-note:([a-z0-9:-]+) -->")
_ESCAPED = re.compile(r"\\([\\`*_{}\[\]()#+\-.!|~^=])")


def escape(value: object, limit: int = _MAX_FIELD) -> str:
    """``value`` as inline markdown that GitLab renders literally."""
    # no newlines: outside text never starts a block; no controls or direction overrides
    text = DISPLAY_CONTROLS.sub("", " ".join(str(value).split()))
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = _MARKDOWN_SPECIAL.sub(r"\\\1", text)
    text = text.replace("&amp;", "&amp;" + _ZWSP)  # &123 is an epic reference
    text = re.sub(r"(?i)(www)(\\\.)", "\\1" + _ZWSP + "\\2", text)  # www.x autolinks in GFM
    return _REFERENCE_CHARS.sub(lambda m: m.group(1) + _ZWSP, text)


def inert_line(value: object, limit: int | None = None) -> str:
    """``value`` as one line of text that GitLab shows literally where it renders no markdown
    (titles, commit messages), at most ``limit`` characters: no backslashes or HTML entities,
    which such text would show as typed, but no mentions, references or autolinks either (a
    zero-width space after each sigil and each ":"): GitLab links ``@user``, ``#1`` or
    ``&7`` in a title, and a commit message's "Closes #1" closes that issue on merge.
    Without ``limit``, whole."""
    text = _TITLE_SIGILS.sub(lambda m: m.group(1) + _ZWSP,
                             DISPLAY_CONTROLS.sub("", " ".join(str(value).split())))
    # Capped last, so the limit bounds what is sent (GitLab refuses a title over 255).
    return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"


def code(value: object, limit: int = _MAX_FIELD) -> str:
    """``value`` as an inline code span: shown and copied exactly, never rendered as markdown.

    For promoter's own values (digests, image references, branches, paths). The fence is one
    backtick longer than the longest backtick run inside, so no value can close it early.
    """
    text = DISPLAY_CONTROLS.sub("", " ".join(str(value).split()))
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def plain(text: str) -> str:
    """Text made by ``escape`` as a terminal should show it: no backslashes, entities or
    zero-width spaces, and no control characters (a hostile name cannot drive the terminal)."""
    text = _ESCAPED.sub(r"\1", text.replace(_ZWSP, ""))
    return DISPLAY_CONTROLS.sub("", html.unescape(text))


def safe_url(url: str | None) -> str | None:
    """An http(s) URL fit for ``[text](url)``, or None when it is not one. A URL with
    ``user:password@`` is not: MR text is read by everyone who can see the project."""
    if not url or not re.fullmatch(r"https?://[^\s<>\"'`\\]+", url):
        return None
    if "@" in re.split(r"[/?#]", url.split("://", 1)[1], maxsplit=1)[0]:
        return None
    return url.replace("(", "%28").replace(")", "%29")


@dataclass(frozen=True)
class PolicyResult:
    rule: str
    passed: bool
    detail: str = ""


@dataclass(frozen=True)
class MrFacts:
    model: str
    version: str
    env: str
    name: str
    team: str | None = None
    run_id: str | None = None
    run_url: str | None = None
    run_doubt: str | None = None           # why the version's named run is not its origin
    metrics: Mapping[str, object] = field(default_factory=dict)
    params: Mapping[str, object] = field(default_factory=dict)
    image_ref: str | None = None
    image_digest: str | None = None
    signature: str | None = None           # e.g. "signed", "verified", "unsigned"
    policy: Sequence[PolicyResult] = ()
    approvals_required: int = 0
    auto_merge: bool = False
    # A base change reaching other environments (core.shared_base): who, and which files.
    affected_envs: Sequence[str] = ()
    shared_base_paths: Sequence[str] = ()


# A title's model part: with the rest of the title and promoter's " - superseded", within
# GitLab's 255 characters.
TITLE_MODEL_LIMIT = 120


def title(facts: MrFacts) -> str:
    return (f"Promote {inert_line(facts.model, TITLE_MODEL_LIMIT)} version {facts.version} "
            f"to {facts.env}")


TEAM_LABEL = "team::"   # scoped, as env:: is: one per merge request


# Every label promoter puts on its MRs (promotions here; decommission, GC, forecast,
# rightsize and `gitops init` add theirs): the ones a re-proposal may add or take away.
# Any other label on an MR is a person's, kept as it is.
_PROMOTER_LABELS = frozenset({"promoter", "shared-base", "decommission", "gc", "scaling",
                              "rightsize", "gitops"})
_PROMOTER_LABEL_PREFIXES = ("env::", TEAM_LABEL, "affects:")


def promoter_label(label: str) -> bool:
    """Whether ``label`` is one promoter sets (and so may remove when it no longer applies)."""
    return label in _PROMOTER_LABELS or label.startswith(_PROMOTER_LABEL_PREFIXES)


def labels(env: str, team: str | None, affected_envs: Sequence[str] = ()) -> tuple[str, ...]:
    """The MR's labels. Environments a shared-base change also reaches get ``affects:<env>``:
    ``env::`` is a scoped label, of which GitLab keeps only one per merge request."""
    found = ["promoter", f"env::{env}"]
    if team:
        found.append(f"{TEAM_LABEL}{team}")
    if affected_envs:
        found += ["shared-base", *(f"affects:{other}" for other in affected_envs)]
    return tuple(found)


def description(facts: MrFacts) -> str:
    lines = [
        f"## {escape(facts.model, 120)} version {facts.version} → {facts.env}", "",
        f"- **Model:** {escape(facts.model)} (deployment {code(facts.name)})",
        f"- **Version:** {facts.version}",
        f"- **Environment:** {facts.env}",
        f"- **Branch:** {code(branch_for(facts.name, facts.env))}",
        f"- **MLflow run:** {_run_link(facts)}",
        f"- **Required approvals:** {facts.approvals_required}",
        f"- **Auto-merge:** {'when the pipeline passes' if facts.auto_merge else 'no'}",
    ]
    if facts.team:
        lines.append(f"- **Team:** {escape(facts.team)}")
    if facts.affected_envs:
        lines += ["", "### Other environments this changes", "", *_shared_base_lines(facts)]
    lines += ["", "### Image", "", *_image_lines(facts)]
    lines += ["", "### Metrics", "", *_table(facts.metrics, "metric")]
    lines += ["", "### Parameters", "", *_table(facts.params, "parameter")]
    lines += ["", "### Policy", "", *_policy_lines(facts.policy)]
    return "\n".join(lines) + "\n"


def _run_link(facts: MrFacts) -> str:
    if facts.run_doubt:
        return f"not established: {escape(facts.run_doubt, 2 * _MAX_FIELD)}"
    label = escape(facts.run_id, 64) if facts.run_id else "run"
    url = safe_url(facts.run_url)
    return f"[{label}]({url})" if url else (label if facts.run_id else "not recorded")


def _shared_base_lines(facts: MrFacts) -> list[str]:
    """Said plainly: merging this changes what the other environments run, unsoaked."""
    others = ", ".join(f"**{escape(env, 63)}**" for env in facts.affected_envs)
    return [f"This promotion changes the shared base of deployment {code(facts.name)}, which "
            f"the overlays of {others} build on: once merged, they run the new base too, "
            f"without this version having been promoted there. It is therefore reviewed as a "
            f"change of each of them: it needs the approvals of the strictest "
            f"({facts.approvals_required}) and merges automatically only if all of them allow "
            "it.", "",
            f"- **Also changes:** {', '.join(escape(env, 63) for env in facts.affected_envs)}",
            "- **Base files changed:**",
            *(f"  - {code(path, 200)}" for path in facts.shared_base_paths)]


def _image_lines(facts: MrFacts) -> list[str]:
    if not facts.image_ref:
        return ["- no image recorded"]
    digest = code(facts.image_digest, 100) if facts.image_digest else "not resolved"
    return [f"- **Reference:** {code(facts.image_ref)}",
            f"- **Digest:** {digest}",
            f"- **Signature:** {escape(facts.signature or 'unknown', 200)}"]


# GitLab refuses an MR description over 1,048,576 characters, and a run may log thousands of
# parameters (autolog, sweeps): each table shows its first rows (by name) and says how many
# more the run holds. A cell is at most 80 characters before escaping (6 after, "&amp;" and a
# zero-width space per "&"), so two full tables stay near 200,000 characters.
GITLAB_DESCRIPTION_LIMIT = 1_048_576
MAX_TABLE_ROWS = 100


def _table(values: Mapping[str, object], what: str) -> list[str]:
    if not values:
        return [f"no {what}s logged"]
    rows = [f"| {what} | value |", "|---|---|"]
    names = sorted(values)
    for key in names[:MAX_TABLE_ROWS]:
        value = values[key]
        # MR text is read by everyone who can see the project; parameters (autolog's among
        # them) can be connection strings or tokens.
        shown = f"{value:.6g}" if isinstance(value, float) else masked_value(key, str(value))
        rows.append(f"| {escape(key, 80)} | {escape(shown, 80)} |")
    if len(names) > MAX_TABLE_ROWS:
        rows += ["", f"… and {len(names) - MAX_TABLE_ROWS} more {what}s (see the MLflow run)"]
    return rows


def changes_section(grouped: Mapping[str, Sequence[str]]) -> str:
    """The "What changes" section; the provider appends it from the actual diff."""
    return "\n".join(["### What changes", "", *_change_lines(grouped)]) + "\n"


def _change_lines(grouped: Mapping[str, Sequence[str]]) -> list[str]:
    lines = [f"- {kind}: {len(paths)} file(s)" for kind, paths in grouped.items() if paths]
    for kind, paths in grouped.items():
        lines += [f"  - {kind} {code(path, 200)}" for path in paths]
    return lines or ["no file changes"]


def _policy_lines(results: Sequence[PolicyResult]) -> list[str]:
    if not results:
        return ["no policy rules evaluated"]
    return [f"- {'pass' if r.passed else 'FAIL'}: {escape(r.rule, 80)}"
            + (f" — {escape(r.detail)}" if r.detail else "") for r in results]


# --- markers promoter reads back --------------------------------------------------------

def with_marker(text: str, name: str, env: str, version: str) -> str:
    """The description plus promoter's marker, which records the proposed version."""
    return f"{text.rstrip()}\n\n<!-- promoter:key={name}/{env} version={version} -->\n"


def marker_version(text: str | None) -> str | None:
    match = _MARKER.search(text or "")
    return match.group(2) if match else None


def note_body(heading: str, body: str) -> str:
    """A bot comment: a fixed, machine-findable first line, then the heading and text."""
    slug = re.sub(r"[^a-z0-9:-]+", "-", heading.lower()).strip("-")
    return f"<!-- promoter-note:{slug} -->\n**{heading}**\n\n{body}\n"


FOREIGN_HEAD_NOTE = "promoter: merged head not verified"


def foreign_head_text(env: str, head_sha: str | None, pushed_sha: str,
                      version: str | None) -> str:
    """The note on an MR merged with a head someone else pushed: what promoter did not do."""
    what = f"version {escape(version, 40)}" if version else "this merge request's version"
    return (f"This merge request was merged with head {code(head_sha or 'unknown', 64)}, "
            f"which is not the commit promoter pushed ({code(pushed_sha, 64)}). promoter did "
            "not check that head against policy, nor build or sign what it deploys, so it "
            f"does not record {what} as live in {escape(env, 63)}: MLflow says "
            f"{code('merged_unverified')} and the audit trail {code('mr.merge_foreign')}. "
            "Promote the version again to have a checked one proposed on top of the target "
            "branch.")


def note_slug(body: str) -> str | None:
    match = _NOTE_MARKER.match(body or "")
    return match.group(1) if match else None


def commit_message(proposal: Proposal) -> str:
    model = _model_in_message(proposal.model)
    return (f"Promote {model} version {proposal.version} to {proposal.env}\n\n"
            f"Promoter-Key: {proposal.name}/{proposal.env}\n"
            f"Promoter-Model: {model}\n"
            f"Promoter-Version: {proposal.version}\n")


def _model_in_message(model: str) -> str:
    """The model's name as a commit message carries it: whole (the trailer identifies the
    model), yet inert, since GitLab reads a merged commit's message for "Closes #1"."""
    return inert_line(model)


def _one_line(text: str) -> str:
    return DISPLAY_CONTROLS.sub("", " ".join(text.split()))


def proposed_for_another_model(message: str, proposal: Proposal) -> str | None:
    """The registered model a promoter commit of this key proposes, when it is not
    ``proposal``'s: two models whose names derive the same deployment name, promoted for the
    first time at once, would otherwise take over each other's branch. None for commits
    written before the trailer existed. Commits written before the name was made inert carry
    it as it was."""
    found = re.search(r"^Promoter-Model: (.*)$", message, re.MULTILINE)
    if found is None or found.group(1) in (_model_in_message(proposal.model),
                                           _one_line(proposal.model)):
        return None
    return found.group(1)


def is_promoter_message(message: str, name: str, env: str) -> bool:
    return re.search(rf"^Promoter-Key: {re.escape(name)}/{re.escape(env)}$", message,
                     re.MULTILINE) is not None
