"""Reading back what promoter wrote into the target branch's kustomizations (core.tree_facts)."""

from __future__ import annotations

from promoter.core import tree_facts

# An overlay kustomization as an earlier `promoter forecast --propose` left it: re-serialised
# by a generic YAML dumper, which single-quotes a string that looks like a number.
REDUMPED = """\
apiVersion: kustomize.config.k8s.io/v1beta1
commonAnnotations:
  promoter.dev/gpu-claim: '6'
  promoter.dev/model-version: '12'
  promoter.dev/team: search
kind: Kustomization
"""


def test_a_single_quoted_annotation_reads_as_its_value() -> None:
    assert tree_facts.annotation(REDUMPED, tree_facts.MODEL_VERSION) == "12"
    assert tree_facts.annotation("  a: 'it''s'\n", "a") == "it's"


def test_the_team_quota_counts_a_re_serialised_overlay_claim() -> None:
    assert tree_facts.team_claims({"overlay": REDUMPED}) == {"search": 6}
