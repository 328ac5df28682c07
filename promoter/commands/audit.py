"""`promoter audit verify|show|live`: read the hash-chained audit trail."""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from promoter.commands._common import OUTPUT_OPTION, emit_json, state
from promoter.core.live_history import entry_time
from promoter.core.naming import DISPLAY_CONTROLS
from promoter.errors import EXIT_USER, UsageError

if TYPE_CHECKING:
    from promoter.core.audit_anchor import AnchorFinding
    from promoter.core.audit_chain import Finding
    from promoter.core.live_history import Live
    from promoter.service.audit import ChainSnapshot, Read

app = typer.Typer(help="The audit trail: verify it, show it, ask what was live when.",
                  no_args_is_help=True)
TIME_HELP = "ISO 8601 (2026-11-30T12:00:00Z) or seconds since the epoch"


def parse_time(text: str) -> float:
    """Seconds since the epoch of a time the trail can hold (and `iso` can write back): nan,
    inf, 1e20 or year 0 is a typo, not a moment to compare with or print."""
    try:
        seconds = float(text)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise UsageError(f"cannot read the time {text!r}", hint=TIME_HELP) from None
        seconds = _seconds(parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC), text)
    try:
        iso(seconds)
    except (ValueError, OverflowError, OSError):
        raise _out_of_range(text) from None
    return seconds


def _seconds(moment: datetime, text: str) -> float:
    try:
        return moment.timestamp()
    except (ValueError, OverflowError):  # 0001-01-01T00:00+01:00 is in the year 0
        raise _out_of_range(text) from None


def _out_of_range(text: str) -> UsageError:
    return UsageError(f"the time {text!r} is out of range (years 1 to 9999 UTC)",
                      hint=TIME_HELP)


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds").replace(
        "+00:00", "Z")


def _trail(ctx: typer.Context) -> Any:
    from promoter.service import composition

    return composition.audit_trail(state(ctx).settings())


VERIFY_HELP = """Check every entry's hash and link, and the recorded head; exit 1 naming the
first bad line.

With --against-git, also compare the trail with the heads anchored in the GitOps repository
(.promoter/audit-heads/<name>/<env>.json, committed with every promotion; read through the
configured git provider at --ref, default git.target_branch): each anchored entry must be in
the local trail with the same hash. A trail rewritten and re-sealed end to end passes the local
check but not this one (exit 1, naming the anchor and the entry).
"""
VERIFY_HELP = "\n\n".join(" ".join(part.split()) for part in VERIFY_HELP.split("\n\n"))


@app.command(help=VERIFY_HELP)
def verify(
    ctx: typer.Context,
    against_git: Annotated[bool, typer.Option(
        "--against-git", help="also check the heads anchored in the GitOps repository")] = False,
    ref: Annotated[str | None, typer.Option(
        "--ref", help="branch of the GitOps repository to read anchors from "
                      "(default: git.target_branch)")] = None,
    output: str = OUTPUT_OPTION,
) -> None:
    trail = _trail(ctx)
    anchors: dict[str, str] = {}
    if against_git:
        from promoter.core import audit_anchor
        from promoter.service import composition

        settings = state(ctx).settings()
        ref = ref or settings.git.target_branch
        # Before the trail is read: an anchor names an entry already in the trail when its
        # commit was made, so a trail read after the anchors holds every anchored entry.
        anchors = composition.provider(settings).files(f"{audit_anchor.ANCHOR_DIR}/", ref)
    elif ref is not None:
        raise UsageError("--ref needs --against-git")
    checked = trail.snapshot(lambda snapshot: _check(snapshot, anchors if against_git else None))
    finding, count, anchored = checked.finding, checked.entries, checked.anchored
    ok = finding is None and not anchored
    if output == "json":
        report: dict[str, Any] = {
            "ok": ok, "entries": count, "path": trail.location,
            "line": finding.line if finding else None,
            "problem": finding.problem if finding else None}
        if against_git:
            report["git"] = {"ref": ref, "anchors": len(anchors), "findings": [
                {"anchor": f.path, "seq": f.anchored.seq if f.anchored else None,
                 "problem": f.problem} for f in anchored]}
        emit_json(report)
    else:
        if finding is None:
            typer.echo(f"ok: {_verified(count, checked.unchained, trail.location)}")
        else:
            typer.echo(f"{trail.location}:{finding.line}: {finding.problem}", err=True)
        if against_git and not anchored:
            typer.echo(f"ok: {len(anchors)} audit head(s) anchored in git at {ref} match the "
                       "local trail" if anchors else
                       f"note: no audit heads anchored in git at {ref} yet")
        for item in anchored:
            typer.echo(f"{ref}:{item.path}: {item.problem}", err=True)
    if not ok:
        raise typer.Exit(EXIT_USER)


