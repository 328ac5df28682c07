"""The demo's embedded defaults: MLflow on sqlite, an OCI registry (or an OCI layout), keys,
secrets and a promoter.yaml, all under ``<state_dir>/demo`` (jobs, ledger and the local git
remote are promoter's own state, in ``state_dir``). Everything is reused by the next run:
services found running are kept, files found on disk are kept.

Addresses stay stable across restarts (``--stop``, a reboot): each service's port is recorded
in ``ports.json`` and taken again when it is free. When another process holds it, the service
moves to a new port and the configuration follows; the flow then notices that the recorded
image names an address that is gone (or is missing from the registry) and promotes again.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from promoter.service.composition import background_service, free_port
from promoter.settings import Settings, load_settings
from promoter.state.db import ensure_state_dir

WEBHOOK_EVENTS_NOTE = "MLflow calls promoter on loopback: http and private IPs are allowed"


@dataclass(frozen=True)
class DemoEnvironment:
    directory: Path
    config: Path
    mlflow_url: str
    registry_url: str | None     # None: images go to an OCI layout directory
    serve_url: str
    environ: dict[str, str]      # the secrets as *_FILE variables, for child processes
    reused: list[str] = field(default_factory=list)   # services found running
    moved: list[str] = field(default_factory=list)    # "registry: port 5000 is taken → 5001"

    def settings(self) -> Settings:
        return load_settings(self.config, environ={**os.environ, **self.environ})


def _secret_file(path: Path, make: str) -> Path:
    if not path.exists():
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(make)
    return path


def _keys(directory: Path, password: str) -> tuple[Path, Path]:
    from promoter.signing.keys import generate_key_pair

    private, public = directory / "cosign.key", directory / "cosign.pub"
    if not (private.exists() and public.exists()):
        private_pem, public_pem = generate_key_pair(password)
        descriptor = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(private_pem)
        public.write_bytes(public_pem)
    return private, public


class _Ports:
    """The port each service had last time (``ports.json``), taken again while it is free."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "ports.json"
        try:
            self.recorded: dict[str, int] = {
                str(k): int(v) for k, v in json.loads(self.path.read_text()).items()}
        except (OSError, ValueError, AttributeError):
            self.recorded = {}
        self.moved: list[str] = []

    def take(self, name: str) -> int:
        before = self.recorded.get(name)
        port = free_port(before)
        if before is not None and port != before:
            self.moved.append(f"{name}: port {before} is taken by another process → {port}")
        self.keep(name, port)
        return port

    def keep(self, name: str, port: int) -> None:
        self.recorded[name] = port
        self.path.write_text(json.dumps(self.recorded, indent=2, sort_keys=True) + "\n")


