"""Auto-merge on GitLab: merge when the pipeline passes, only while the head is promoter's.

``PUT …/merge`` refuses in ways that differ across GitLab versions (lib/api/merge_requests.rb):

- 401: the token may not merge into the target branch (``can_be_merged_by?``), never "not
  approved";
- 405 (``not_allowed!``): neither mergeable now nor anything for auto-merge to wait for —
  closed, a failed pipeline, no pipeline on a mergeable MR, or (before 17) no running pipeline;
- 422 (GitLab 14 and later) / 406 (older): "Branch cannot be merged" — the mergeability check
  has not finished, the branch conflicts, or approvals are missing (before 17 even with a
  running pipeline; on 17 once the pipeline has passed, when auto-merge means "merge now");
- 409: the head moved (``sha`` guard). Up to 17.x GitLab checks it after the mergeability
  checks, so a push during the check first shows as one of the codes above.

Right after a push GitLab checks mergeability in the background (``detailed_merge_status``
``checking``/``unchecked``), so a 405/406/422 while the MR says so is retried a few times with
backoff, as Renovate does. A 409 is raised (as ``TransientError``) so the flow looks again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from promoter.adapters.gitlab_calls import Caller, Refused
from promoter.errors import AuthError

_STILL_CHECKING = frozenset({"checking", "unchecked", "preparing", "approvals_syncing"})
_CANNOT_MERGE = frozenset({405, 406, 422})
# GitLab 17 sets auto-merge on an unapproved MR while its pipeline runs (or none exists);
# asked once the pipeline passed, it tries to merge at once and refuses (422). Before 17 it
# refuses an unapproved MR either way (405 without a running pipeline, 406/422 with one).
_WHY = {"not_approved": "the MR needs its approvals first (GitLab sets auto-merge on an "
                        "unapproved MR only while its pipeline has not passed yet, and before "
                        "17 not at all): merge it once approved",
        "conflict": "the branch conflicts with the target branch",
        "need_rebase": "the branch needs a rebase"}


def set_auto_merge(put: Callable[..., Any], call: Caller, path: str, iid: int, sha: str,
                   merge_state: Callable[[], tuple[str, str | None]], *, polls: int,
                   backoff: float, sleep: Callable[[float], None]) -> str | None:
    """Ask GitLab to merge ``iid`` once its checks pass; a warning, or None when set.

    ``merge_state`` reads the MR's ``(state, detailed_merge_status)``.
    """
    # auto_merge is GitLab 17.11+; older servers read merge_when_pipeline_succeeds.
    data = {"auto_merge": True, "merge_when_pipeline_succeeds": True, "sha": sha,
            "should_remove_source_branch": True}
    for attempt in range(polls):
        try:
            call.write(f"set auto-merge on !{iid}", put, path, post_data=data)
            return None
        except AuthError:
            return (f"auto-merge not set on !{iid}: GitLab answered 401: the token may not merge "
                    "into the target branch (it needs at least Developer access, or the "
                    "branch's 'allowed to merge' role)")
        except Refused as exc:
            if exc.status not in _CANNOT_MERGE:
                raise
            state, status = merge_state()
            if state == "locked":       # GitLab is merging it right now: nothing left to ask
                return None
            if state != "opened":
                return f"auto-merge not set on !{iid}: the MR is {state}"
            if status in _STILL_CHECKING and attempt + 1 < polls:
                sleep(backoff * 2 ** attempt)
                continue
            return f"auto-merge not set on !{iid}: {_why(exc.status, status)}"
    return None  # pragma: no cover - the loop always returns


def _why(code: int, status: str | None) -> str:
    if status in _WHY:
        return _WHY[status]
    if status in _STILL_CHECKING:
        return "GitLab was still checking mergeability"
    if code == 405 and status == "mergeable":   # 17.x and older: nothing to wait for
        return ("no pipeline is running for auto-merge to wait for; merge it once reviewed, "
                "or let CI run a pipeline")
    if code == 405:
        return "the MR cannot be merged yet"
    return "GitLab cannot merge the branch"
