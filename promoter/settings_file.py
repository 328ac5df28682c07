"""Reading promoter.yaml itself: the YAML document and its kind, and the ``defaults`` section
checked field by field (a partial intent), before the whole file is validated as Settings."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from promoter.core.problems import describe
from promoter.core.spec import Spec
from promoter.errors import ConfigError


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read configuration {path}: {exc.strerror}") from None
    try:
        data = YAML(typ="safe", pure=True).load(text)
    except YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping at the top level")
    data.pop("apiVersion", None)
    if data.pop("kind", "PromoterConfig") != "PromoterConfig":
        raise ConfigError(f"{path}: kind must be PromoterConfig")
    return data


def default_problems(defaults: Any) -> list[str]:
    """The defaults are a partial intent: check each field they set, with its dotted path."""
    if not isinstance(defaults, Mapping):
        return []
    problems = []
    for field, value in defaults.items():
        name = _SPEC_FIELDS_BY_ALIAS.get(field)
        if name is None:
            problems.append(f"defaults.{field}: is not a known field (check the spelling)")
            continue
        annotation = Spec.model_fields[name].annotation
        assert annotation is not None  # every Spec field is annotated
        try:
            TypeAdapter(annotation).validate_python(value)
        except ValidationError as exc:
            problems.extend(describe(exc, prefix=f"defaults.{field}"))
    return problems


_SPEC_FIELDS_BY_ALIAS = {(info.alias or name): name for name, info in Spec.model_fields.items()}