@dataclass(frozen=True)
class _Checked:
    finding: Finding | None
    entries: int
    unchained: int          # entries at the start written before the trail was chained
    anchored: list[AnchorFinding]


def _check(snapshot: ChainSnapshot, anchors: dict[str, str] | None) -> _Checked:
    """Every check of ``audit verify`` on one snapshot of the trail: read apart, an entry
    appended meanwhile would be counted, or its head found missing, though not verified."""
    from promoter.core import audit_anchor
    from promoter.core.audit_chain import unchained_prefix, verify

    return _Checked(
        finding=verify(snapshot.lines(), snapshot.head, snapshot.pending),
        entries=sum(1 for _ in snapshot.lines()),
        unchained=unchained_prefix(snapshot.lines()),
        anchored=audit_anchor.check(snapshot.lines(), anchors) if anchors is not None else [])


def _verified(count: int, unchained: int, location: str) -> str:
    """What a passing local check covered, exactly."""
    if count == 0:
        return f"{location} has no entries yet"
    chained = f"{count - unchained} chained entries in {location} link up to the recorded head"
    if unchained:
        chained += f", and bind the {unchained} unchained entries written before them"
    return chained


@app.command(help="Audit entries, oldest first, optionally filtered. Entries from the "
                  "trail's first bad line on (see `audit verify`), and entries without a "
                  "usable time (always listed, --since or not), are marked \\[unverified].")
def show(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Option("--model", "-m", help="registered model")] = None,
    env: Annotated[str | None, typer.Option("--env", "-e", help="environment")] = None,
    since: Annotated[str | None, typer.Option("--since", help=TIME_HELP)] = None,
    output: str = OUTPUT_OPTION,
) -> None:
    after = parse_time(since) if since else None
    read = _read_verified(ctx)
    entries = [entry for _, entry in read.entries]
    _refuse_unknown_environment(ctx, env, entries)
    # An entry whose time promoter never wrote (missing, NaN, infinite: a legacy or edited
    # entry) cannot be placed before or after --since: listed, never hidden, and unverified.
    selected = [(line, entry, entry_time(entry)) for line, entry in read.entries
                if (model is None or entry.get("model") == model)
                and (env is None or entry.get("env") == env)]
    selected = [(line, entry, when) for line, entry, when in selected
                if after is None or when is None or when >= after]
    if output == "json":
        emit_json([_json_entry(entry, read.verified(line) and when is not None)
                   for line, entry, when in selected])
        return
    for line, entry, when in selected:
        what = " ".join(f"{key}={inline(entry[key])}" for key in (
            "model", "version", "env", "actor", "mr_url", "url", "reason")
                        if entry.get(key) not in (None, ""))
        mark = "" if read.verified(line) and when is not None else "  [unverified]"
        shown = iso(when) if when is not None else "(no valid time)"
        typer.echo(f"{shown}  {inline(entry.get('event'))}  {what}{mark}")


