from __future__ import annotations

from pathlib import Path

import pytest

from promoter.errors import ConfigError
from promoter.settings import load_settings
from tests.conftest import EXAMPLES


def test_embedded_defaults_without_a_file() -> None:
    settings = load_settings(None, environ={})
    assert settings.environments["production"].trigger.alias == "production"
    assert settings.environments["staging"].trigger.alias == "staging"
    assert settings.git.provider == "local"


def test_sample_configuration_loads() -> None:
    settings = load_settings(EXAMPLES / "promoter.yaml", environ={})
    assert settings.environments["production"].approvals == 2
    assert settings.policy.required_tags == {"validation_status": "passed"}


def test_config_path_from_environment_and_env_overrides(tmp_path: Path) -> None:
    environ = {"PROMOTER_CONFIG": str(EXAMPLES / "promoter.yaml"),
               "MLFLOW_TRACKING_URI": "http://127.0.0.1:9", "PROMOTER_STATE_DIR": str(tmp_path),
               "PROMOTER_GITLAB_URL": "https://gitlab.example.com"}
    settings = load_settings(None, environ=environ)
    assert settings.mlflow.tracking_uri == "http://127.0.0.1:9"
    assert settings.state_dir == tmp_path
    assert settings.git.provider == "local"  # the file says local explicitly: it wins
    assert load_settings(None, environ={"PROMOTER_GITLAB_URL": "https://gitlab.example.com"}
                         ).git.provider == "gitlab"


def test_every_wrong_dotted_path_in_one_message(tmp_path: Path) -> None:
    config = tmp_path / "promoter.yaml"
    config.write_text("""
environments:
  production:
    trigger: {}
    namespace: Bad_NS
    colour: blue
defaults:
  resources: {cpu: lots, memory: 2Gi}
  flavour: x
server: {port: 0}
surprise: 1
""")
    with pytest.raises(ConfigError) as caught:
        load_settings(config, environ={})
    message = str(caught.value)
    for path in ("environments.production.trigger", "environments.production.namespace",
                 "environments.production.colour", "defaults.resources.cpu", "defaults.flavour",
                 "server.port", "surprise"):
        assert f"  {path}:" in message, (path, message)