def _mlflow(directory: Path, ports: _Ports, reused: list[str]) -> str:
    service = background_service("mlflow", directory)
    found = service.running()
    if found:
        reused.append("mlflow")
        ports.keep("mlflow", int(str(found["port"])))
        return str(found["url"])
    key = _secret_file(directory / "mlflow-fernet.key", _fernet_key()).read_text().strip()
    port = ports.take("mlflow")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMOTER_")}
    env.update(MLFLOW_WEBHOOK_ALLOWED_SCHEMES="http,https", MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS="true",
               MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY=key, MLFLOW_WEBHOOK_CACHE_TTL="1")
    info = service.start([
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{directory / 'mlflow.db'}",
        "--artifacts-destination", str(directory / "mlflow-artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ], port=port, health=f"http://127.0.0.1:{port}/health", env=env)
    return str(info["url"])


def _fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


def _registry(directory: Path, ports: _Ports, reused: list[str]) -> str | None:
    binary = shutil.which("docker-registry")
    if binary is None:
        return None
    service = background_service("registry", directory)
    found = service.running()
    if found:
        reused.append("registry")
        ports.keep("registry", int(str(found["port"])))
        return str(found["url"])
    port = ports.take("registry")
    config = directory / "registry.yml"
    config.write_text(
        "version: 0.1\n"
        f"storage: {{filesystem: {{rootdirectory: {directory / 'registry-data'}}}, "
        "delete: {enabled: true}}\n"
        f"http: {{addr: 127.0.0.1:{port}}}\n")
    info = service.start([binary, "serve", str(config)], port=port,
                         health=f"http://127.0.0.1:{port}/v2/")
    return str(info["url"])


def _write_config(directory: Path, state_dir: Path, mlflow_url: str, registry_url: str | None,
                  serve_port: int) -> Path:
    from ruamel.yaml import YAML

    # No base image: the demo's serving image has no Python and is not runnable as a
    # container (the demo says so); image.demo allows that here and nowhere else.
    image: dict[str, object] = {"demo": True}
    if registry_url:
        image["repository"] = registry_url.removeprefix("http://") + "/models/{name}"
        image["signing_key"] = str(directory / "cosign.key")
        image["verification_key"] = str(directory / "cosign.pub")
    else:  # no registry to hold a signature: the layout's images go unsigned (the demo says so)
        image["repository"] = "localhost/models/{name}"
        image["oci_layout"] = str(directory / "oci-layout")
    config = {
        "apiVersion": "promoter.dev/v1alpha1", "kind": "PromoterConfig",
        "state_dir": str(state_dir),
        "mlflow": {"tracking_uri": mlflow_url, "ui_url": mlflow_url},
        "environments": {
            "staging": {"trigger": {"alias": "staging", "stage": "Staging"},
                        "namespace": "models-staging", "approvals": 1},
            "production": {"trigger": {"alias": "production", "stage": "Production"},
                           "namespace": "models-production", "approvals": 1,
                           "cluster_selector": {"gpu": "true", "env": "production"}},
        },
        "image": image,
        "git": {"provider": "local"},  # bare remote <state_dir>/gitops.git, made on first use
        "server": {"host": "127.0.0.1", "port": serve_port, "reconcile_interval_seconds": 30},
        "policy": {"required_tags": {"validation_status": "passed"}},
    }
    path = directory / "promoter.yaml"
    with path.open("w") as handle:
        handle.write("# Written by `promoter demo`; use it with --config for mr/jobs commands.\n")
        YAML(typ="safe", pure=True).dump(config, handle)
    return path


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def demo_directory(state_dir: Path) -> Path:
    return state_dir / "demo"


def start(state_dir: Path) -> DemoEnvironment:
    directory = demo_directory(ensure_state_dir(state_dir))  # owner-only, like the rest
    directory.mkdir(parents=True, exist_ok=True)
    webhook_secret = _secret_file(directory / "webhook.secret", secrets.token_urlsafe(32))
    password_file = _secret_file(directory / "cosign.password", secrets.token_urlsafe(24))
    _keys(directory, password_file.read_text())
    ports, reused = _Ports(directory), list[str]()
    mlflow_url = _mlflow(directory, ports, reused)
    registry_url = _registry(directory, ports, reused)
    serve = background_service("serve", directory)
    running = serve.running()
    if running:
        reused.append("serve")
        port = int(str(running["port"]))
        ports.keep("serve", port)
    else:
        port = ports.take("serve")
    # The demo's jobs, ledger and git remote stay in state_dir itself: PROMOTER_STATE_DIR,
    # when set, overrides the config's state_dir for every command the user runs next.
    before = _read(directory / "promoter.yaml")
    config = _write_config(directory, state_dir, mlflow_url, registry_url, port)
    if running is not None and config.read_text() != before:
        # MLflow or the registry moved while serve ran: it must read the new addresses.
        serve.stop()
        reused.remove("serve")
        running = None
    environ = {"PROMOTER_MLFLOW_WEBHOOK_SECRET_FILE": str(webhook_secret),
               "COSIGN_PASSWORD_FILE": str(password_file)}
    if running is None:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PROMOTER_", "MLFLOW_", "COSIGN_"))}
        env.update(environ)
        serve.start([sys.executable, "-m", "promoter", "--config", str(config), "serve",
                     "--port", str(port)], port=port,
                    health=f"http://127.0.0.1:{port}/healthz", env=env)
    return DemoEnvironment(directory, config, mlflow_url, registry_url,
                           f"http://127.0.0.1:{port}", environ, reused, ports.moved)


def stop(state_dir: Path) -> list[str]:
    directory = demo_directory(state_dir)
    return [name for name in ("serve", "registry", "mlflow")
            if background_service(name, directory).stop()]


def reset(state_dir: Path) -> tuple[list[str], bool]:
    """Stop the services and remove everything the demo made. → (stopped, removed)."""
    stopped = stop(state_dir)
    directory = demo_directory(state_dir)
    if not directory.exists():
        return stopped, False
    shutil.rmtree(directory)
    return stopped, True
