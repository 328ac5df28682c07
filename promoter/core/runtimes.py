"""Serving runtimes as data: each ``templates/<runtime>/runtime.yaml`` says what the runtime needs.

A descriptor names the artifact a runtime runs (the pyfunc serving image, a modelcar holding
the model files, or nothing), the intent options it accepts under ``spec.serving``, and per
platform (``kserve``: an InferenceService; ``kubernetes``: a plain Deployment) the files it
renders, the scaling metrics that platform documents, and where the server's metrics are.
Reading the file is the caller's I/O; this module validates the parsed mapping and checks a
resolved deployment against it, naming every problem.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from promoter.core.naming import pods_pattern
from promoter.core.problems import describe
from promoter.core.spec import ModelDeployment, Serving
from promoter.errors import UserError

Artifact = Literal["pyfunc-image", "modelcar", "none"]
Platform = Literal["kserve", "kubernetes"]
# How a modelcar lays the model out under /models (promoter.image.modelcar builds each):
# the MLflow model directory, a Hugging Face directory, or Triton's model repository.
ModelcarLayout = Literal["mlflow", "huggingface", "triton"]
_FILE = r"^(shared/)?[a-z0-9][a-z0-9.-]*\.yaml$"
ARG_FIELD = re.compile(r"\{([A-Za-z]+)\}")
# What "{field}" in a descriptor's args may name (filled in by core.manifest_context).
ARG_FIELDS = frozenset({"name", "gpus", "maxModelLen", "gpuMemoryUtilization"})
# The spec.serving options a descriptor may list (platform is every runtime's).
OPTIONS = frozenset(info.alias or field for field, info in Serving.model_fields.items()
                    if field != "platform")


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Metrics(_Frozen):
    """Where Prometheus scrapes the server: a named Service port, or a pod port number."""

    port: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9-]{0,14}$")
    target_port: int | None = Field(default=None, alias="targetPort", ge=1, le=65535)
    path: str = Field(pattern=r"^/[A-Za-z0-9/_.-]*$")


class Form(_Frozen):
    """What one platform renders: files in kustomization order, scaling, metrics."""

    base: tuple[str, ...] = Field(min_length=1)
    overlay: tuple[str, ...] = Field(min_length=1)
    deployment_mode: str | None = Field(default=None, alias="deploymentMode")
    scaling_metrics: tuple[str, ...] = Field(alias="scalingMetrics", min_length=1)
    # The highest scaling target the platform accepts (KServe refuses a target over 100 for
    # an HPA-scaled InferenceService, whatever the metric); None: no bound beyond the intent's.
    scale_target_max: int | None = Field(default=None, alias="scaleTargetMax", ge=1)
    metrics: Metrics | None = None
    # Server arguments; "{field}" takes an intent value, and an unset value drops the argument.
    args: tuple[str, ...] = ()

    def model_post_init(self, _context: Any) -> None:
        for name in (*self.base, *self.overlay):
            if not re.fullmatch(_FILE, name):
                raise ValueError(f"file {name!r} must be NAME.yaml or shared/NAME.yaml")
        for arg in self.args:  # a misspelt field would silently drop its argument
            unknown = sorted(set(ARG_FIELD.findall(arg)) - ARG_FIELDS)
            if unknown:
                raise ValueError(f"argument {arg!r} names unknown field(s) {', '.join(unknown)}; "
                                 f"known: {', '.join(sorted(ARG_FIELDS))}")


TELEMETRY_FIELDS = frozenset({"name", "namespace", "window", "pods"})


class Telemetry(_Frozen):
    """PromQL for the server's demand, used by `promoter forecast` and KEDA's reactive trigger.

    ``{name}`` and ``{namespace}`` are DNS labels, checked before they get here; ``{pods}``
    is the regex of the deployment's pods (core.naming.pods_pattern: use ``pod=~"{pods}"``);
    ``{window}`` is the rate window (the forecast step, or 2m for KEDA).
    """

    request_rate: str = Field(alias="requestRate", min_length=1, max_length=2000)
    queue: str | None = Field(default=None, min_length=1, max_length=2000)
    startup_seconds: int = Field(default=300, alias="startupSeconds", ge=0, le=6 * 3600)
    # The server reserves a fixed share of each GPU's memory at start (vLLM's KV cache): its
    # DCGM framebuffer use is that share, not what the model needs (`promoter rightsize`).
    reserves_gpu_memory: bool = Field(default=False, alias="reservesGpuMemory")

    def model_post_init(self, _context: Any) -> None:
        for query in (self.request_rate, self.queue or ""):
            unknown = sorted(set(ARG_FIELD.findall(query)) - TELEMETRY_FIELDS)
            if unknown:
                raise ValueError(f"telemetry query names unknown field(s) {', '.join(unknown)}; "
                                 f"known: {', '.join(sorted(TELEMETRY_FIELDS))}")

    def render(self, query: str, *, name: str, namespace: str, window: str) -> str:
        values = {"name": name, "namespace": namespace, "window": window,
                  "pods": pods_pattern(name)}
        return ARG_FIELD.sub(lambda match: values[match.group(1)], query)


class RuntimeDescriptor(_Frozen):
    name: str
    description: str = ""
    artifact: Artifact
    modelcar_layout: ModelcarLayout | None = Field(default=None, alias="modelcarLayout")
    options: frozenset[str] = frozenset()
    tensor_parallel: bool = Field(default=False, alias="tensorParallel")  # splits over GPUs
    # Whether the server needs a GPU (its image runs on CUDA): true, or the spec.serving
    # modelFormat values that do (a TensorRT plan); an intent without one is invalid.
    requires_gpu: bool | frozenset[str] = Field(default=False, alias="requiresGpu")
    default_platform: Platform = Field(alias="defaultPlatform")
    platforms: dict[Platform, Form] = Field(min_length=1)
    server: dict[str, Any] = Field(default_factory=dict)
    telemetry: Telemetry | None = None

    def model_post_init(self, _context: Any) -> None:
        unknown = sorted(self.options - OPTIONS - {"platform"})
        if unknown:
            raise ValueError(f"options {', '.join(unknown)} are not spec.serving fields "
                             f"({', '.join(sorted(OPTIONS))})")
        if self.default_platform not in self.platforms:
            raise ValueError(f"defaultPlatform {self.default_platform!r} is not in platforms")
        if (self.artifact == "modelcar") != (self.modelcar_layout is not None):
            raise ValueError("modelcarLayout (mlflow | huggingface | triton) is required with "
                             "artifact: modelcar, and only then")

    def platform(self, deployment: ModelDeployment) -> Platform:
        chosen = deployment.spec.serving.platform or self.default_platform
        return chosen  # checked by problems(): an unknown platform is named there

    def form(self, deployment: ModelDeployment) -> Form:
        return self.platforms[self.platform(deployment)]


def parse_descriptor(name: str, data: Mapping[str, Any]) -> RuntimeDescriptor:
    """A parsed ``runtime.yaml`` → a validated descriptor; every problem in one UserError."""
    try:
        return RuntimeDescriptor.model_validate({**data, "name": name})
    except ValidationError as exc:
        raise UserError(f"templates/{name}/runtime.yaml is not a valid runtime descriptor:\n  "
                        + "\n  ".join(describe(exc)),
                        hint="see the README: Adding a runtime") from None


def parse_descriptors(data: Mapping[str, Mapping[str, Any]]) -> dict[str, RuntimeDescriptor]:
    return {name: parse_descriptor(name, item) for name, item in sorted(data.items())}


def problems(deployment: ModelDeployment, descriptor: RuntimeDescriptor) -> list[str]:
    """Everything in the intent this runtime cannot render as documented, one line each."""
    spec, name = deployment.spec, descriptor.name
    found = []
    # platform is every runtime's option (checked against its platforms below).
    given = spec.serving.given() - {"platform"}
    for option in sorted(given - descriptor.options):
        accepted = ", ".join(sorted(descriptor.options)) or "none"
        found.append(f"spec.serving.{option}: runtime {name} does not accept it "
                     f"(it accepts: {accepted})")
    platform = spec.serving.platform
    if platform is not None and platform not in descriptor.platforms:
        found.append(f"spec.serving.platform: runtime {name} renders "
                     f"{' or '.join(sorted(descriptor.platforms))}, not {platform}")
        return found
    form = descriptor.form(deployment)
    if spec.scaling.metric not in form.scaling_metrics:
        mode = f" in {form.deployment_mode} mode" if form.deployment_mode else ""
        found.append(f"spec.scaling.metric: {spec.scaling.metric!r} is not a scaling metric "
                     f"that {descriptor.platform(deployment)}{mode} documents for runtime "
                     f"{name}; use {' or '.join(form.scaling_metrics)}")
    needs = descriptor.requires_gpu
    model_format = spec.serving.model_format
    if spec.resources.gpu.count < 1 and (needs is True or (
            isinstance(needs, frozenset) and model_format in needs)):
        what = f"runtime {name}" + (f" with modelFormat {model_format}"
                                    if isinstance(needs, frozenset) else "")
        found.append(f"spec.resources.gpu.count: {what} needs a GPU (its server runs on "
                     "CUDA); set count: 1 or more")
    if form.scale_target_max is not None and spec.scaling.target > form.scale_target_max:
        found.append(f"spec.scaling.target: {spec.scaling.target} is over "
                     f"{form.scale_target_max}, the most {descriptor.platform(deployment)} "
                     f"accepts for runtime {name}")
    # A CUDA process enumerates one MIG instance only (NVIDIA MIG user guide, "CUDA Device
    # Enumeration"), and every runtime here serves from one process per pod: a second slice
    # would sit reserved and idle (and tensor parallelism needs whole GPUs anyway).
    if spec.resources.gpu.mig and spec.resources.gpu.count > 1:
        why = ("tensor parallelism needs whole GPUs; " if descriptor.tensor_parallel else
               f"runtime {name} serves from one CUDA process, which sees one MIG instance; ")
        found.append(f"spec.resources.gpu: {why}a MIG profile serves one instance (set "
                     "count: 1, or drop mig for whole GPUs)")
    return found


def check(deployment: ModelDeployment, descriptors: Mapping[str, RuntimeDescriptor], *,
          origin: str) -> RuntimeDescriptor:
    """The descriptor of the deployment's runtime, or a UserError naming every problem."""
    descriptor = descriptors.get(deployment.spec.runtime)
    if descriptor is None:
        known = ", ".join(sorted(descriptors))
        raise UserError(f"{origin}: spec.runtime {deployment.spec.runtime!r} is not a known "
                        f"runtime (known: {known})",
                        hint="each runtime is a folder templates/<runtime>/ with a runtime.yaml")
    found = problems(deployment, descriptor)
    if found:
        raise UserError(f"{origin} cannot be rendered as runtime {descriptor.name}:\n  "
                        + "\n  ".join(found), hint="fix every field listed")
    return descriptor


