"""The GitOps repository's own ``.gitlab-ci.yml`` gate, as data. Pure.

On merge requests that touch the manifests: validate every overlay (Kustomize + schemas), run
the policy on each overlay the change can affect (and the team GPU quota on the whole tree),
verify the signature of every pinned image; optionally,
once merged into the protected default branch, sign keylessly. Each job's ``rules`` make it
run only when relevant. `promoter gitops init` writes it (core.gitops_scaffold); promoter's
own .gitlab-ci.yml runs the same jobs.
"""

from __future__ import annotations

from typing import Any

# Keyless signing runs after review: on a push to the protected default branch (the merge),
# never on a merge request, whose author would otherwise get anything signed under the
# project's CI identity (and logged in Rekor) before approval. Admission authorities should
# pin the certificate identity to that branch's ref (…/.gitlab-ci.yml@refs/heads/main).
AFTER_MERGE = ('$CI_PIPELINE_SOURCE == "push" && $CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH '
               '&& $CI_COMMIT_REF_PROTECTED == "true"')


def gitops_ci(manifests_dir: str, ci_image: str, promoter_package: str) -> dict[str, Any]:
    """The GitOps repository's merge-request gate: the same jobs as promoter's own
    .gitlab-ci.yml (see README: "The CI gate")."""
    tree = manifests_dir.strip("/")
    changes = [f"{tree}/**/*"]
    on_mr = '$CI_PIPELINE_SOURCE == "merge_request_event"'
    return {
        "stages": ["manifests"],
        "default": {"image": ci_image},
        ".gitops-tools": {
            "stage": "manifests",
            "variables": {"KUBECTL_VERSION": "v1.32.0"},
            "before_script": [KUBECTL_INSTALL, "command -v promoter >/dev/null || "
                                               f"pip install -q {promoter_package}"],
        },
        "manifests:validate": {
            "extends": ".gitops-tools",
            "script": [f"promoter validate {tree}/"],
            "rules": [{"if": on_mr, "changes": changes}],
        },
        "manifests:policy": {
            "extends": ".gitops-tools",
            # The MR's diff base must be in the checkout, and GitLab clones only the last 20
            # commits by default: a longer MR would fail the gate. A full clone reaches it.
            "variables": {"GIT_DEPTH": "0"},
            "script": policy_script(tree),
            "rules": [{"if": f"{on_mr} && $PROMOTER_CONFIG", "changes": changes}],
        },
        "manifests:signatures": {
            "extends": ".gitops-tools",
            "script": verify_images_script(tree),
            "rules": [{"if": f"{on_mr} && $COSIGN_PUBLIC_KEY", "changes": changes}],
        },
        "manifests:keyless-sign": {
            "extends": ".gitops-tools",
            "id_tokens": {"SIGSTORE_ID_TOKEN": {"aud": "sigstore"}},
            "script": [f"promoter gitops images {tree}/ > pinned-images.txt",
                       'while read -r ref; do promoter image sign "$ref" --keyless </dev/null; '
                       "done < pinned-images.txt"],
            "rules": [{"if": f'{AFTER_MERGE} && $PROMOTER_KEYLESS_SIGNING == "true"',
                       "changes": changes}],
        },
    }


def policy_script(tree: str) -> list[str]:
    """`promoter gitops policy` over the whole tree the merge request leaves (PROMOTER_CONFIG:
    a File variable holding promoter.yaml): it judges the overlays the MR's changes can affect
    (an overlay's files at any depth, its model's base/, anything shared: every overlay), and
    each team's GPU quota on the sum over every overlay, which no per-overlay check can see."""
    return [f'promoter gitops policy {tree}/ --changed-from "$CI_MERGE_REQUEST_DIFF_BASE_SHA" '
            "</dev/null"]


def verify_images_script(tree: str) -> list[str]:
    """Every image the built overlays under ``tree`` pull must carry a signature by
    $COSIGN_PUBLIC_KEY (a file path or the PEM text of a CI variable of type File).
    `promoter gitops images` lists them, and exits non-zero (failing the job) when one is not
    pinned by digest; the server images PROMOTER_CONFIG's runtime_images pins are exempt."""
    return [f"promoter gitops images {tree}/ > pinned-images.txt", "cat pinned-images.txt",
            'while read -r ref; do promoter image verify "$ref" --key "$COSIGN_PUBLIC_KEY" '
            "</dev/null; done < pinned-images.txt"]


# kubectl (with kustomize v5) on a python image, pinned and checksummed: the one tool
# `promoter validate` needs that python:3.11-bookworm lacks. Skipped when kubectl is on PATH.
_KUBECTL_URL = "https://dl.k8s.io/release/${KUBECTL_VERSION}/bin/linux/amd64/kubectl"
KUBECTL_INSTALL = (
    "if ! command -v kubectl >/dev/null; then\n"
    f'  curl -fsSLo /usr/local/bin/kubectl "{_KUBECTL_URL}"\n'
    f'  echo "$(curl -fsSL "{_KUBECTL_URL}.sha256")  /usr/local/bin/kubectl" | sha256sum -c -\n'
    "  chmod +x /usr/local/bin/kubectl\n"
    "fi\n")
