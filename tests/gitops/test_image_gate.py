"""`promoter gitops images`: the CI gate judges every image the built overlays would pull.

The golden trees (tests/golden/, rendered by promoter for every runtime) are built with real
Kustomize; the gate must find the signed artifact wherever the runtime puts it (Kustomize
``images:``, KServe ``storageUri: oci://…``, an image volume in an overlay patch) and refuse
any reference a tag could move.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from promoter.core.image_refs import image_uses
from tests.conftest import ROOT, cli_runner, requires_kubectl

GOLDEN = ROOT / "tests/golden"
SERVING_IMAGE = "registry.example.com/models/x@sha256:" + "ab" * 32
MODELCAR = "registry.example.com/models/x-modelcar@sha256:" + "cd" * 32
VLLM = "docker.io/vllm/vllm-openai"
TRITON = "nvcr.io/nvidia/tritonserver"


def _images(capsys: pytest.CaptureFixture[str], tree: Path,
            config: Path | None = None) -> tuple[int, str, str]:
    args = ["--config", str(config)] if config else []
    return cli_runner(capsys)(*args, "gitops", "images", str(tree))


def _copy(golden: str, tmp_path: Path) -> Path:
    tree = tmp_path / golden
    shutil.copytree(GOLDEN / golden, tree)
    return tree


def _pin_server_image(tree: Path, repository: str, digest: str) -> str:
    """What `runtime_images.<runtime>` makes promoter render: the server image by digest."""
    (deployment,) = tree.glob("*/base/deployment.yaml")
    text = deployment.read_text()
    pinned = f"{repository}@sha256:{digest * 64}"
    start = text.index(f'image: "{repository}:') + len("image: ")
    end = text.index("\n", start)
    deployment.write_text(text[:start] + f'"{pinned}"' + text[end:])
    return pinned


@requires_kubectl
@pytest.mark.parametrize(("golden", "reference"), [
    ("fraud-detector.production", SERVING_IMAGE),    # deployment: Kustomize images: digest
    ("fraud-detector.staging", SERVING_IMAGE),
    ("llm-chat.production", MODELCAR),               # vllm on KServe: storageUri oci://
    ("vision-segmenter.production", MODELCAR),       # kserve: storageUri oci://
    ("vision-segmenter.staging", MODELCAR),
])
def test_the_signed_artifact_of_each_runtime_is_listed(
        golden: str, reference: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _images(capsys, GOLDEN / golden)
    assert code == 0, err
    assert out.splitlines() == [reference]


@requires_kubectl
@pytest.mark.parametrize(("golden", "runtime", "repository"), [
    ("code-assistant.production", "vllm", VLLM),  # plain vLLM Deployment: image volume modelcar
    ("ad-ranker.production", "triton", TRITON),   # Triton Deployment: image volume modelcar
])
def test_image_volume_modelcars_are_listed_and_configured_server_images_exempt(
        golden: str, runtime: str, repository: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    tree = _copy(golden, tmp_path)
    server = _pin_server_image(tree, repository, "e")
    code, out, err = _images(capsys, tree)
    assert code == 0, err
    # Without runtime_images in promoter.yaml, a pinned server image is verified like any other.
    assert out.splitlines() == sorted([MODELCAR, server])
    config = tmp_path / "promoter.yaml"
    config.write_text(f"runtime_images: {{{runtime}: '{server}'}}\n")
    code, out, err = _images(capsys, tree, config)
    assert code == 0, err
    assert out.splitlines() == [MODELCAR]
    assert f"not verified (runtime_images pins it): {server}" in err
    # Another digest of the same server (swapped in a merge request) is not exempt.
    _pin_server_image(_copy(golden, tmp_path / "swapped"), repository, "f")
    code, out, err = _images(capsys, tmp_path / "swapped" / golden, config)
    assert code == 0, err
    assert f"{repository}@sha256:{'f' * 64}" in out.splitlines()


@requires_kubectl
@pytest.mark.parametrize(("golden", "reference"), [
    ("code-assistant.production", f"{VLLM}:v0.7.2"),
    ("ad-ranker.production", f"{TRITON}:26.07-py3"),
])
def test_a_server_image_by_tag_fails_the_gate(golden: str, reference: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _images(capsys, GOLDEN / golden)
    assert code == 1
    assert out == ""
    assert (f"spec.template.spec.containers[0].image: {reference!r} is not pinned by digest"
            in err)
    assert "runtime_images" in err


@requires_kubectl
def test_a_newtag_image_fails_the_gate_naming_overlay_object_and_reference(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tree = _copy("fraud-detector.production", tmp_path)
    shutil.copytree(GOLDEN / "llm-chat.production" / "llm-chat", tree / "llm-chat")
    kustomization = tree / "fraud-detector/overlays/production/kustomization.yaml"
    text = kustomization.read_text()
    kustomization.write_text(text.replace(
        "newName: registry.example.com/models/x\n"
        '  digest: "sha256:' + "ab" * 32 + '"',
        "newName: docker.io/attacker/x\n  newTag: latest"))
    assert "attacker" in kustomization.read_text()
    code, out, err = _images(capsys, tree)
    assert code == 1
    assert out == ""      # nothing to verify is printed when the gate refuses the tree
    assert (f"{tree}/fraud-detector/overlays/production: Deployment/fraud-detector "
            "spec.template.spec.containers[0].image: 'docker.io/attacker/x:latest' is not "
            "pinned by digest") in " ".join(err.split())
    assert "the image gate refuses" in err


@requires_kubectl
def test_a_plain_tagged_container_added_to_a_modelcar_overlay_fails_the_gate(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tree = _copy("vision-segmenter.production", tmp_path)
    overlay = tree / "vision-segmenter/overlays/production"
    (overlay / "sidecar.yaml").write_text(
        "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: warm}\nspec:\n"
        "  schedule: '@hourly'\n  jobTemplate:\n    spec:\n      template:\n        spec:\n"
        "          restartPolicy: Never\n"
        "          containers: [{name: warm, image: 'x:latest'}]\n")
    kustomization = overlay / "kustomization.yaml"
    kustomization.write_text(kustomization.read_text().replace(
        "resources:\n- ../../base\n", "resources:\n- ../../base\n- sidecar.yaml\n"))
    code, _, err = _images(capsys, tree)
    assert code == 1
    assert ("CronJob/warm spec.jobTemplate.spec.template.spec.containers[0].image: "
            "'x:latest' is not pinned by digest") in " ".join(err.split())


@requires_kubectl
def test_an_overlay_that_does_not_build_fails_the_gate(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tree = _copy("vision-segmenter.production", tmp_path)
    shutil.rmtree(tree / "vision-segmenter/base")
    code, out, err = _images(capsys, tree)
    assert code == 1 and out == ""
    assert "vision-segmenter/overlays/production: kustomize build" in err


def test_every_place_a_pod_or_kserve_object_names_an_image_is_found() -> None:
    pinned = "r.example/a@sha256:" + "0" * 64
    documents = [
        {"kind": "StatefulSet", "metadata": {"name": "s", "annotations": {"image": "ignored"}},
         "spec": {"template": {"spec": {
             "initContainers": [{"name": "i", "image": "init:1"}],
             "containers": [{"name": "c", "image": pinned}],
             "ephemeralContainers": [{"name": "e", "image": "debug"}],
             "volumes": [{"name": "m", "image": {"reference": "vol:2", "pullPolicy": "Always"}},
                         {"name": "d", "emptyDir": {}}]}}}},
        {"kind": "InferenceService", "metadata": {"name": "isvc"},
         "spec": {"predictor": {"model": {"storageUri": "oci://car@sha256:" + "1" * 64},
                                "containers": [{"name": "p", "image": "pred:3"}]},
                  "transformer": {"containers": [{"name": "t", "image": "tr:4"}]}}},
        {"kind": "InferenceService", "metadata": {"name": "s3"},
         "spec": {"predictor": {"sklearn": {"storageUri": "s3://bucket/model"}}}},
        {"kind": "ServingRuntime", "metadata": {"name": "rt"},
         "spec": {"containers": [{"name": "kserve-container", "image": "rt:5"}]}},
        {"kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"image": "not-run"}},
    ]
    found = [(use.obj, use.field, use.reference, use.pinned) for use in image_uses(documents)]
    assert found == [
        ("StatefulSet/s", "spec.template.spec.initContainers[0].image", "init:1", False),
        ("StatefulSet/s", "spec.template.spec.containers[0].image", pinned, True),
        ("StatefulSet/s", "spec.template.spec.ephemeralContainers[0].image", "debug", False),
        ("StatefulSet/s", "spec.template.spec.volumes[0].image.reference", "vol:2", False),
        ("InferenceService/isvc", "spec.predictor.model.storageUri",
         "car@sha256:" + "1" * 64, True),
        ("InferenceService/isvc", "spec.predictor.containers[0].image", "pred:3", False),
        ("InferenceService/isvc", "spec.transformer.containers[0].image", "tr:4", False),
        ("InferenceService/s3", "spec.predictor.sklearn.storageUri", "s3://bucket/model", False),
        ("ServingRuntime/rt", "spec.containers[0].image", "rt:5", False),
    ]
    assert [use.from_registry for use in image_uses(documents)].count(False) == 1


def test_each_oci_entry_of_kserve_storage_uris_is_found() -> None:
    """KServe's list form (spec.predictor.model.storageUris[].uri, with a mountPath each):
    a tagged modelcar in any entry must fail the gate like one in storageUri."""
    pinned = "car@sha256:" + "2" * 64
    documents = [{"kind": "InferenceService", "metadata": {"name": "multi"},
                  "spec": {"predictor": {"model": {"storageUris": [
                      {"uri": "oci://" + pinned, "mountPath": "/mnt/models"},
                      {"uri": "s3://bucket/adapter", "mountPath": "/mnt/adapter"},
                      {"uri": "oci://registry.example/lora:latest", "mountPath": "/mnt/lora"},
                  ]}}}}]
    found = [(use.field, use.reference, use.pinned, use.from_registry)
             for use in image_uses(documents)]
    assert found == [
        ("spec.predictor.model.storageUris[0].uri", pinned, True, True),
        ("spec.predictor.model.storageUris[1].uri", "s3://bucket/adapter", False, False),
        ("spec.predictor.model.storageUris[2].uri", "registry.example/lora:latest", False, True),
    ]


@pytest.mark.parametrize("uri", ["s3://attacker-bucket/fraud", "https://evil.example/m.tgz",
                                 "hf://someone/model", "pvc://scratch/model",
                                 "gs://b/m@sha256:" + "3" * 64])
def test_model_files_from_outside_a_registry_fail_the_gate(tmp_path: Path, uri: str) -> None:
    """An MR that points a predictor's storageUri elsewhere would have KServe download files
    nothing signed, while the signed modelcar sits unused: the gate fails, naming the field."""
    from promoter.gitops.images import gate_images

    overlay = tmp_path / "fraud" / "overlays" / "production"
    overlay.mkdir(parents=True)
    (overlay / "kustomization.yaml").write_text("resources: []\n")
    built = ("apiVersion: serving.kserve.io/v1beta1\nkind: InferenceService\n"
             "metadata: {name: fraud}\n"
             f"spec: {{predictor: {{model: {{storageUri: '{uri}'}}}}}}\n")
    gate = gate_images(tmp_path, lambda _overlay: built)
    assert gate.verify == []
    assert len(gate.problems) == 1
    assert "InferenceService/fraud spec.predictor.model.storageUri" in gate.problems[0]
    assert "outside any registry" in gate.problems[0]


SOURCE_URI = "internal.serving.kserve.io/storage-initializer-sourceuri"


@pytest.mark.parametrize(("built", "field", "says"), [
    # KServe's StorageSpec: files from the bucket a storage-config key names.
    ("apiVersion: serving.kserve.io/v1beta1\nkind: InferenceService\nmetadata: {name: fraud}\n"
     "spec: {predictor: {model: {modelFormat: {name: sklearn}, storage: {key: localMinIO, "
     "path: sklearn/model.joblib, parameters: {bucket: attacker-bucket}}}}}\n",
     "InferenceService/fraud spec.predictor.model.storage", "outside any registry"),
    # KServe's pod webhook reads the source from this annotation on any pod labelled with an
    # InferenceService: an oci:// one is injected as the modelcar, here by a movable tag.
    ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: fraud}\nspec: {template: "
     "{metadata: {labels: {serving.kserve.io/inferenceservice: fraud}, annotations: "
     f"{{{SOURCE_URI}: 'oci://evil.example.com/x:latest'}}}}, spec: {{containers: [{{name: m, "
     f"image: '{SERVING_IMAGE}'}}]}}}}}}\n",
     f"Deployment/fraud spec.template.metadata.annotations[{SOURCE_URI}]", "not pinned"),
    # An InferenceService's own annotations are copied onto its pods.
    ("apiVersion: serving.kserve.io/v1beta1\nkind: InferenceService\nmetadata: {name: fraud, "
     f"annotations: {{{SOURCE_URI}: 's3://attacker-bucket/m'}}}}\n"
     f"spec: {{predictor: {{model: {{storageUri: 'oci://{MODELCAR}'}}}}}}\n",
     f"InferenceService/fraud metadata.annotations[{SOURCE_URI}]", "outside any registry"),
], ids=["storage-spec", "pod-source-annotation", "inferenceservice-source-annotation"])
def test_model_files_named_outside_storage_uri_fail_the_gate(
        tmp_path: Path, built: str, field: str, says: str) -> None:
    """The gate read only storageUri(s): a StorageSpec or KServe's source-URI annotation made
    KServe load files or a modelcar no signature covers, and the overlay passed."""
    from promoter.gitops.images import gate_images

    overlay = tmp_path / "fraud" / "overlays" / "production"
    overlay.mkdir(parents=True)
    (overlay / "kustomization.yaml").write_text("resources: []\n")
    gate = gate_images(tmp_path, lambda _overlay: built)
    assert any(field in problem and says in problem for problem in gate.problems), gate.problems


def test_a_tag_with_capitals_before_the_digest_is_pinned() -> None:
    """Tags may hold capitals (repositories may not); the digest decides what is pulled."""
    digest = "@sha256:" + "b" * 64
    documents = [{"kind": "Pod", "metadata": {"name": "p"},
                  "spec": {"containers": [{"name": "c", "image": "r.io:5000/m:V1.2-RC" + digest},
                                          {"name": "d", "image": "R.io/M:v1" + digest}]}}]
    assert [use.pinned for use in image_uses(documents)] == [True, False]


def test_a_digest_followed_by_a_newline_is_not_pinned() -> None:
    """`$` also matches before a trailing newline: the pin must be the whole reference."""
    pinned = "r.io/x@sha256:" + "a" * 64
    documents = [{"kind": "Pod", "metadata": {"name": "p"},
                  "spec": {"containers": [{"name": "c", "image": pinned},
                                          {"name": "d", "image": pinned + "\n"}]}}]
    assert [use.pinned for use in image_uses(documents)] == [True, False]
