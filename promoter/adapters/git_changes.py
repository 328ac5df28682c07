"""The files a git checkout changed since a revision (`gitops policy --changed-from`): the
GitOps repository CI checked out, read with the `git` command line."""

from __future__ import annotations

import subprocess
from pathlib import Path

from promoter.errors import UserError


def changed_since(base: str) -> list[Path]:
    """Absolute paths of the files changed (added, modified, deleted, renamed from or to)
    between ``base`` and HEAD of the git repository around the working directory."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True,
                                  check=True, timeout=120).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            detail = getattr(exc, "stderr", "") or str(exc)
            raise UserError(f"cannot list the files changed since {base!r}: {detail.strip()}",
                            hint=_hint()) from None

    top = Path(git("rev-parse", "--show-toplevel").strip())
    # --no-renames: a rename is its old path deleted and its new path added; both count.
    names = git("diff", "--name-only", "--no-renames", "-z", base, "HEAD", "--")
    return [top / name for name in names.split("\0") if name]


def _hint() -> str:
    hint = ("run inside the GitOps repository's checkout and give a revision it has (in CI: "
            "$CI_MERGE_REQUEST_DIFF_BASE_SHA)")
    # GitLab clones the last 20 commits by default (GIT_DEPTH): a merge request with more
    # commits than that leaves its base out of the checkout, which reads as "bad object".
    try:
        shallow = subprocess.run(["git", "rev-parse", "--is-shallow-repository"],
                                 capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return hint
    if shallow == "true":
        return (hint + "; this checkout is shallow and may not reach it: set GIT_DEPTH: \"0\" "
                "on the job (promoter's manifests:policy job does)")
    return hint
