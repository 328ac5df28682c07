from __future__ import annotations

from promoter.core.documents import dig

DOC = {"spec": {"containers": [{"image": "a"}, {"image": "b"}], "replicas": 3}}


def test_a_path_that_leads_somewhere_reads_its_value() -> None:
    assert dig(DOC, "spec", "containers", 1, "image") == "b"
    assert dig(DOC, "spec", "replicas") == 3


def test_a_path_that_leaves_the_document_reads_none() -> None:
    assert dig(DOC, "spec", "containers", 2) is None        # past the list's end
    assert dig(DOC, "spec", "containers", -1) is None       # no counting from the end
    assert dig(DOC, "spec", "replicas", "x") is None        # into a number
    assert dig(DOC, "spec", "containers", "image") is None  # a key into a list
    assert dig(None, "spec") is None
