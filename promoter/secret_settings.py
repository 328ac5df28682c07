"""Secrets: read only from environment variables or the files they name (``<VAR>_FILE``),
never from promoter.yaml, and never shown in repr, logs or tracebacks."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from promoter.errors import ConfigError


class Secret:
    """A secret value that never shows itself in repr, str, logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


# Secrets: read from VAR, or from the file named by VAR_FILE.
SECRET_VARIABLES = (
    "PROMOTER_MLFLOW_WEBHOOK_SECRET",
    "PROMOTER_DATABRICKS_WEBHOOK_SECRET",
    "PROMOTER_GITLAB_TOKEN",
    "PROMOTER_GITLAB_WEBHOOK_TOKEN",
    "COSIGN_PASSWORD",
    "SIGSTORE_ID_TOKEN",
    "PROMOTER_ARGOCD_WEBHOOK_SECRET",
    "PROMOTER_STATE_PASSWORD",
)
# Secrets whose empty value is a value: cosign reads COSIGN_PASSWORD="" as "no password" (a
# key generated without one). Every other empty secret is unset: an empty token, webhook
# secret or database password authenticates nothing (an empty HMAC key is one anyone holds).
EMPTY_IS_A_VALUE = frozenset({"COSIGN_PASSWORD"})
SECRET_LOOKING_KEYS = ("token", "secret", "password")
# Credentials the client libraries promoter drives read from the environment themselves (MLflow's
# client, Databricks' SDK, boto3 for s3:// artifacts, Azure's for wasbs://): never read by
# promoter, but an error may quote one, so the log redactor must know their values.
CLIENT_CREDENTIAL_VARIABLES = (
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_PASSWORD",
    "DATABRICKS_TOKEN",
    "DATABRICKS_CLIENT_SECRET",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AZURE_STORAGE_ACCESS_KEY",
    "AZURE_STORAGE_CONNECTION_STRING",
)



def refuse_inline_secrets(raw: Mapping[str, Any], path: Path | None, prefix: str = "") -> None:
    for key, value in raw.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            if key != "defaults":
                refuse_inline_secrets(value, path, dotted + ".")
        elif any(word in str(key).lower() for word in SECRET_LOOKING_KEYS):
            raise ConfigError(
                f"{path}: {dotted} looks like a secret; secrets are read only from the environment",
                hint="set it with an environment variable (or VAR_FILE) listed in the README")


def read_secrets(environ: Mapping[str, str]) -> dict[str, Secret]:
    secrets: dict[str, Secret] = {}
    for variable in SECRET_VARIABLES:
        # An empty variable gives way to its file, as for every other override
        # (settings.ENV_OVERRIDES): a Deployment that sets both NAME="" and NAME_FILE means
        # the file. Without a file it is unset, unless empty is a value (EMPTY_IS_A_VALUE).
        if environ.get(variable):
            secrets[variable] = Secret(environ[variable])
        elif environ.get(variable + "_FILE"):
            file = Path(environ[variable + "_FILE"])
            try:
                secrets[variable] = Secret(file.read_text(encoding="utf-8").rstrip("\r\n"))
            except OSError as exc:
                raise ConfigError(f"{variable}_FILE names {file}, which cannot be read: "
                                  f"{exc.strerror}") from None
        elif variable in EMPTY_IS_A_VALUE and variable in environ:
            secrets[variable] = Secret("")
    for variable in CLIENT_CREDENTIAL_VARIABLES:
        if environ.get(variable):
            secrets[variable] = Secret(environ[variable])
    return secrets


