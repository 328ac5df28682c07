"""The promoter.yaml section for `promoter serve` (``server:``): its listeners, the limits that
keep slow or hostile clients from holding them, and the job worker's lease and time limit."""

from __future__ import annotations

from pydantic import Field

from promoter.core.jobs import JOB_TIMEOUT_SECONDS
from promoter.settings_section import Section as _Section


class ServerSettings(_Section):
    burst_settle_seconds: float = Field(
        default=0.5, ge=0, le=60,
        description="a job waiting behind a running one starts after this long without events")
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    probe_port: int | None = Field(
        default=None, ge=1, le=65535, description="a second listener for GET /healthz, /readyz "
        "and /metrics only, outside the webhook port's connection cap (point the kubelet's "
        "probes and Prometheus here); none by default")
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    timestamp_tolerance_seconds: int = Field(
        default=300, ge=1, le=7 * 24 * 3600, description="an MLflow delivery signed longer ago "
        "(or ahead) than this is refused (401); at most a week, well inside the 14 days a "
        "delivery id is remembered, so a replay of a forgotten delivery is never accepted")
    reconcile_interval_seconds: int = Field(default=60, ge=0)
    job_lease_seconds: float = Field(
        default=60, ge=3, le=3600, description="a job whose worker stopped renewing its lease "
        "(a crashed replica) is taken over by another worker after this long")
    job_timeout_seconds: float = Field(
        default=JOB_TIMEOUT_SECONDS, ge=60, le=7 * 24 * 3600, description="a job attempt still "
        "running after this long is given up (retried, or dead after the last attempt), so a "
        "hung call cannot hold its deployment's queue; its worker thread stays taken until the "
        "call returns")
    request_timeout_seconds: float = Field(
        default=10, gt=0, le=3600, description="a request's headers and body must arrive within "
        "this long (from connect, or from the previous response); slower clients are cut off")
    keep_alive_seconds: int = Field(default=5, ge=1, le=3600,
                                    description="idle time before a kept-alive connection closes")
    max_connections: int = Field(default=100, ge=2, le=100_000,
                                 description="open connections at most; above, requests get 503")
    max_header_bytes: int = Field(default=16 * 1024, ge=1024, le=1024 * 1024,
                                  description="request line and headers at most; above, 400")
