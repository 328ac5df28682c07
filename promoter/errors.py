"""The promoter error tree, and the one place that maps errors to exit and HTTP codes.

Every module raises these (adapters translate their library's errors into them at the
boundary), so the CLI and the HTTP service never need to know about mlflow, gitlab or httpx
exceptions. A message says what was wrong and what to do about it.
"""

from __future__ import annotations


class PromoterError(Exception):
    """Base class. ``exit_code`` is for the CLI, ``http_status`` for the service."""

    exit_code = 3
    http_status = 500
    kind = "internal"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message


class UserError(PromoterError):
    """Bad input from the person or file driving promoter: fix the input and run again."""

    exit_code = 1
    http_status = 400
    kind = "invalid"


class UsageError(UserError):
    """The command line itself is wrong (conflicting or missing options): exit code 2."""

    exit_code = 2
    kind = "usage"


class ConfigError(UserError):
    """promoter.yaml or the environment is wrong."""

    kind = "config"


class AuthError(PromoterError):
    """A caller could not prove who it is (bad webhook signature, bad token)."""

    exit_code = 1
    http_status = 401
    kind = "unauthorized"


class PolicyDenied(PromoterError):
    """The deployment intent breaks a policy rule; ``reasons`` lists every broken rule."""

    exit_code = 4
    http_status = 422
    kind = "policy_denied"

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("policy denied: " + "; ".join(reasons))
        self.reasons = list(reasons)


class TransientError(PromoterError):
    """A dependency is briefly unavailable; the job is retried with backoff."""

    exit_code = 3
    http_status = 503
    kind = "unavailable"

    def __init__(self, message: str, *, hint: str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message, hint=hint)
        self.retry_after = retry_after


class PermanentError(PromoterError):
    """Retrying cannot help (403, missing model, ...): the job is parked with this reason."""

    exit_code = 1
    http_status = 422
    kind = "permanent"


EXIT_OK = 0
EXIT_USER = 1
EXIT_USAGE = 2
EXIT_UNEXPECTED = 3
EXIT_POLICY = 4
EXIT_INTERRUPTED = 130


def exit_code_for(exc: BaseException) -> int:
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, PromoterError):
        return exc.exit_code
    return EXIT_UNEXPECTED


def http_status_for(exc: BaseException) -> int:
    return exc.http_status if isinstance(exc, PromoterError) else 500
