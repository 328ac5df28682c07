"""`promoter rightsize` as a user runs it against the test Prometheus: one promoter.yaml for
every rightsize test (an A100 price, three MIG profiles in production), and the CLI's JSON."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.telemetry import traces


def write_config(tmp_path: Path, url: str, namespace: str) -> Path:
    config = tmp_path / "promoter.yaml"
    config.write_text(f"""\
prometheus: {{url: "{url}"}}
forecast: {{timezone: {traces.TZ_NAME}, requests_per_replica: 8}}
telemetry: {{gpu_hour_prices: {{NVIDIA-A100-SXM4-80GB: 3.0}}}}
environments:
  production:
    trigger: {{alias: production}}
    namespace: {namespace}
    mig_profiles: [1g.10gb, 2g.20gb, 3g.40gb]
""", encoding="utf-8")
    return config


def intent_yaml(name: str, *, team: str, runtime: str, gpu: str, min_replicas: int,
                max_replicas: int) -> str:
    """A deployment on A100s in production; ``gpu`` is the intent's gpu mapping, as YAML."""
    return f"""\
apiVersion: promoter.dev/v1alpha1
kind: ModelDeployment
metadata: {{name: {name}}}
spec:
  model: {{name: {name}, version: "1"}}
  owner: {{team: {team}, costCenter: cc-1}}
  runtime: {runtime}
  serving: {{platform: kubernetes}}
  resources: {{cpu: "8", memory: 64Gi, gpu: {gpu}}}
  scaling: {{minReplicas: {min_replicas}, maxReplicas: {max_replicas}, metric: cpu, target: 70}}
"""


def rightsize_json(run_cli: Any, config: Path, intent: Path, until: datetime) -> dict[str, Any]:
    """`promoter rightsize --output json` over the 8 days before ``until``."""
    code, out, err = run_cli("rightsize", "--intent", str(intent), "--env", "production",
                             "--config", str(config), "--days", "8", "--until",
                             until.isoformat(), "--output", "json")
    assert code == 0, err
    return json.loads(out)