def check_environment(base: ModelDeployment, deployment: ModelDeployment, environment: str,
                      descriptors: Mapping[str, RuntimeDescriptor]) -> RuntimeDescriptor:
    """``check`` for an environment's deployment and its base, which must share a platform."""
    name = deployment.name
    descriptor = check(deployment, descriptors, origin=f"{name} ({environment})")
    check(base, descriptors, origin=name)
    if descriptor.platform(base) != descriptor.platform(deployment):
        raise UserError(f"{name}: spec.environments.{environment}.serving.platform may not "
                        "differ from the base's; the platform decides the base's resources")
    return descriptor


def baseless_image_problem(descriptor: RuntimeDescriptor, *, image_built: bool,
                           base_configured: bool, demo: bool) -> str | None:
    """The pyfunc image has Python only from its base: without one it cannot start.

    Only the demo may build it anyway (and says so); anywhere else it is an invalid intent.
    """
    if descriptor.artifact != "pyfunc-image" or not image_built or base_configured or demo:
        return None
    return (f"runtime {descriptor.name} runs the built pyfunc image, and without image.base "
            "that image has no Python and cannot start; set image.base in promoter.yaml to a "
            "Python image (or choose a modelcar runtime: kserve, vllm, triton)")


def unpinned_artifact(descriptor: RuntimeDescriptor, *, image_pinned: bool,
                      modelcar_pinned: bool) -> str | None:
    """What a tree rendered without its runtime's signed artifact lacks, said plainly: a
    promotion always pins it, but `promoter render` may be asked for a preview without one,
    and that tree must not pass for one a cluster can run."""
    if descriptor.artifact == "modelcar" and not modelcar_pinned:
        return (f"runtime {descriptor.name} runs a signed modelcar and none is pinned: the tree "
                "has no model to load and will not run; pass --modelcar REPO@sha256:… (from "
                "`promoter image modelcar`) for a tree a cluster runs")
    if descriptor.artifact == "pyfunc-image" and not image_pinned:
        return (f"runtime {descriptor.name} runs the signed pyfunc image and none is pinned by "
                "digest: the tree names a placeholder or a tag, not the image that was signed; "
                "pass --image REPO@sha256:… (from `promoter image build`) for a tree that runs "
                "exactly the signed image")
    return None


