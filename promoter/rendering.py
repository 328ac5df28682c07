"""The render use case: intent document + settings → files, and writing them to a tree.

Sits between the CLI (and later the pipeline) and the pure renderer: it loads intent files,
resolves the merge order with settings, turns validation errors into one UserError naming every
field, and writes trees without ever overwriting another model's directory.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader
from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from promoter.core.problems import describe
from promoter.core.render import ImagePin, Lineage, Renderer, RenderRequest
from promoter.core.spec import API_VERSION, KIND, ModelDeployment, ModelRef, resolve
from promoter.errors import UserError
from promoter.settings import Settings

_REPO_TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
_PACKAGED_TEMPLATES = Path(__file__).resolve().parent / "_templates"


def templates_dir(settings: Settings) -> Path:
    if settings.templates_dir is not None:
        return settings.templates_dir
    return _REPO_TEMPLATES if _REPO_TEMPLATES.is_dir() else _PACKAGED_TEMPLATES


def renderer(settings: Settings) -> Renderer:
    return Renderer(FileSystemLoader(str(templates_dir(settings))))


def load_intent_file(path: Path) -> dict[str, Any]:
    """Read a ModelDeployment YAML file; refuse anything that is not one."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read intent file {path}: {exc}") from None
    return parse_intent(text, origin=str(path))


def parse_intent(text: str, *, origin: str) -> dict[str, Any]:
    try:
        document = YAML(typ="safe", pure=True).load(text)
    except YAMLError as exc:
        raise UserError(f"{origin} is not valid YAML: {_first_line(exc)}",
                        hint="an intent file is a YAML ModelDeployment; see examples/") from None
    if not isinstance(document, dict):
        raise UserError(f"{origin} must hold a YAML mapping (a ModelDeployment), "
                        f"not {type(document).__name__}")
    problems = []
    if document.get("apiVersion") != API_VERSION:
        problems.append(f"apiVersion: must be {API_VERSION} (got {document.get('apiVersion')!r})")
    if document.get("kind") != KIND:
        problems.append(f"kind: must be {KIND} (got {document.get('kind')!r})")
    if problems:
        raise UserError(f"{origin} is not a ModelDeployment:\n  " + "\n  ".join(problems))
    return document


def resolve_intent(settings: Settings, intent: Mapping[str, Any], environment: str | None, *,
                   origin: str, model: ModelRef | None = None) -> ModelDeployment:
    env_defaults = settings.environment(environment).spec_defaults() if environment else {}
    unknown = set((intent.get("spec") or {}).get("environments") or {}) - set(settings.environments)
    if unknown:
        raise UserError(f"{origin}: spec.environments names unknown environment(s) "
                        f"{', '.join(sorted(unknown))}",
                        hint=f"configured environments: {', '.join(sorted(settings.environments))}")
    try:
        return resolve(defaults=settings.defaults, intent=intent, environment=environment,
                       environment_defaults=env_defaults, model=model)
    except ValidationError as exc:
        where = f" for environment {environment}" if environment else ""
        raise UserError(f"{origin} is not a valid ModelDeployment{where}:\n  "
                        + "\n  ".join(describe(exc)), hint="fix every field listed") from None


def build_request(settings: Settings, intent: Mapping[str, Any], environment: str, *, origin: str,
                  lineage: Lineage | None = None, image: ImagePin | None = None,
                  model: ModelRef | None = None) -> RenderRequest:
    env = settings.environment(environment)
    base = resolve_intent(settings, intent, None, origin=origin, model=model)
    deployment = resolve_intent(settings, intent, environment, origin=origin, model=model)
    if image is None and deployment.spec.runtime == "deployment" and settings.image.repository:
        image = ImagePin(repository=settings.image.repository.format(name=deployment.name))
    return RenderRequest(base=base, deployment=deployment, environment=environment,
                         namespace=env.namespace, lineage=lineage or Lineage(), image=image)


def write_tree(out: Path, files: Mapping[str, str]) -> list[Path]:
    """Write rendered files under ``out``, replacing the rendered directories whole.

    Refuses to touch a model directory that belongs to another registered model (read from the
    base kustomization's ``promoter.dev/registered-model``). Stale files in the directories we
    render (say, an HPA patch after a runtime change) are removed so the tree matches the render.
    """
    directories = sorted({str(Path(path).parent) for path in files})
    for directory in directories:
        _check_owner(out, directory, files)
    written = []
    for directory in directories:
        target = out / directory
        if target.is_dir():
            for stale in target.iterdir():
                if stale.is_file() and f"{directory}/{stale.name}" not in files:
                    stale.unlink()
        target.mkdir(parents=True, exist_ok=True)
    for path, text in sorted(files.items()):
        destination = out / path
        destination.write_text(text, encoding="utf-8")
        written.append(destination)
    return written


def _check_owner(out: Path, directory: str, files: Mapping[str, str]) -> None:
    name = directory.split("/", 1)[0]
    existing = out / name / "base" / "kustomization.yaml"
    ours = files.get(f"{name}/base/kustomization.yaml")
    if not existing.is_file() or ours is None:
        return
    theirs = _registered_model(existing.read_text(encoding="utf-8"))
    mine = _registered_model(ours)
    if theirs is not None and theirs != mine:
        raise UserError(f"{out / name} already holds model {theirs!r}; refusing to overwrite it "
                        f"with {mine!r}", hint="give one of them a distinct metadata.name")


def _registered_model(kustomization: str) -> str | None:
    try:
        document = YAML(typ="safe", pure=True).load(kustomization) or {}
    except YAMLError:
        return None
    value = (document.get("commonAnnotations") or {}).get("promoter.dev/registered-model")
    return value if isinstance(value, str) else None


def _first_line(exc: Exception) -> str:
    return " ".join(str(exc).split())[:300]
