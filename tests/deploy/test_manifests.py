"""deploy/: promoter's own Kubernetes deployment. Each overlay builds with real Kustomize, every
object matches its schema, and the facts a platform team relies on hold in the built output:
non-root, read-only, no capabilities; probes on routes the app has; one replica on a volume for
SQLite, several on PostgreSQL; configuration promoter loads; secrets only by reference."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
from ruamel.yaml import YAML

from promoter.core.quantity import parse_quantity
from promoter.secret_settings import SECRET_VARIABLES
from promoter.service.app import create_app
from promoter.service.http_server import probe_app
from promoter.service.queue import JobQueue
from promoter.settings import load_settings
from tests.conftest import ROOT, cli_runner, requires_kubectl
from tests.deploy import built
from tests.deploy.pod import LocalPod, mount_of

pytestmark = requires_kubectl

KUBERNETES_VERSION = "1.32.0"  # the version promoter validate checks against
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor_v1.json",
    ("argoproj.io/v1alpha1", "Application"): "application_v1alpha1.json",
}
EXPECTED_KINDS = {"Namespace", "ServiceAccount", "ConfigMap", "Service", "Deployment",
                  "PodDisruptionBudget", "NetworkPolicy", "ServiceMonitor"}


def schema_problems(document: dict[str, Any]) -> list[str]:
    """Core kinds: kubernetes-validate (strict: unknown fields are errors); the two CRDs: the
    upstream schemas copied into tests/data/crds (see tests/data/PROVENANCE.md)."""
    crd = CRD_SCHEMAS.get((document.get("apiVersion"), document.get("kind")))
    if crd is not None:
        schema = json.loads((ROOT / "tests/data/crds" / crd).read_text())
        validator = jsonschema.validators.validator_for(schema)(schema)
        return [f"{list(error.absolute_path)}: {error.message}"
                for error in validator.iter_errors(document)]
    try:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
    except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError) as exc:
        return [str(exc)]
    return []


def labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


# --- builds and schemas ----------------------------------------------------------------------

@pytest.mark.parametrize("overlay", built.OVERLAYS)
def test_overlay_builds_and_every_object_matches_its_schema(overlay: str) -> None:
    documents = built.overlay(overlay)
    kinds = {document["kind"] for document in documents}
    extra = {"PersistentVolumeClaim"} if overlay == "sqlite" else set()
    assert kinds == EXPECTED_KINDS | extra
    for document in documents:
        assert schema_problems(document) == [], (document["kind"],
                                                 document["metadata"]["name"])
    namespaced = [d for d in documents if d["kind"] != "Namespace"]
    assert {d["metadata"].get("namespace") for d in namespaced} == {"promoter"}


def test_schema_checks_reject_broken_objects() -> None:
    monitor = built.one("postgresql", "ServiceMonitor")
    assert schema_problems({**monitor, "spec": {**monitor["spec"], "endpoints": "http"}})
    deployment = built.one("postgresql", "Deployment")
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["imagePullPolice"] = "Always"
    assert schema_problems(broken)


def test_promoter_validate_accepts_both_overlays_and_refuses_a_broken_one(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = cli_runner(capsys)
    code, out, err = run("validate", str(built.DEPLOY))
    assert code == 0, out + err
    assert "ok   " in out and "overlays/sqlite" in out and "overlays/postgresql" in out
    copy = tmp_path / "deploy"
    shutil.copytree(built.DEPLOY, copy)
    patch = copy / "overlays/postgresql/deployment-patch.yaml"
    patch.write_text(patch.read_text().replace("replicas: 3", "replicas: three"))
    code, out, err = run("validate", str(copy))
    assert code == 1
    assert "overlays/postgresql" in out + err and "replicas" in out + err


# --- pod security ----------------------------------------------------------------------------

@pytest.mark.parametrize("overlay", built.OVERLAYS)
def test_every_container_runs_non_root_read_only_without_capabilities(overlay: str) -> None:
    spec = built.pod_spec(overlay)
    pod = spec.get("securityContext", {})
    containers = spec["containers"] + spec.get("initContainers", [])
    assert containers
    for container in containers:
        own = container.get("securityContext", {})
        assert own.get("runAsNonRoot", pod.get("runAsNonRoot")) is True, container["name"]
        assert own.get("runAsUser", pod.get("runAsUser", 0)) != 0, container["name"]
        assert own.get("readOnlyRootFilesystem") is True, container["name"]
        assert own.get("allowPrivilegeEscalation") is False, container["name"]
        assert own.get("privileged", False) is False, container["name"]
        assert own.get("capabilities", {}).get("drop") == ["ALL"], container["name"]
        assert not own.get("capabilities", {}).get("add"), container["name"]
        seccomp = own.get("seccompProfile", pod.get("seccompProfile", {}))
        assert seccomp.get("type") == "RuntimeDefault", container["name"]
        resources = container.get("resources", {})
        assert {"cpu", "memory"} <= set(resources.get("requests", {})), container["name"]
        assert "memory" in resources.get("limits", {}), container["name"]
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]], "/tmp must be writable (an emptyDir)"
    assert spec.get("automountServiceAccountToken") is False
    account = built.one(overlay, "ServiceAccount")
    assert account["automountServiceAccountToken"] is False
    assert spec["serviceAccountName"] == account["metadata"]["name"]
    namespace = built.one(overlay, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("overlay", built.OVERLAYS)
def test_unready_pods_never_block_a_node_drain(overlay: str) -> None:
    """/readyz fails while deliveries cannot be stored; with the default policy
    (IfHealthyBudget) a budget short of healthy pods would then refuse every eviction."""
    budget = built.one(overlay, "PodDisruptionBudget")
    assert budget["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


@pytest.mark.parametrize("overlay", built.OVERLAYS)
def test_temporary_files_go_to_a_scratch_volume_sized_for_models(overlay: str) -> None:
    """Builds download the model and pip installs its requirements through temporary
    directories (tempfile and pip honour TMPDIR): those must not land in the 1 GiB /tmp, and
    the container's ephemeral-storage limit must cover every emptyDir it can fill."""
    spec, container = built.pod_spec(overlay), built.container(overlay)
    tmpdir = built.env(overlay)["TMPDIR"]["value"]
    found = mount_of(spec, container, tmpdir)
    assert found is not None, f"TMPDIR {tmpdir} is on no mounted volume"
    volume, _ = found
    assert parse_quantity(volume["emptyDir"]["sizeLimit"]) >= parse_quantity("50Gi"), volume
    empty_dirs = sum(parse_quantity(v["emptyDir"].get("sizeLimit", "0"))
                     for v in spec["volumes"] if v.get("emptyDir") is not None)
    limit = parse_quantity(container["resources"]["limits"]["ephemeral-storage"])
    assert limit >= empty_dirs, (limit, empty_dirs)