def misplaced_pin(descriptor: RuntimeDescriptor, *, modelcar_given: bool,
                  image_given: bool) -> str | None:
    """An artifact pin the runtime would not run: `promoter render --modelcar` for the
    deployment runtime (or --image for a modelcar runtime) rendered a tree without it, with
    nothing said, so a preview of "this signed artifact" showed none."""
    if modelcar_given and descriptor.artifact != "modelcar":
        return (f"runtime {descriptor.name} does not run a modelcar ({descriptor.artifact}): "
                "--modelcar does not apply" + ("; pin its image with --image"
                                               if descriptor.artifact == "pyfunc-image" else ""))
    if image_given and descriptor.artifact != "pyfunc-image":
        return (f"runtime {descriptor.name} does not run the pyfunc image "
                f"({descriptor.artifact}): --image does not apply"
                + ("; pin its modelcar with --modelcar" if descriptor.artifact == "modelcar"
                   else ""))
    return None


def shell_less_modelcar_problem(descriptor: RuntimeDescriptor, deployment: ModelDeployment, *,
                                modelcar_built: bool, base_configured: bool,
                                demo: bool) -> str | None:
    """KServe starts a modelcar as a sidecar running ``sh -c 'ln -sf /proc/$$/root/models …
    && sleep infinity'``: a modelcar of only the model files has no ``sh`` and never starts.

    Image volumes (the plain Deployment forms of vllm and triton) mount the files and run
    nothing from the image, so only the kserve platform needs image.modelcar_base. The demo
    may build one anyway (it never reaches a cluster).
    """
    if (descriptor.artifact != "modelcar" or descriptor.platform(deployment) != "kserve"
            or not modelcar_built or base_configured or demo):
        return None
    return (f"runtime {descriptor.name} on KServe runs the modelcar as a sidecar through `sh`, "
            "and without image.modelcar_base the modelcar holds only the model files; set "
            "image.modelcar_base in promoter.yaml to a small image with a shell, pinned by "
            "digest (e.g. busybox), or choose serving.platform: kubernetes")
