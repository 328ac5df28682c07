"""Auto-merge on GitLab: merge when the pipeline passes, only while the head is promoter's.

Right after a push GitLab checks mergeability in the background (``detailed_merge_status``
``checking``/``unchecked``) and refuses merge requests with 405 meanwhile, so a refusal in that
window is retried a few times with backoff, as Renovate does. ``sha`` guards every attempt: if
someone pushed in between, GitLab answers 409 and nothing is merged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from promoter.adapters.gitlab_calls import Caller, Refused
from promoter.errors import AuthError

_STILL_CHECKING = frozenset({"checking", "unchecked", "preparing", "approvals_syncing"})
_REFUSALS = {405: "the MR cannot be merged yet", 406: "the MR is not open",
             422: "GitLab cannot merge the branch"}


def set_auto_merge(put: Callable[..., Any], call: Caller, path: str, iid: int, sha: str,
                   merge_status: Callable[[], str | None], *, polls: int, backoff: float,
                   sleep: Callable[[float], None]) -> str | None:
    """Ask GitLab to merge ``iid`` once its pipeline passes; a warning, or None when set."""
    # auto_merge is GitLab 17.11+; older servers read merge_when_pipeline_succeeds.
    data = {"auto_merge": True, "merge_when_pipeline_succeeds": True, "sha": sha,
            "should_remove_source_branch": True}
    for attempt in range(polls):
        try:
            call.write(f"set auto-merge on !{iid}", put, path, post_data=data)
            return None
        except AuthError:  # the token just pushed: a 401 here means "not approved"
            return (f"auto-merge not set on !{iid}: GitLab answered 401 (the MR needs approval, "
                    "or the token lacks permission to merge)")
        except Refused as exc:
            if exc.status not in _REFUSALS:
                raise
            warning = f"auto-merge not set on !{iid}: {_REFUSALS[exc.status]}"
            if exc.status != 405 or attempt + 1 == polls or merge_status() not in _STILL_CHECKING:
                return warning
        sleep(backoff * 2 ** attempt)
    return None  # pragma: no cover - the loop always returns
