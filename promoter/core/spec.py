"""The deployment intent: ``ModelDeployment`` (apiVersion promoter.dev/v1alpha1).

Intent arrives as partial documents from several sources (promoter.yaml defaults, an intent
file, MLflow ``deploy.*`` tags, a ``modeldeployment.yaml`` logged with the model, per-environment
overrides). They are deep-merged as plain mappings, lowest precedence first, and only the merged
result is validated, so a partial source never has to be complete on its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from promoter.core.documents import dig
from promoter.core.naming import (
    DISPLAY_CONTROLS,
    derive_name,
    label_value_problem,
    name_problem,
    suggest_name,
)
from promoter.core.quantity import parse_quantity

API_VERSION: Final = "promoter.dev/v1alpha1"
KIND: Final = "ModelDeployment"
MAX_GPUS = 16          # the largest GPU nodes sold today carry 8-16 devices
MAX_CPU = Decimal(512)
MAX_MEMORY = Decimal(4) * 2**40  # 4 TiB
MAX_REPLICAS = 1000

# A runtime is a folder templates/<runtime>/ with a runtime.yaml; the renderer knows which exist.
RUNTIME_PATTERN = r"^[a-z][a-z0-9-]{0,30}$"
MIG_PROFILE_PATTERN = r"^[1-9][0-9]?g\.[1-9][0-9]{0,3}gb$"   # nvidia.com/mig-<g>g.<mem>gb


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _not_a_bool(value: Any) -> Any:
    # pydantic's lax mode (kept: MLflow tags give numbers as text, "2") takes true for 1, so
    # `gpu.count: true` rendered one GPU and `minReplicas: true` one replica.
    if isinstance(value, bool):
        raise ValueError("must be a number, not true or false")
    return value


Integer = Annotated[int, BeforeValidator(_not_a_bool)]
Number = Annotated[float, BeforeValidator(_not_a_bool)]


def _label_value(value: str) -> str:
    problem = label_value_problem(value)
    if problem:
        raise ValueError(problem)
    return value


class ModelRef(_Strict):
    name: str = Field(min_length=1, max_length=256, description="MLflow registered model name")
    version: str = Field(pattern=r"^[1-9][0-9]{0,9}$", description="MLflow model version")

    @field_validator("name")
    @classmethod
    def _printable(cls, value: str) -> str:
        if DISPLAY_CONTROLS.search(value):
            raise ValueError("must not contain control or text-direction characters")
        return value


class Owner(_Strict):
    team: str = Field(min_length=1)
    cost_center: str = Field(alias="costCenter", min_length=1)

    _check_team = field_validator("team", "cost_center")(lambda v: _label_value(v))


class Gpu(_Strict):
    count: Integer = Field(default=0, ge=0, le=MAX_GPUS)
    type: str | None = Field(default=None, description="node label nvidia.com/gpu.product")
    mig: str | None = Field(default=None, pattern=MIG_PROFILE_PATTERN,
                            description="MIG profile: count instances of nvidia.com/mig-<mig>")

    @field_validator("type")
    @classmethod
    def _gpu_type(cls, value: str | None) -> str | None:
        return None if value is None else _label_value(value)

    @model_validator(mode="after")
    def _a_type_or_profile_needs_a_count(self) -> Gpu:
        # Without a count the GPU type (node selector) and MIG profile (resource name) have
        # nothing to apply to: rendered, the pods ran CPU-only with nothing saying so.
        asked = [(key, value) for key, value in (("type", self.type), ("mig", self.mig))
                 if value]
        if self.count == 0 and asked:
            named = " and ".join(f"{key} {value}" for key, value in asked)
            nulls = ", ".join(f"{key}: null" for key, _ in asked)
            raise ValueError(f"{named} with count 0 requests no GPU; set count: 1 or more, "
                             f"or for a CPU-only environment set {nulls}")
        return self


def _without_padding(quantity: str) -> str:
    """The quantity as rendered: the value kept is what goes into requests and limits, and
    Kubernetes (and the InferenceService schema) refuse a quantity with surrounding
    whitespace that YAML quoting keeps (``cpu: "8 "``), so the padding is dropped here."""
    return quantity.strip()


class Resources(_Strict):
    cpu: str
    memory: str
    gpu: Gpu = Gpu()

    @field_validator("cpu", mode="before")
    @classmethod
    def _cpu(cls, value: Any) -> str:
        number = isinstance(value, int | float) and not isinstance(value, bool)
        text = str(value) if number else value
        if not isinstance(text, str):
            raise ValueError("must be a Kubernetes quantity such as 500m or 2")
        text = _without_padding(text)
        amount = parse_quantity(text)
        if amount <= 0 or amount > MAX_CPU:
            raise ValueError(f"{text} is outside 1m..{MAX_CPU} CPUs")
        return text

    @field_validator("memory", mode="before")
    @classmethod
    def _memory(cls, value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError("must be a Kubernetes quantity with a unit, such as 16Gi")
        text = _without_padding(value)
        amount = parse_quantity(text)
        if amount < 2**20 or amount > MAX_MEMORY:
            raise ValueError(f"{text} is outside 1Mi..4Ti")
        return text


class Scaling(_Strict):
    # No scale-to-zero: KServe's Standard mode and HPAs need a replica; GPU cold starts are long.
    min_replicas: Integer = Field(alias="minReplicas", ge=1, le=MAX_REPLICAS)
    max_replicas: Integer = Field(alias="maxReplicas", ge=1, le=MAX_REPLICAS)
    metric: Literal["cpu", "memory", "concurrency", "rps"] = "cpu"
    target: Integer = Field(default=70, ge=1, le=10_000)

    @model_validator(mode="after")
    def _ordered(self) -> Scaling:
        if self.max_replicas < self.min_replicas:
            raise ValueError(
                f"maxReplicas ({self.max_replicas}) is below minReplicas ({self.min_replicas})")
        return self


class Serving(_Strict):
    """Runtime options; each runtime's descriptor lists the ones it accepts."""

    platform: Literal["kserve", "kubernetes"] | None = Field(
        default=None, description="InferenceService (kserve) or plain Deployment (kubernetes)")
    max_model_len: Integer | None = Field(default=None, alias="maxModelLen", ge=16, le=10_000_000)
    gpu_memory_utilization: Number | None = Field(default=None, alias="gpuMemoryUtilization",
                                                 gt=0, le=1)
    max_batch_size: Integer | None = Field(default=None, alias="maxBatchSize", ge=0, le=1_000_000)
    model_format: Literal["onnx", "tensorrt"] | None = Field(default=None, alias="modelFormat")

    def given(self) -> set[str]:
        """The options the intent set, by their intent names (maxModelLen, not max_model_len)."""
        return {Serving.model_fields[field].alias or field for field in self.model_fields_set
                if getattr(self, field) is not None}


