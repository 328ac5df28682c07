"""Small hand-made Kustomize trees (base + overlay with a Deployment and a Service)."""

from __future__ import annotations

BASE_KUSTOMIZATION = """apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - deployment.yaml
  - service.yaml
"""

DEPLOYMENT = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  labels:
    app.kubernetes.io/name: {name}
spec:
  replicas: 1
  selector:
    matchLabels:
      app.kubernetes.io/name: {name}
  template:
    metadata:
      labels:
        app.kubernetes.io/name: {name}
    spec:
      containers:
        - name: model
          image: registry.example.test/models/{name}:v{version}
          ports:
            - containerPort: 8080
"""

SERVICE = """apiVersion: v1
kind: Service
metadata:
  name: {name}
spec:
  selector:
    app.kubernetes.io/name: {name}
  ports:
    - port: 80
      targetPort: 8080
"""

OVERLAY = """apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: models-{env}
resources:
  - ../../base
labels:
  - pairs:
      promoter.dev/version: "{version}"
"""

REPLICAS = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: {replicas}
"""


def rendered(name: str, env: str, version: str, *, replicas: int | None = None) -> dict[str, str]:
    """What the renderer would produce for one (deployment, env, version)."""
    base = f"manifests/{name}/base/"
    overlay = f"manifests/{name}/overlays/{env}/"
    files = {
        base + "kustomization.yaml": BASE_KUSTOMIZATION,
        base + "deployment.yaml": DEPLOYMENT.format(name=name, version=version),
        base + "service.yaml": SERVICE.format(name=name),
        overlay + "kustomization.yaml": OVERLAY.format(env=env, version=version),
    }
    if replicas is not None:
        files[overlay + "kustomization.yaml"] += "patches:\n  - path: replicas.yaml\n"
        files[overlay + "replicas.yaml"] = REPLICAS.format(name=name, replicas=replicas)
    return files


def managed_prefixes(name: str, env: str) -> tuple[str, ...]:
    return (f"manifests/{name}/overlays/{env}/",)
