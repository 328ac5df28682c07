"""ModelDeployment → the Kustomize tree for one environment: ``{relative path: text}``.

Pure and deterministic: the same request renders byte-identical files. The base holds the
shape that every environment shares (names, selectors, probes, ports, labels of ownership); an
overlay holds everything bound to an environment or to the model version deployed there
(namespace, version pins and lineage, image digest, resources, GPU placement, region pinning,
replica bounds). Keeping version-bound values out of the base means promoting version 8 to
staging can never change what production runs at version 7.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from jinja2 import DictLoader

from promoter.core import keda_overlay, runtimes
from promoter.core.config import DEFAULT_COST_LABELS, frozen
from promoter.core.manifest_context import base_context, overlay_context
from promoter.core.naming import kserve_host_problem
from promoter.core.runtimes import RuntimeDescriptor
from promoter.core.spec import ModelDeployment
from promoter.core.templating import TemplateError, build_environment
from promoter.errors import UserError


@dataclass(frozen=True)
class ImagePin:
    repository: str
    digest: str | None = None  # sha256:<hex>; when known, the image is pinned by it

    @property
    def reference(self) -> str | None:
        return f"{self.repository}@{self.digest}" if self.digest else None


@dataclass(frozen=True)
class Lineage:
    run_id: str | None = None
    source: str | None = None  # the model's artifact location in MLflow


@dataclass(frozen=True)
class RenderRequest:
    base: ModelDeployment          # resolved without environment overrides
    deployment: ModelDeployment    # resolved for `environment`
    environment: str
    namespace: str
    lineage: Lineage = Lineage()
    image: ImagePin | None = None      # the pyfunc serving image (runtimes with that artifact)
    modelcar: ImagePin | None = None   # the signed modelcar (runtimes that run one)
    cost_labels: Mapping[str, str] = field(default_factory=lambda: frozen(DEFAULT_COST_LABELS))
    priority_class_name: str | None = None
    zone_spread: str | None = "ScheduleAnyway"
    image_base_configured: bool = True  # see runtimes.baseless_image_problem
    demo: bool = False
    # The overlay's scaledobject.yaml on the target branch, from a merged `promoter forecast`
    # MR: carried forward (bounded by this intent) so a promotion keeps KEDA's schedule.
    accepted_scaling: str | None = None


class Renderer:
    """Renders from templates given as text (``{"kserve/base/x.yaml.j2": source}``) and runtime
    descriptors given as parsed mappings (``{"kserve": {...}}``): loading them from a directory
    is the caller's I/O, so rendering itself never touches a file.

    Safe to share between worker threads: Jinja's environment is, and the one mutable piece,
    the last base rendered, is swapped under a lock.
    """

    def __init__(self, templates: Mapping[str, str],
                 descriptors: Mapping[str, Mapping[str, Any]]) -> None:
        self._env = build_environment(DictLoader(dict(templates)))
        self.runtimes = runtimes.parse_descriptors(descriptors)
        # The base is shared by every environment of a model: render it once per distinct input.
        self._last_base: tuple[str, dict[str, str]] | None = None
        self._lock = threading.Lock()

    def check(self, request: RenderRequest) -> RuntimeDescriptor:
        """The runtime's descriptor, or a UserError naming what the intent asks that it can't."""
        name, env = request.deployment.name, request.environment
        runtime = request.deployment.spec.runtime
        if request.base.name != name or request.base.spec.runtime != runtime:
            raise UserError(f"{name}: spec.environments.{env} may not change "
                            "the name or the runtime; those are shared by every environment")
        descriptor = runtimes.check_environment(request.base, request.deployment, env,
                                                self.runtimes)
        problem = runtimes.baseless_image_problem(
            descriptor, image_built=request.image is not None,
            base_configured=request.image_base_configured, demo=request.demo)
        if problem is None and descriptor.platform(request.deployment) == "kserve":
            problem = kserve_host_problem(name, request.namespace)
        if problem:
            raise UserError(f"{name}: {problem}")
        return descriptor

    def render(self, request: RenderRequest) -> dict[str, str]:
        descriptor = self.check(request)
        files = dict(self.render_base(request.base, descriptor, request.cost_labels))
        files.update(self.render_overlay(request, descriptor))
        return files

    def render_base(self, deployment: ModelDeployment, descriptor: RuntimeDescriptor,
                    cost_labels: Mapping[str, str]) -> dict[str, str]:
        key = deployment.model_dump_json() + repr(sorted(cost_labels.items()))
        with self._lock:
            last = self._last_base
        if last is not None and last[0] == key:
            return dict(last[1])
        files = self._render_base(deployment, descriptor, cost_labels)
        with self._lock:
            self._last_base = (key, files)
        return dict(files)

    def _render_base(self, deployment: ModelDeployment, descriptor: RuntimeDescriptor,
                     cost_labels: Mapping[str, str]) -> dict[str, str]:
        form = descriptor.form(deployment)
        context = base_context(deployment, descriptor, cost_labels)
        files = {_output(name): self._render(_template(descriptor, "base", name), context)
                 for name in form.base}
        files["kustomization.yaml"] = self._render(
            "base/kustomization.yaml.j2", {**context, "resources": [_output(n) for n in form.base]})
        return {f"{deployment.name}/base/{path}": text for path, text in sorted(files.items())}

    def render_overlay(self, request: RenderRequest,
                       descriptor: RuntimeDescriptor) -> dict[str, str]:
        deployment = request.deployment
        form = descriptor.form(deployment)
        context = overlay_context(request, descriptor)
        files = {_output(name): self._render(_template(descriptor, "overlay", name), context)
                 for name in form.overlay}
        patches, resources = [_output(name) for name in form.overlay], []
        if request.accepted_scaling is not None:
            platform = descriptor.platform(deployment)
            patches = keda_overlay.patches_after_handover(patches, platform, deployment.name)
            files = {path: text for path, text in files.items() if path in patches}
            files.update(keda_overlay.handover_patches(platform, deployment.name))
            scaling = deployment.spec.scaling
            files[keda_overlay.SCALED_OBJECT_FILE] = keda_overlay.retargeted(
                keda_overlay.bounded(request.accepted_scaling, scaling.min_replicas,
                                     scaling.max_replicas),
                keda_overlay.scale_target(platform, deployment.name))
            resources = [keda_overlay.SCALED_OBJECT_FILE]
        files["kustomization.yaml"] = self._render(
            "overlay/kustomization.yaml.j2",
            {**context, "patches": patches, "resources": resources})
        prefix = f"{deployment.name}/overlays/{request.environment}"
        return {f"{prefix}/{path}": text for path, text in sorted(files.items())}

    def _render(self, template: str, context: dict[str, Any]) -> str:
        try:
            text = self._env.get_template(template).render(context)
        except TemplateError as exc:
            raise UserError(f"template {template} failed: {exc}",
                            hint="check the templates directory (see README: Templates)") from None
        # Block collections follow "key: "; drop that trailing blank so diffs stay clean.
        # (Safe: a serialised scalar never ends in a space; JSON strings end in a quote.)
        return "\n".join(line.rstrip() for line in text.split("\n"))


def _template(descriptor: RuntimeDescriptor, part: str, name: str) -> str:
    if name.startswith("shared/"):
        return f"shared/{part}/{name.removeprefix('shared/')}.j2"
    return f"{descriptor.name}/{part}/{name}.j2"


def _output(name: str) -> str:
    return name.removeprefix("shared/")