class Spec(_Strict):
    model: ModelRef
    owner: Owner
    runtime: str = Field(default="kserve", pattern=RUNTIME_PATTERN)
    serving: Serving = Serving()
    description: str = Field(default="", max_length=4096)
    resources: Resources
    scaling: Scaling
    regions: tuple[str, ...] = ()
    # Per-environment overrides are merged before validation; kept as raw mappings here.
    environments: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("regions", mode="before")
    @classmethod
    def _regions(cls, value: Any) -> Any:
        if isinstance(value, str):  # from an MLflow tag: "eu-west-1,us-east-1"
            value = [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("regions")
    @classmethod
    def _region_values(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for region in value:
            _label_value(region)
        if len(set(value)) != len(value):
            raise ValueError("lists a region twice")
        return tuple(sorted(value))


class Metadata(_Strict):
    name: str

    @field_validator("name")
    @classmethod
    def _dns(cls, value: str) -> str:
        problem = name_problem(value)
        if problem:
            raise ValueError(f"{value!r} {problem}; try {suggest_name(value)!r}")
        return value


class ModelDeployment(_Strict):
    """One model's deployment, fully merged for one environment."""

    api_version: Literal["promoter.dev/v1alpha1"] = Field(default=API_VERSION, alias="apiVersion")
    kind: Literal["ModelDeployment"] = KIND
    metadata: Metadata
    spec: Spec

    @property
    def name(self) -> str:
        return self.metadata.name


def deep_merge(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Merge mappings, later layers winning; nested mappings merge, everything else replaces."""
    merged: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
                merged[key] = deep_merge(merged[key], value)
            elif isinstance(value, Mapping):
                merged[key] = deep_merge(value)
            else:
                merged[key] = value
    return merged


def intent_from_tags(tags: Mapping[str, str], prefix: str = "deploy.") -> dict[str, Any]:
    """MLflow model-version tags ``deploy.resources.gpu.count=1`` → a partial intent document.

    Keys are dotted paths under ``spec``; ``deploy.name`` sets ``metadata.name``.
    """
    spec: dict[str, Any] = {}
    metadata: dict[str, Any] = {}
    for key in sorted(tags):
        if not key.startswith(prefix):
            continue
        path = [part for part in key[len(prefix):].split(".") if part]
        if not path:
            continue
        if path == ["name"]:
            metadata["name"] = tags[key]
            continue
        cursor = spec
        for depth, part in enumerate(path[:-1], start=1):
            nxt = cursor.setdefault(part, {})
            if not isinstance(nxt, dict):  # "deploy.gpu=1" and "deploy.gpu.type=x" together
                holder = prefix + ".".join(path[:depth])
                raise ValueError(f"tag {key!r} conflicts with tag {holder!r}")
            cursor = nxt
        if isinstance(cursor.get(path[-1]), dict):
            raise ValueError(f"tag {key!r} conflicts with tags below it")
        cursor[path[-1]] = tags[key]
    document: dict[str, Any] = {}
    if spec:
        document["spec"] = spec
    if metadata:
        document["metadata"] = metadata
    return document


def resolve(
    *,
    defaults: Mapping[str, Any],
    intent: Mapping[str, Any],
    environment: str | None,
    environment_defaults: Mapping[str, Any] | None = None,
    model: ModelRef | None = None,
) -> ModelDeployment:
    """Merge the sources for one environment (or none, for the environment-neutral base).

    Precedence, lowest first: promoter.yaml ``defaults`` < the environment's defaults in
    promoter.yaml < the intent < the intent's ``spec.environments.<env>`` overrides.
    ``model`` (from the registry event) fills or replaces ``spec.model``.
    Raises pydantic.ValidationError; callers turn it into a UserError naming every field.
    """
    intent_spec = dict(intent.get("spec") or {})
    overrides = (intent_spec.get("environments") or {}).get(environment, {}) if environment else {}
    spec = deep_merge(defaults, environment_defaults or {}, intent_spec, overrides or {})
    _drop_gpu_defaults_without_a_gpu(spec, deep_merge(intent_spec, overrides or {}))
    if model is not None:
        spec["model"] = {"name": model.name, "version": model.version}
    metadata = dict(intent.get("metadata") or {})
    model_spec = spec.get("model") or {}
    # absent: derive; present but empty: refused below. A spec.model that is no mapping has
    # no name to derive from: validation names it, and metadata.name as required.
    if metadata.get("name") is None and isinstance(model_spec, Mapping):
        model_name = str(model_spec.get("name") or "")
        metadata["name"] = derive_name(model_name) if model_name else ""
    document = {k: v for k, v in intent.items() if k not in ("spec", "metadata")}
    document.update(metadata=metadata, spec=spec)
    return ModelDeployment.model_validate(document)


def _drop_gpu_defaults_without_a_gpu(spec: dict[str, Any], asked: Mapping[str, Any]) -> None:
    """A GPU type or MIG profile from promoter.yaml's defaults ("production's GPUs are H100s")
    says which GPU a deployment that asks for GPUs gets; one that asks for none keeps it
    out. Only what the intent itself names (``asked``) is left for Gpu to refuse beside a
    count of 0. ``spec`` is deep_merge's fresh copy, changed in place."""
    gpu = dig(spec, "resources", "gpu")
    if not isinstance(gpu, dict) or gpu.get("count", 0) not in (0, "0"):
        return
    named = dig(asked, "resources", "gpu")
    for key in ("type", "mig"):
        if not isinstance(named, Mapping) or named.get(key) is None:
            gpu.pop(key, None)