def _json_entry(entry: dict[str, Any], verified: bool) -> dict[str, Any]:
    """``entry`` as `audit show --output json` lists it: strict JSON, whatever was edited into
    it. Python writes NaN and Infinity as bare words no JSON parser reads: such a number
    (its time among them) is null, and its entry unverified, as is one with no usable time."""
    shown: dict[str, Any] = _finite(entry)
    if entry_time(entry) is None:
        shown["time"] = None
    if shown != entry or not verified:
        shown["verified"] = False
    return shown


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinite number in it replaced by None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


# Line breaks (C0, C1, U+2028/9), terminal escapes and direction overrides.
_UNSHOWABLE = re.compile(f"(?:{DISPLAY_CONTROLS.pattern}|[\u2028\u2029])")


def inline(value: object) -> str:
    """``value`` on one line, as typed: a reason quoted from outside (an error body) may hold a
    newline that would show as a made-up entry of its own, or a terminal escape; those
    characters are shown escaped, as Python writes them (\\n, \\x1b, \\u2028)."""
    return _UNSHOWABLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"),
                           str(value))


@app.command(help="Which version of each model was live in an environment at a time "
                  "(default: now), replayed from merges, rollbacks and decommissions "
                  "(not from entries past the trail's first bad line).")
def live(
    ctx: typer.Context,
    env: Annotated[str, typer.Option("--env", "-e", help="environment")],
    at: Annotated[str | None, typer.Option("--at", help=TIME_HELP)] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="registered model")] = None,
    output: str = OUTPUT_OPTION,
) -> None:
    from promoter.core.live_history import live_at

    moment = parse_time(at) if at else time.time()
    read = _read_verified(ctx)
    _refuse_unknown_environment(ctx, env, [entry for _, entry in read.entries])
    # Replayed from the entries that verify only: one appended by hand past the break (a
    # forged merge) would otherwise answer "what was live" as if promoter had recorded it.
    found = live_at([entry for line, entry in read.entries if read.verified(line)], env,
                    moment, model)
    rows = [_live_row(item) for item in sorted(found.values(), key=lambda i: i.model)]
    if output == "json":
        emit_json({"env": env, "at": iso(moment), "live": rows})
        return
    if not rows:
        typer.echo(f"nothing promoter deployed was live in {env} at {iso(moment)}")
    for row in rows:
        what = f"version {row['version']}"
        if row["version"] is None:  # a head promoter did not push was merged
            what = (f"unknown (foreign head {str(row['foreign_head'])[:12]} merged in place "
                    f"of version {row['proposed_version']})")
        typer.echo(inline(f"{row['model']}  {what}  since {row['since']}"
                          + (f"  {row['mr_url']}" if row["mr_url"] else "")))


def _read_verified(ctx: typer.Context) -> Read:
    """Every readable entry of one snapshot of the trail, checked as `audit verify` checks
    it (AuditTrail.read): entries from the first bad line on are reported, never shown or
    replayed as if promoter had sealed them (a warning on stderr names the line)."""
    trail = _trail(ctx)
    found: Read = trail.read()
    if found.finding is not None:
        later = sum(1 for line, _ in found.entries if not found.verified(line))
        typer.echo(f"warning: {trail.location}:{found.finding.line}: {found.finding.problem}; "
                   f"{later} entr{'y' if later == 1 else 'ies'} from there on not verified "
                   "(promoter audit verify)", err=True)
    return found


def _refuse_unknown_environment(ctx: typer.Context, env: str | None,
                                entries: list[dict[str, Any]]) -> None:
    """Refuse an environment promoter.yaml does not name, as render, rollback and status do:
    a typo must not read as "nothing happened there". One the trail has entries for stays
    queryable, though the configuration may have dropped it since."""
    if env is not None and not any(entry.get("env") == env for entry in entries):
        state(ctx).settings().environment(env)  # UserError: unknown environment


def _live_row(item: Live) -> dict[str, Any]:
    row: dict[str, Any] = {"model": item.model, "version": item.version,
                           "since": iso(item.since), "mr_url": item.mr_url}
    if item.version is None:
        row.update(verified=False, foreign_head=item.foreign_head,
                   proposed_version=item.proposed_version)
    return row


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="audit")