def test_secrets_only_from_environment_or_files(tmp_path: Path) -> None:
    config = tmp_path / "promoter.yaml"
    config.write_text("git:\n  gitlab:\n    token: glpat-should-not-be-here\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(config, environ={})
    assert "git.gitlab.token looks like a secret" in str(caught.value)
    assert "glpat-should-not-be-here" not in str(caught.value)
    token_file = tmp_path / "token"
    token_file.write_text("glpat-from-file\n")
    settings = load_settings(None, environ={"PROMOTER_GITLAB_TOKEN_FILE": str(token_file),
                                            "COSIGN_PASSWORD": "pw"})
    token = settings.secret("PROMOTER_GITLAB_TOKEN")
    assert token is not None and token.reveal() == "glpat-from-file"
    assert "glpat-from-file" not in repr(settings) and "glpat" not in str(token)


def test_an_empty_secret_variable_gives_way_to_its_file(tmp_path: Path) -> None:
    """A Deployment that sets NAME="" beside NAME_FILE means the file, as every other
    override treats an empty variable as unset; the empty value won, and GitLab calls went
    out with an empty token."""
    token_file = tmp_path / "token"
    token_file.write_text("glpat-from-file\n")
    settings = load_settings(None, environ={"PROMOTER_GITLAB_TOKEN": "",
                                            "PROMOTER_GITLAB_TOKEN_FILE": str(token_file)})
    token = settings.secret("PROMOTER_GITLAB_TOKEN")
    assert token is not None and token.reveal() == "glpat-from-file"


def test_an_empty_cosign_password_is_a_password_and_other_empty_secrets_are_unset(
        tmp_path: Path) -> None:
    """COSIGN_PASSWORD="" is cosign's "no password" and was dropped as unset. It is a value
    now; beside COSIGN_PASSWORD_FILE the file still wins, and an empty token or webhook
    secret (which authenticates nothing) still counts as unset."""
    settings = load_settings(None, environ={"COSIGN_PASSWORD": "", "PROMOTER_GITLAB_TOKEN": "",
                                            "PROMOTER_MLFLOW_WEBHOOK_SECRET": ""})
    password = settings.secret("COSIGN_PASSWORD")
    assert password is not None and password.reveal() == ""
    assert settings.secret("PROMOTER_GITLAB_TOKEN") is None
    assert settings.secret("PROMOTER_MLFLOW_WEBHOOK_SECRET") is None
    assert "" not in settings.secret_values()  # the log redactor masks no empty string
    assert load_settings(None, environ={}).secret("COSIGN_PASSWORD") is None
    password_file = tmp_path / "password"
    password_file.write_text("from-file\n")
    settings = load_settings(None, environ={"COSIGN_PASSWORD": "",
                                            "COSIGN_PASSWORD_FILE": str(password_file)})
    password = settings.secret("COSIGN_PASSWORD")
    assert password is not None and password.reveal() == "from-file"


def test_a_tilde_in_the_state_directory_is_the_home_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """state.db was opened in $HOME/… (ensure_state_dir expanded "~") while the audit head
    was written to ./~/…, relative to the working directory: every audit write failed with
    FileNotFoundError. The setting is expanded once, from promoter.yaml or the environment."""
    from promoter.service.audit import AuditTrail

    home, elsewhere = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    elsewhere.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(elsewhere)
    config = tmp_path / "promoter.yaml"
    config.write_text("state_dir: ~/promstate\ntemplates_dir: ~/templates\n")
    settings = load_settings(config, environ={})
    assert settings.state_dir == home / "promstate"
    assert settings.templates_dir == home / "templates"
    assert load_settings(None, environ={"PROMOTER_STATE_DIR": "~/other"}).state_dir \
        == home / "other"
    trail = AuditTrail(settings.state_dir)
    trail.record("job.created", model="m", env="staging", version="1")
    assert trail.verify() is None and trail.head_path.parent == home / "promstate"
    assert not (elsewhere / "~").exists()


def test_credentials_in_the_mlflow_uri_stay_out_of_run_links_and_logs() -> None:
    """MLflow's client takes ``https://user:password@host``; run links in MR text are built
    on the tracking URI, and the service's logs mask every secret value."""
    settings = load_settings(None, environ={
        "MLFLOW_TRACKING_URI": "https://promoter:hunter2@mlflow.example.com:5000",
        "COSIGN_PASSWORD": "pw"})
    assert settings.pipeline_config().run_link_base == "https://mlflow.example.com:5000"
    assert sorted(settings.secret_values()) == ["hunter2", "pw"]
    plain = load_settings(None, environ={"MLFLOW_TRACKING_URI": "https://mlflow.example.com"})
    assert plain.pipeline_config().run_link_base == "https://mlflow.example.com"
    assert plain.secret_values() == []


@pytest.mark.parametrize(("remote", "credential"), [
    ("https://oauth2:glpat-s3cret@gitlab.example.com/g/x.git", "glpat-s3cret"),
    ("https://glpat-tok3n@gitlab.example.com/g/x.git", "glpat-tok3n")])
def test_the_credential_in_git_remote_is_a_secret_value(remote: str, credential: str) -> None:
    settings = load_settings(None, environ={"PROMOTER_GIT_REMOTE": remote})
    assert settings.secret_values() == [credential]
    assert load_settings(None, environ={
        "PROMOTER_GIT_REMOTE": "git@gitlab.example.com:g/x.git"}).secret_values() == []


@pytest.mark.parametrize(("url", "credential"), [
    ("https://promuser:PromS3cret@prom.example:9090", "PromS3cret"),
    ("https://prom.example:9090/?token=PromT0ken", "PromT0ken")])
def test_the_credential_in_prometheus_url_is_a_secret_value(url: str, credential: str) -> None:
    """So the log redactor and job reasons mask it wherever it is quoted."""
    settings = load_settings(None, environ={"PROMOTER_PROMETHEUS_URL": url})
    assert settings.secret_values() == [credential]
    assert load_settings(None, environ={
        "PROMOTER_PROMETHEUS_URL": "https://prom.example:9090/?max_tokens=3"}).secret_values() == []


@pytest.mark.parametrize("cluster_url", [
    "http://keda:PromS3cret@prometheus.monitoring:9090",
    "http://PromS3cret@prometheus.monitoring:9090",
    "http://prometheus.monitoring:9090/?token=PromS3cret"])
def test_credentials_in_prometheus_cluster_url_are_refused(tmp_path: Path,
                                                           cluster_url: str) -> None:
    """cluster_url becomes the serverAddress of a ScaledObject committed to the GitOps
    repository; the refusal names the key, not the value."""
    config = tmp_path / "promoter.yaml"
    config.write_text(f'prometheus: {{cluster_url: "{cluster_url}"}}\n')
    with pytest.raises(ConfigError, match=r"prometheus\.cluster_url must not carry "
                                          r"credentials") as caught:
        load_settings(config, environ={})
    assert "PromS3cret" not in str(caught.value)
    config.write_text('prometheus: {cluster_url: "http://prometheus.monitoring:9090"}\n')
    assert load_settings(config, environ={}).prometheus.cluster_url == \
        "http://prometheus.monitoring:9090"


def test_a_forecast_step_must_divide_the_hour(tmp_path: Path) -> None:
    """The hourly plan reads each hour's buckets; 45-minute buckets straddle hours."""
    config = tmp_path / "promoter.yaml"
    config.write_text("forecast: {step_minutes: 45}\n")
    with pytest.raises(ConfigError, match=r"forecast\.step_minutes.*must divide 60"):
        load_settings(config, environ={})
    config.write_text("forecast: {step_minutes: 20}\n")
    assert load_settings(config, environ={}).forecast.step_minutes == 20


def test_the_signature_time_tolerance_stays_inside_the_delivery_memory(tmp_path: Path) -> None:
    """A tolerance past the 14 days delivery ids are remembered would accept a replay of a
    forgotten delivery as new; a week is the most promoter takes."""
    config = tmp_path / "promoter.yaml"
    config.write_text(f"server: {{timestamp_tolerance_seconds: {15 * 24 * 3600}}}\n")
    with pytest.raises(ConfigError, match=r"server\.timestamp_tolerance_seconds"):
        load_settings(config, environ={})
    config.write_text(f"server: {{timestamp_tolerance_seconds: {7 * 24 * 3600}}}\n")
    assert load_settings(config, environ={}).server.timestamp_tolerance_seconds == 604800


@pytest.mark.parametrize("field", ["prometheus.url", "prometheus.cluster_url"])
def test_a_wrong_value_is_quoted_without_the_credential_in_it(tmp_path: Path,
                                                              field: str) -> None:
    """Settings errors quote the wrong value; a mistyped URL still holds its password."""
    section, key = field.split(".")
    config = tmp_path / "promoter.yaml"
    config.write_text(f"{section}: {{{key}: 'ftp://u:hunter2secret@prom:9090'}}\n")
    with pytest.raises(ConfigError) as refused:
        load_settings(config, environ={})
    assert field in str(refused.value)
    assert "hunter2secret" not in str(refused.value)


def test_an_artifact_root_that_would_hold_nothing_is_refused_at_start(tmp_path: Path) -> None:
    """A root the artifact_roots check cannot parse holds nothing: every promotion would be
    refused as 'outside mlflow.artifact_roots' with the cause nowhere in sight."""
    config = tmp_path / "promoter.yaml"
    config.write_text("mlflow: {artifact_roots: ['s3://ml-artifacts/', 's3://ml-artifacts/%2e']}\n")
    with pytest.raises(ConfigError, match=r"mlflow\.artifact_roots.*'s3://ml-artifacts/%2e' "
                                          r"is not a root: write a scheme"):
        load_settings(config, environ={})
    config.write_text("mlflow: {artifact_roots: ['mlflow-artifacts:', 's3://ml-artifacts',"
                      " 's3://ml-artifacts/team-a/', 'file:///srv/mlruns', 'dbfs:/models']}\n")
    assert len(load_settings(config, environ={}).mlflow.artifact_roots or ()) == 5


def test_an_environment_minimum_of_zero_replicas_is_refused_at_start(tmp_path: Path) -> None:
    """An intent needs minReplicas >= 1: a 0 default would make every intent of the
    environment invalid at its first promotion instead."""
    config = tmp_path / "promoter.yaml"
    config.write_text("environments:\n  staging:\n    trigger: {alias: staging}\n"
                      "    namespace: models-staging\n    replicas: {min: 0, max: 2}\n")
    with pytest.raises(ConfigError, match=r"environments\.staging\.replicas\.min"):
        load_settings(config, environ={})


def test_unreadable_or_non_mapping_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read configuration"):
        load_settings(tmp_path / "missing.yaml", environ={})
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(listing, environ={})


@pytest.mark.parametrize("key", ["signing_key", "verification_key"])
def test_an_oci_layout_with_a_signing_or_verification_key_is_refused(
        tmp_path: Path, key: str) -> None:
    """A layout holds no signature: rather than open MRs with unsigned images, say so."""
    config = tmp_path / "promoter.yaml"
    config.write_text(f"image:\n  oci_layout: {tmp_path / 'layout'}\n"
                      f"  {key}: {tmp_path / 'cosign.x'}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="nothing is signed or verified"):
        load_settings(config, environ={})
    config.write_text(f"image:\n  oci_layout: {tmp_path / 'layout'}\n", encoding="utf-8")
    assert load_settings(config, environ={}).image.oci_layout == tmp_path / "layout"


def test_a_runtime_image_must_be_pinned_by_digest_as_a_whole(tmp_path: Path) -> None:
    """The gate's own rule (core.image_refs): a trailing newline is not a pin."""
    pinned = "vllm/vllm-openai@sha256:" + "a" * 64
    config = tmp_path / "promoter.yaml"
    config.write_text(f'runtime_images: {{vllm: "{pinned}\\n"}}\n')
    with pytest.raises(ConfigError, match="is not pinned by digest"):
        load_settings(config, environ={})
    config.write_text(f"runtime_images: {{vllm: '{pinned}'}}\n")
    assert load_settings(config, environ={}).runtime_images["vllm"] == pinned


def test_image_platform_takes_a_variant_and_refuses_other_forms(tmp_path: Path) -> None:
    config = tmp_path / "promoter.yaml"
    config.write_text("image:\n  platform: linux/arm/v7\n")
    assert load_settings(config, environ={}).image.platform == "linux/arm/v7"
    config.write_text("image:\n  platform: linux/aarch64\n")  # uname -m's name, as containerd
    assert load_settings(config, environ={}).image.platform == "linux/arm64"
    config.write_text("image:\n  platform: linux-arm64\n")
    with pytest.raises(ConfigError, match=r"image\.platform: must be os/arch or "
                                          r"os/arch/variant in lowercase, e\.g\. linux/amd64"):
        load_settings(config, environ={})


@pytest.mark.parametrize(("policy", "says"), [
    ("{team_gpu_quota: {risk: 8}}", "need policy.teams"),
    ("{default_team_gpu_quota: 8}", "need policy.teams"),
    ("{team_gpu_quota: {risk: 8, rsik: 4}, teams: {risk: {}}}", "rsik not in policy.teams")])
def test_a_team_quota_needs_the_teams_it_can_hold_to(tmp_path: Path, policy: str,
                                                     says: str) -> None:
    """A quota is per team name, and the name is deploy.owner.team: without policy.teams
    (which denies an unlisted team) an owner names a new team and escapes the quota."""
    config = tmp_path / "promoter.yaml"
    config.write_text(f"policy: {policy}\n")
    with pytest.raises(ConfigError, match=says):
        load_settings(config, environ={})
    config.write_text("policy: {team_gpu_quota: {risk: 8}, default_team_gpu_quota: 2, "
                      "teams: {risk: {}, vision: {}}}\n")
    assert load_settings(config, environ={}).policy.default_team_gpu_quota == 2


@pytest.mark.parametrize(("labels", "says"), [
    ("{runtime: app.kubernetes.io/name}", "one of promoter's own labels"),
    ("{team: promoter.dev/team}", "one of promoter's own labels"),
    ("{team: owner, cost_center: owner}", "owner is the key of more than one role"),
    ("{runtime: app}", "app is the key of more than one role")])   # model's default key
def test_a_cost_label_key_may_not_overwrite_a_selector_or_another_role(
        tmp_path: Path, labels: str, says: str) -> None:
    """runtime -> app.kubernetes.io/name rendered the pod template's selector label as
    'deployment' while the selector said the model's name: apps/v1 refuses that Deployment."""
    config = tmp_path / "promoter.yaml"
    config.write_text(f"cost_labels: {labels}\n")
    with pytest.raises(ConfigError, match=says):
        load_settings(config, environ={})


def test_credentials_the_client_libraries_read_are_secret_values() -> None:
    """MLflow's client reads MLFLOW_TRACKING_TOKEN itself: an error quoting it was not masked
    in `serve`'s logs, as no redactor knew its value."""
    settings = load_settings(None, environ={"MLFLOW_TRACKING_TOKEN": "CANARY-mltok-1",
                                            "DATABRICKS_TOKEN": "dapi-CANARY",
                                            "MLFLOW_TRACKING_PASSWORD": ""})
    assert sorted(settings.secret_values()) == ["CANARY-mltok-1", "dapi-CANARY"]