# --- probes, ports and routes ----------------------------------------------------------------

def app_routes(tmp_path: Path, *, probes: bool = False) -> dict[str, set[str]]:
    """The route table of promoter's real ASGI app (``probes``: of the probe listener's app):
    path → methods."""
    settings = load_settings(None, environ={"PROMOTER_STATE_DIR": str(tmp_path / "state")})
    queue = JobQueue.open(settings.state_dir)
    try:
        app = create_app(settings, queue)
        if probes:
            app = probe_app(app)
        return {route.path: set(route.methods or ()) for route in app.routes}  # type: ignore[attr-defined]
    finally:
        queue.close()


@pytest.mark.parametrize("overlay", built.OVERLAYS)
def test_probes_and_scrape_path_are_get_routes_of_the_probe_listener(
        overlay: str, tmp_path: Path) -> None:
    """Probes and the ServiceMonitor reach the probe listener (--probe-port), outside the
    webhook port's connection cap; webhooks stay on the serving port."""
    routes = app_routes(tmp_path, probes=True)
    container = built.container(overlay)
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    probes = {kind: container[kind]["httpGet"]
              for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert probes["livenessProbe"]["path"] == "/healthz"
    assert probes["readinessProbe"]["path"] == "/readyz"
    for kind, probe in probes.items():
        assert "GET" in routes.get(probe["path"], set()), (kind, probe["path"], sorted(routes))
        assert ports.get(probe["port"], probe["port"]) == ports["probes"], kind
    args = container["args"]
    assert args[0] == "serve"
    assert args[args.index("--host") + 1] == "0.0.0.0"
    assert int(args[args.index("--port") + 1]) == ports["http"]
    assert int(args[args.index("--probe-port") + 1]) == ports["probes"]
    assert "/webhooks/mlflow" in app_routes(tmp_path) and "/webhooks/mlflow" not in routes

    service = built.one(overlay, "Service")
    pod_labels = built.one(overlay, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert labels_match(service["spec"]["selector"], pod_labels)
    service_ports = {port["name"]: port for port in service["spec"]["ports"]}
    monitor = built.one(overlay, "ServiceMonitor")
    assert labels_match(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    for endpoint in monitor["spec"]["endpoints"]:
        assert "GET" in routes.get(endpoint["path"], set()), endpoint
        target = service_ports[endpoint["port"]]["targetPort"]
        assert ports.get(target, target) == ports["probes"]


def test_route_check_notices_a_path_the_app_does_not_have(tmp_path: Path) -> None:
    routes = app_routes(tmp_path)
    assert {"/healthz", "/readyz", "/metrics", "/webhooks/mlflow"} <= set(routes)
    assert "/health" not in routes and "/ready" not in routes


# --- the two topologies ----------------------------------------------------------------------

def state_volume(overlay: str) -> dict[str, Any]:
    state_dir = built.env(overlay)["PROMOTER_STATE_DIR"]["value"]
    mounts = {m["mountPath"]: m["name"] for m in built.container(overlay)["volumeMounts"]}
    volumes = {v["name"]: v for v in built.pod_spec(overlay)["volumes"]}
    return dict(volumes[mounts[state_dir]])


def test_sqlite_overlay_is_one_replica_with_its_state_on_a_volume_claim() -> None:
    deployment = built.one("sqlite", "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    (claim,) = built.objects("sqlite", "PersistentVolumeClaim")
    volume = state_volume("sqlite")
    assert set(volume) == {"name", "persistentVolumeClaim"}  # the base's emptyDir is gone
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    budget = built.one("sqlite", "PodDisruptionBudget")["spec"]
    assert budget.get("maxUnavailable", 0) >= 1 or budget.get("minAvailable") == 0, \
        "a one-replica budget must still let a node drain"


def test_postgresql_overlay_runs_replicas_without_a_volume_claim_and_the_url_from_a_secret(
        ) -> None:
    deployment = built.one("postgresql", "Deployment")
    replicas = deployment["spec"]["replicas"]
    assert replicas >= 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert built.objects("postgresql", "PersistentVolumeClaim") == []
    assert not any("persistentVolumeClaim" in v for v in built.pod_spec("postgresql")["volumes"])
    assert "emptyDir" in state_volume("postgresql")
    environment = built.env("postgresql")
    url = environment["PROMOTER_STATE_URL"]
    assert "value" not in url
    reference = url["valueFrom"]["secretKeyRef"]
    assert reference["name"] and reference["key"]
    assert environment["PROMOTER_STATE_PASSWORD_FILE"]["value"].startswith("/")
    budget = built.one("postgresql", "PodDisruptionBudget")["spec"]
    available = budget.get("minAvailable", replicas - budget.get("maxUnavailable", replicas))
    assert 2 <= available < replicas, budget
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    spread = {c["topologyKey"]: c for c in deployment["spec"]["template"]["spec"]
              ["topologySpreadConstraints"]}
    assert labels_match(spread["kubernetes.io/hostname"]["labelSelector"]["matchLabels"],
                        pod_labels)
    assert "topology.kubernetes.io/zone" in spread


def test_postgresql_password_file_is_an_item_of_a_mounted_secret(tmp_path: Path) -> None:
    pod = LocalPod("postgresql", tmp_path)
    path = built.env("postgresql")["PROMOTER_STATE_PASSWORD_FILE"]["value"]
    assert pod.secret_file(path).is_file()
    with pytest.raises(AssertionError):
        pod.secret_file("/etc/promoter/postgresql/not-an-item")


@pytest.mark.parametrize("overlay", built.OVERLAYS)
def test_disruption_budget_and_network_policy_select_the_pods(overlay: str) -> None:
    pod_labels = built.one(overlay, "Deployment")["spec"]["template"]["metadata"]["labels"]
    budget = built.one(overlay, "PodDisruptionBudget")
    assert labels_match(budget["spec"]["selector"]["matchLabels"], pod_labels)
    policy = built.one(overlay, "NetworkPolicy")
    assert labels_match(policy["spec"]["podSelector"]["matchLabels"], pod_labels)


@pytest.mark.parametrize("overlay", built.OVERLAYS)
def test_network_policy_lets_webhooks_and_prometheus_in_and_promoter_out(overlay: str) -> None:
    spec = built.one(overlay, "NetworkPolicy")["spec"]
    assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
    ports = {p["name"]: p["containerPort"] for p in built.container(overlay)["ports"]}
    sources: dict[int, list[dict[str, Any]]] = {}
    for rule in spec["ingress"]:
        assert len(rule["ports"]) == 1
        sources.setdefault(rule["ports"][0]["port"], []).extend(rule["from"])
    assert set(sources) == {ports["http"], ports["probes"]}

    def names(peers: list[dict[str, Any]], key: str, label: str) -> set[str | None]:
        return {peer.get(key, {}).get("matchLabels", {}).get(label) for peer in peers}

    # Webhook senders reach the webhook port; only Prometheus reaches /metrics on the probes'.
    assert {"mlflow", "argocd"} <= names(sources[ports["http"]], "namespaceSelector",
                                         "kubernetes.io/metadata.name")
    assert names(sources[ports["probes"]], "namespaceSelector",
                 "kubernetes.io/metadata.name") == {"monitoring"}
    assert names(sources[ports["probes"]], "podSelector",
                 "app.kubernetes.io/name") == {"prometheus"}
    egress = {(port.get("protocol", "TCP"), port["port"])
              for rule in spec["egress"] for port in rule.get("ports", [])}
    mlflow = urlsplit(YAML(typ="safe").load(built.config_text(overlay))["mlflow"]["tracking_uri"])
    assert {("UDP", 53), ("TCP", 53), ("TCP", 443), ("TCP", 5432),
            ("TCP", mlflow.port or 443)} <= egress


# --- configuration -------------------------------------------------------------------------

def absolute_paths(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [path for item in value.values() for path in absolute_paths(item)]
    if isinstance(value, list):
        return [path for item in value for path in absolute_paths(item)]
    return [value] if isinstance(value, str) and value.startswith("/") else []


@pytest.mark.parametrize("overlay", built.OVERLAYS)
def test_config_map_loads_with_promoters_settings_loader(overlay: str, tmp_path: Path) -> None:
    pod = LocalPod(overlay, tmp_path)
    environ = pod.environment()
    config = Path(environ["PROMOTER_CONFIG"])
    assert config.is_file(), "PROMOTER_CONFIG names no file of the mounted ConfigMap"
    settings = load_settings(None, environ=environ)
    assert settings.state_dir == Path(environ["PROMOTER_STATE_DIR"])
    assert settings.git.provider == "gitlab"
    assert settings.argocd.webhook_url == "http://promoter.promoter.svc:8080/webhooks/argocd"
    assert {name for name in SECRET_VARIABLES if settings.secret(name)} >= {
        "PROMOTER_MLFLOW_WEBHOOK_SECRET", "PROMOTER_GITLAB_TOKEN",
        "PROMOTER_GITLAB_WEBHOOK_TOKEN", "PROMOTER_ARGOCD_WEBHOOK_SECRET", "COSIGN_PASSWORD"}
    # Every file promoter.yaml names is on a volume the container mounts (and an item of it).
    raw = YAML(typ="safe").load(built.config_text(overlay))
    paths = absolute_paths(raw)
    assert {"/etc/promoter/registry/config.json", "/etc/promoter/secrets/cosign.key"} <= set(paths)
    for path in paths:
        pod.secret_file(path)


def test_settings_loader_refuses_the_config_map_with_a_secret_in_it(tmp_path: Path) -> None:
    from promoter.errors import ConfigError

    pod = LocalPod("sqlite", tmp_path)
    environ = pod.environment()
    config = Path(environ["PROMOTER_CONFIG"])
    config.write_text(config.read_text().replace("  project: platform/gitops",
                                                 "  project: platform/gitops\n    token: x"))
    with pytest.raises(ConfigError, match="looks like a secret"):
        load_settings(None, environ=environ)


# --- no secret values in deploy/ -------------------------------------------------------------

SECRET_PATTERNS = {
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "GitLab token": re.compile(r"\bglpat-[0-9A-Za-z_-]{10,}"),
    "credentials in a URL": re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@"),
    # 24+ characters of base64/hex alphabet with a digit and a lower-case letter, standing
    # alone (not part of a path or an upper-case variable name)
    "random-looking string": re.compile(
        r"(?<![\w/.-])(?=[A-Za-z0-9+/=_-]*\d)(?=[A-Za-z0-9+/=_-]*[a-z])"
        r"[A-Za-z0-9+/=_-]{24,}(?![\w/.-])"),
    "Secret object": re.compile(r"^kind:\s*Secret\s*$", re.M),
    "secret data": re.compile(r"^\s*(stringData|\.dockerconfigjson):\s*\S", re.M),
}
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|STATE_URL|_KEY$")


def text_findings(text: str) -> list[str]:
    return [name for name, pattern in SECRET_PATTERNS.items() if pattern.search(text)]


def env_findings(deployment: dict[str, Any]) -> list[str]:
    """Secret-looking variables must come from a Secret (secretKeyRef) or name a file in one."""
    spec = deployment["spec"]["template"]["spec"]
    findings = []
    for container in spec["containers"] + spec.get("initContainers", []):
        for entry in container.get("env", []):
            name = entry["name"]
            bare = name.removesuffix("_FILE")
            if bare not in SECRET_VARIABLES and not SECRET_NAME.search(bare):
                continue
            if name.endswith("_FILE") and "value" in entry:
                found = mount_of(spec, container, entry["value"])
                if found is None or "secret" not in found[0]:
                    findings.append(f"{name} names no file of a mounted Secret")
            elif "secretKeyRef" not in entry.get("valueFrom", {}):
                findings.append(f"{name} is not from a secretKeyRef")
    return findings


def test_deploy_holds_no_secret_values() -> None:
    files = [path for path in built.DEPLOY.rglob("*") if path.is_file()]
    assert len(files) >= 15
    findings = {str(path.relative_to(ROOT)): text_findings(path.read_text()) for path in files}
    assert {path: found for path, found in findings.items() if found} == {}
    for overlay in built.OVERLAYS:
        assert env_findings(built.one(overlay, "Deployment")) == []
        assert not built.objects(overlay, "Secret")


@pytest.mark.parametrize("planted", [
    "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----",
    "token: glpat-AbCdEfGhIjKlMnOpQrSt",
    "url: postgresql://promoter:hunter2@db:5432/promoter",
    "secret: 3q2+7w7K9dGh0c2VjcmV0dmFsdWVpc2hlcmU=",
    "webhook: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "kind: Secret",
    "stringData: {token: x}",
])
def test_secret_scan_finds_a_planted_secret(planted: str) -> None:
    assert text_findings(f"# a manifest\n{planted}\n")


def test_env_scan_finds_a_literal_secret_value(tmp_path: Path) -> None:
    copy = tmp_path / "deploy"
    shutil.copytree(built.DEPLOY, copy)
    patch = copy / "overlays/postgresql/deployment-patch.yaml"
    text = patch.read_text()
    start = text.index("            - name: PROMOTER_STATE_URL")
    end = text.index("            - name: PROMOTER_STATE_PASSWORD_FILE")
    patch.write_text(text[:start] + "            - name: PROMOTER_STATE_URL\n"
                     "              value: postgresql://db/promoter\n" + text[end:])
    documents = built.kustomize(copy / "overlays/postgresql")
    deployment = next(d for d in documents if d["kind"] == "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    url = next(e for e in container["env"] if e["name"] == "PROMOTER_STATE_URL")
    assert url == {"name": "PROMOTER_STATE_URL", "value": "postgresql://db/promoter"}
    assert env_findings(deployment) == ["PROMOTER_STATE_URL is not from a secretKeyRef"]
    container["env"].append({"name": "PROMOTER_GITLAB_TOKEN_FILE", "value": "/tmp/token"})
    assert "PROMOTER_GITLAB_TOKEN_FILE names no file of a mounted Secret" in \
        env_findings(deployment)


# --- the image -------------------------------------------------------------------------------

@pytest.mark.parametrize("overlay", built.OVERLAYS)
def test_containerfile_user_is_the_deployments_run_as_user(overlay: str) -> None:
    uid, gid = built.containerfile_user()
    pod = built.pod_spec(overlay)["securityContext"]
    assert uid == pod["runAsUser"] != 0
    assert gid == pod["runAsGroup"] == pod["fsGroup"]
    assert built.containerfile_useradd_uid() == uid


def test_containerfile_user_parsing_notices_a_different_uid(tmp_path: Path) -> None:
    other = tmp_path / "Containerfile"
    other.write_text(built.CONTAINERFILE.read_text().replace("USER 10001:10001", "USER 1000"))
    assert built.containerfile_user(other) == (1000, None)
    rooted = tmp_path / "Rootfile"
    rooted.write_text("FROM python:3.11-slim\nRUN true\n")
    with pytest.raises(AssertionError, match="no USER"):
        built.containerfile_user(rooted)


def test_containerfile_builds_promoter_from_this_tree_on_python_slim() -> None:
    instructions = built.containerfile_instructions()
    arguments = {keyword: [a for k, a in instructions if k == keyword]
                 for keyword, _ in instructions}
    base = next(a for a in arguments["ARG"] if a.startswith("BASE="))
    assert "python:3.11-slim" in base and arguments["FROM"] == ["${BASE}"]
    for copy in arguments["COPY"]:
        *sources, _ = copy.split()
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
    assert any("pip install /src" in run for run in arguments["RUN"])
    assert json.loads(arguments["ENTRYPOINT"][0]) == ["promoter"]
    assert json.loads(arguments["CMD"][0]) == built.container("sqlite")["args"]
    # kubectl for `promoter validate`: the release the CI gate pins.
    ci = YAML(typ="safe").load((ROOT / ".gitlab-ci.yml").read_text())
    kubectl = next(a for a in arguments["ARG"] if a.startswith("KUBECTL_VERSION="))
    assert kubectl.split("=", 1)[1] == ci[".gitops-tools"]["variables"]["KUBECTL_VERSION"]


# --- Argo CD ---------------------------------------------------------------------------------

APPLICATION = built.DEPLOY / "argocd/application.yaml"


def test_argocd_application_matches_its_schema_and_deploys_the_postgresql_overlay() -> None:
    application = YAML(typ="safe").load(APPLICATION.read_text())
    assert (application["apiVersion"], application["kind"]) == ("argoproj.io/v1alpha1",
                                                                 "Application")
    assert schema_problems(application) == []
    source = application["spec"]["source"]
    assert source["path"] == "deploy/overlays/postgresql"
    directory = ROOT / source["path"]
    assert (directory / "kustomization.yaml").is_file()
    assert built.kustomize(directory) == built.overlay("postgresql")
    assert application["spec"]["destination"]["namespace"] == \
        built.one("postgresql", "Deployment")["metadata"]["namespace"]
    assert application["spec"]["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}


def test_application_schema_rejects_a_broken_application() -> None:
    application = YAML(typ="safe").load(APPLICATION.read_text())
    application["spec"]["source"]["path"] = ["deploy", "overlays"]
    assert schema_problems(application)
    del application["spec"]["destination"]
    assert any("destination" in problem for problem in schema_problems(application))
