"""The render use case's I/O edge: template files in, intent files in, rendered trees out.

The pure parts live in the core (``core.intent`` resolves an intent against the configured
targets, ``core.render`` renders from templates given as text); this module reads the template
directory and intent files, and writes trees without ever overwriting another model's directory.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from promoter.core import intent as core_intent
from promoter.core import live_overlay, tree_facts
from promoter.core.render import ImagePin, Lineage, Renderer, RenderRequest
from promoter.core.spec import ModelDeployment, ModelRef
from promoter.errors import UserError
from promoter.intent_yaml import MAX_INTENT_BYTES, load_intent_yaml
from promoter.ports.git import GitProvider
from promoter.settings import Settings

_REPO_TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
_PACKAGED_TEMPLATES = Path(__file__).resolve().parent / "_templates"


def templates_dir(settings: Settings) -> Path:
    if settings.templates_dir is not None:
        return settings.templates_dir
    return _REPO_TEMPLATES if _REPO_TEMPLATES.is_dir() else _PACKAGED_TEMPLATES


def load_templates(directory: Path) -> dict[str, str]:
    """Every ``*.j2`` under ``directory`` by its relative POSIX path (what the renderer asks)."""
    if not directory.is_dir():
        raise UserError(f"templates directory {directory} does not exist",
                        hint="fix templates_dir in promoter.yaml, or remove it for the built-in")
    templates = {}
    for path in sorted(directory.rglob("*.j2")):
        try:
            templates[path.relative_to(directory).as_posix()] = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read template {path}: {exc}") from None
    return templates


def load_descriptors(directory: Path) -> dict[str, dict[str, Any]]:
    """Every ``<runtime>/runtime.yaml`` under ``directory``, parsed (the core validates it)."""
    descriptors: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob("*/runtime.yaml")):
        try:
            data = YAML(typ="safe", pure=True).load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, YAMLError) as exc:
            raise UserError(f"cannot read runtime descriptor {path}: {_first_line(exc)}") from None
        if not isinstance(data, dict):
            raise UserError(f"runtime descriptor {path} must hold a mapping")
        descriptors[path.parent.name] = data
    if not descriptors:
        raise UserError(f"no runtime descriptors (<runtime>/runtime.yaml) under {directory}",
                        hint="see the README: Adding a runtime")
    return descriptors


def renderer(settings: Settings) -> Renderer:
    directory = templates_dir(settings)
    descriptors = with_server_images(load_descriptors(directory), settings.runtime_images)
    return Renderer(load_templates(directory), descriptors)


def with_server_images(descriptors: dict[str, dict[str, Any]],
                       images: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """``runtime_images`` from promoter.yaml replace the server image a descriptor names."""
    for runtime, reference in sorted(images.items()):
        server = (descriptors.get(runtime) or {}).get("server")
        if not isinstance(server, dict) or "image" not in server:
            runs_one = sorted(name for name, data in descriptors.items()
                              if isinstance(data.get("server"), dict) and "image" in data["server"])
            raise UserError(f"runtime_images.{runtime}: no runtime {runtime!r} with a server "
                            f"image (runtimes that have one: {', '.join(runs_one)})")
        descriptors[runtime] = {**descriptors[runtime], "server": {**server, "image": reference}}
    return descriptors


def load_intent_file(path: Path) -> dict[str, Any]:
    """Read a ModelDeployment YAML file; refuse anything that is not one."""
    try:
        with path.open("rb") as handle:  # never read more than an intent may hold
            data = handle.read(MAX_INTENT_BYTES + 1)
    except OSError as exc:
        raise UserError(f"cannot read intent file {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_INTENT_BYTES:
        raise UserError(f"intent file {path} is larger than {MAX_INTENT_BYTES} bytes, the most "
                        "an intent may hold", hint="an intent needs a few dozen lines")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"cannot read intent file {path}: not UTF-8 ({exc.reason})") from None
    return parse_intent(text, origin=str(path))


def parse_intent(text: str, *, origin: str) -> dict[str, Any]:
    return core_intent.check_document(load_intent_yaml(text, origin=origin), origin=origin)


def build_request(settings: Settings, intent: Mapping[str, Any], environment: str, *, origin: str,
                  lineage: Lineage | None = None, image: ImagePin | None = None,
                  model: ModelRef | None = None,
                  modelcar: ImagePin | None = None) -> RenderRequest:
    """``core.intent.build_request`` with the targets of these settings (for commands)."""
    return core_intent.build_request(settings.targets(), intent, environment, origin=origin,
                                     lineage=lineage, image=image, model=model, modelcar=modelcar)


def proposal_overlay(settings: Settings, provider: GitProvider, intent: Mapping[str, Any],
                     deployment: ModelDeployment, env: str, *, origin: str,
                     scaling: str | None = None) -> dict[str, str]:
    """The overlay of ``deployment`` in ``env`` re-rendered from ``intent`` for a proposal
    (`promoter rightsize`, `promoter forecast`), by repository path.

    A proposal builds no artifact, so it renders with what the overlay on the target branch
    pins (core.live_overlay): the signed image or modelcar, the lineage, and the accepted KEDA
    ScaledObject unless ``scaling`` replaces it. Without that overlay, or when it runs another
    version than ``deployment``, there is nothing to carry forward, and the proposal is refused.
    """
    root, branch = settings.git.manifests_dir.strip("/"), settings.git.target_branch
    name, version = deployment.name, deployment.spec.model.version
    live = live_overlay.read(provider, root, name, env, branch)
    if live is None:
        raise UserError(f"{tree_facts.overlay_kustomization(root, name, env)} is not on "
                        f"{branch}: a proposal keeps the artifact the overlay runs, and there "
                        "is none", hint=f"promote the model to {env} first")
    if live.version != version:
        hint = (f"use --version {live.version} (or an intent of that version), or promote "
                f"version {version} first" if live.version else
                f"promote version {version} to {env} again to re-render the overlay")
        raise UserError(f"{name} in {env} runs version {live.version or 'unknown'} on {branch}, "
                        f"not version {version}: a proposal keeps the artifact the overlay runs, "
                        "so it must be for that version", hint=hint)
    request = live_overlay.request(
        settings.targets(), intent, env, origin=origin, model=deployment.spec.model,
        pins=live.pins, scaling=live.scaled_object if scaling is None else scaling)
    overlay = f"{name}/overlays/{env}/"
    return {f"{root}/{path}": text for path, text in renderer(settings).render(request).items()
            if path.startswith(overlay)}


def write_tree(out: Path, files: Mapping[str, str]) -> list[Path]:
    """Write rendered files under ``out``, replacing the rendered directories whole.

    Refuses to touch a model directory that is not the rendered model's (core.tree_facts.
    base_owner, the pipeline's rule): one whose base kustomization names another registered
    model, or none (a directory promoter did not write, or one it cannot read). Stale files in
    the directories we render (say, an HPA patch after a runtime change) are removed so the
    tree matches the render.
    """
    directories = sorted({str(Path(path).parent) for path in files})
    for name in sorted({directory.split("/", 1)[0] for directory in directories}):
        _check_owner(out, name, [d for d in directories if d.split("/", 1)[0] == name], files)
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


def _check_owner(out: Path, name: str, directories: list[str],
                 files: Mapping[str, str]) -> None:
    """UserError, before anything is written or deleted, when writing ``directories`` (of
    deployment ``name``) would replace or delete files of a directory that is not the rendered
    model's. Directories holding no file yet are anyone's to write."""
    if not any(entry.is_file() for directory in directories if (out / directory).is_dir()
               for entry in (out / directory).iterdir()):
        return
    base = out / name / "base" / "kustomization.yaml"
    try:
        existing: bytes | None = base.read_bytes()
    except FileNotFoundError:
        existing = None
    except OSError as exc:
        raise UserError(f"cannot read {base}: {exc.strerror or exc}; refusing to write into "
                        f"{out / name}") from None
    theirs = tree_facts.base_owner(existing)
    ours = files.get(f"{name}/base/kustomization.yaml")
    mine = tree_facts.base_owner(ours)
    if theirs is None:
        why = (f"it has no {base.relative_to(out)}" if existing is None else
               f"its {base.relative_to(out)} names no {tree_facts.REGISTERED_MODEL} promoter "
               f"could read")
        raise UserError(f"{out / name} is {tree_facts.FOREIGN_DIRECTORY} ({why}); refusing to "
                        "replace or delete its files",
                        hint="render into another --out directory, or move that one away")
    if ours is not None and theirs != mine:
        raise UserError(f"{out / name} already holds model {theirs!r}; refusing to overwrite it "
                        f"with {mine!r}", hint="give one of them a distinct metadata.name")


def _first_line(exc: Exception) -> str:
    return " ".join(str(exc).split())[:300]
