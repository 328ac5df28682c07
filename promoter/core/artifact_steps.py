"""The promotion's artifact steps: build (or reuse) what the runtime runs, sign it, and verify
the signature before anything is proposed. Ports only.

Each step is recorded under the job (``image``, ``signature``, ``verify``) and reused for the
same version and digest (a signature and a verification also for the same repository and the
same key), so a re-run after a crash sends and signs nothing twice.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING

from promoter.core import lineage
from promoter.core.config import PipelineConfig
from promoter.core.intent import InvalidIntent
from promoter.core.lineage import RunOfVersion
from promoter.core.results import DeploymentStatus
from promoter.core.runtimes import Artifact
from promoter.core.spec import ModelDeployment
from promoter.errors import ConfigError, PolicyDenied, UserError
from promoter.ports.image import BuiltImage, ModelcarRequest
from promoter.ports.pipeline import Progress, StepLog
from promoter.ports.registry import ModelVersionInfo

if TYPE_CHECKING:
    from promoter.core.pipeline import Ports, PromotionJob


class ArtifactSteps:
    def __init__(self, config: PipelineConfig, ports: Ports, progress: Progress) -> None:
        self.config = config
        self.ports = ports
        self.progress = progress

    def artifact(self, deployment: ModelDeployment) -> Artifact:
        """What the runtime runs (its descriptor says): the pyfunc image, a modelcar, none."""
        descriptor = self.ports.renderer.runtimes.get(deployment.spec.runtime)
        if descriptor is None:
            known = ", ".join(sorted(self.ports.renderer.runtimes))
            raise InvalidIntent(f"{deployment.name}: spec.runtime {deployment.spec.runtime!r} "
                                f"is not a known runtime (known: {known})",
                                hint="fix the deploy.runtime tag, then set the alias again")
        return descriptor.artifact

    def _modelcar_layout(self, deployment: ModelDeployment) -> str:
        descriptor = self.ports.renderer.runtimes[deployment.spec.runtime]  # artifact() checked
        return descriptor.modelcar_layout or ""  # a modelcar descriptor always names one

    def image(self, deployment: ModelDeployment, info: ModelVersionInfo, origin: RunOfVersion,
              steps: StepLog, artifact: Artifact) -> BuiltImage | None:
        """The artifact the runtime runs, built and pushed once per version (step "image"),
        from the version as policy checked it (``info``, and ``origin``: the run that vouches
        for its files, or none)."""
        if artifact == "none":
            self.progress("image", "skipped", f"runtime {deployment.spec.runtime} runs no "
                          "artifact of promoter's")
            return None
        targets = self.config.targets
        repository_template = (targets.modelcar_repository or targets.image_repository
                               if artifact == "modelcar" else targets.image_repository)
        if not repository_template or self.ports.images is None:
            if artifact == "modelcar":
                # Its manifests mount or pull the modelcar: without one they cannot run (a
                # volume mount with no volume, an InferenceService with no storageUri).
                raise ConfigError(f"runtime {deployment.spec.runtime} serves the model from a "
                                  "signed modelcar, and no image repository is configured",
                                  hint="set image.modelcar_repository (or image.repository)")
            self.progress("image", "skipped", "no image repository configured")
            return None
        repository = repository_template.format(name=deployment.name)
        request = None
        if artifact == "modelcar":
            serving = deployment.spec.serving
            request = ModelcarRequest(layout=self._modelcar_layout(deployment),
                                      name=deployment.name,
                                      model_format=serving.model_format or "onnx",
                                      max_batch_size=serving.max_batch_size or 0)
        # What the recorded build was made for, all of it: the intent is read again on every
        # attempt, and a retry after the owner changed deploy.name, the runtime (another
        # modelcar layout) or the Triton format must not pin the artifact built for the old.
        wanted = {"version": info.version, "artifact": artifact, "repository": repository,
                  "request": asdict(request) if request else None}
        recorded = steps.step("image")
        if recorded and all(recorded.get(key) == value for key, value in wanted.items()):
            self.progress("image", "reused", recorded["reference"])
            return BuiltImage(recorded["reference"], recorded["digest"], recorded["size"],
                              list(recorded["layers"]), 0)
        labels = {"org.opencontainers.image.title": deployment.name}
        checked = lineage.checked_version(self.ports.registry, info, origin)
        if request is not None:
            built = self.ports.images.build_modelcar(checked, repository, request, labels)
        else:
            built = self.ports.images.build(checked, repository, labels)
        steps.record_step("image", {**wanted, "reference": built.reference,
                                    "digest": built.digest, "size": built.size,
                                    "layers": built.layers,
                                    "bytes_uploaded": built.bytes_uploaded})
        what = "modelcar " if artifact == "modelcar" else ""
        self.progress("image", "built",
                      f"{what}{built.reference} ({built.bytes_uploaded} bytes sent)")
        return built

    def signature(self, image: BuiltImage | None, steps: StepLog) -> str | None:
        if image is None or self.ports.signer is None:
            return None
        recorded = steps.step("signature")
        key_hint = self.ports.signer.key_hint
        # The reference, not only the digest: a signature lives in the image's repository, and
        # the same bytes built into another repository (deploy.name changed) need their own.
        # And the key: after image.signing_key was replaced, the old key's signature is not
        # what verify() (the new key's public half) checks, so reusing it denied the retry.
        # A record from before the key was kept lacks it: sign again, which writes nothing
        # when the key is unchanged (the signer keeps a valid signature by the same key).
        if recorded and key_hint is not None and recorded.get("digest") == image.digest and \
                recorded.get("reference") == image.reference and \
                recorded.get("key_hint") == key_hint:
            return str(recorded["status"])
        info = self.ports.signer.sign(image.reference)
        status = f"signed ({', '.join(info.formats)}; key {info.key_hint[:12]}…)"
        steps.record_step("signature", {"digest": image.digest, "reference": image.reference,
                                        "key_hint": key_hint, "status": status,
                                        "formats": info.formats, "created": info.created})
        self.progress("sign", "ok", status)
        return status

    def verify(self, job: PromotionJob, version: str, image: BuiltImage | None,
                steps: StepLog) -> str | None:
        """Only an image signed by a configured key reaches a merge request (whether promoter
        signed it or something else did): an unsigned image, or one signed by another key,
        is denied here and nothing is proposed."""
        if image is None or self.ports.verifier is None:
            return None
        recorded = steps.step("verify")
        key_hint = self.ports.verifier.key_hint
        # Digest, reference and key, as the signature step does: the same bytes rebuilt into
        # another repository (image.repository or deploy.name changed) carry the signatures of
        # that repository only, and a verification under a replaced key says nothing about the
        # new one. A record from before reference and key were kept lacks them: verify again.
        if recorded and key_hint is not None and recorded.get("digest") == image.digest and \
                recorded.get("reference") == image.reference and \
                recorded.get("key_hint") == key_hint:
            return str(recorded["status"])
        try:
            info = self.ports.verifier.verify(image.reference)
        except UserError as exc:
            reason = f"signature: {exc.message}"
            self.ports.registry.write_back(job.model, version, job.env,
                                           {"status": DeploymentStatus.DENIED, "reason": reason})
            self.progress("verify", "denied", exc.message)
            raise PolicyDenied([reason], version=version) from None
        status = f"verified ({', '.join(info.formats)}; key {info.key_hint[:12]}…)"
        steps.record_step("verify", {"digest": image.digest, "reference": image.reference,
                                     "key_hint": key_hint, "status": status})
        self.progress("verify", "ok", status)
        return status
