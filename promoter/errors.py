"""The promoter error tree, and the one place that maps errors to exit and HTTP codes.

Every module raises these (adapters translate their library's errors into them at the
boundary), so the CLI and the HTTP service never need to know about mlflow, gitlab or httpx
exceptions. A message says what was wrong and what to do about it.
"""

from __future__ import annotations

from enum import StrEnum


class Disposition(StrEnum):
    """What a failed job does next. Each error class carries its own (kopf style), so the queue,
    the pipeline and the job handler never list error classes to decide it."""

    RETRY = "retry"   # a dependency may come back: run the job again later, with backoff
    PARK = "park"     # retrying cannot help: the job goes dead with the reason
    DENY = "deny"     # a policy said no: the job is done, outcome "denied"


class PromoterError(Exception):
    """Base class. ``exit_code`` is for the CLI, ``http_status`` for the service."""

    exit_code = 3
    http_status = 500
    kind = "internal"
    # An unclassified promoter error is a bug or an untranslated failure: retrying is the safer
    # bet, and the attempt limit still parks it with its reason in the end.
    disposition = Disposition.RETRY

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
    disposition = Disposition.PARK


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
    disposition = Disposition.PARK


class PolicyDenied(PromoterError):
    """The deployment intent breaks a policy rule; ``reasons`` lists every broken rule."""

    exit_code = 4
    http_status = 422
    kind = "policy_denied"
    disposition = Disposition.DENY

    def __init__(self, reasons: list[str], *, version: str | None = None) -> None:
        super().__init__("policy denied: " + "; ".join(reasons))
        self.reasons = list(reasons)
        self.version = version   # the model version denied, when one was resolved


class TransientError(PromoterError):
    """A dependency is briefly unavailable; the job is retried with backoff."""

    exit_code = 3
    http_status = 503
    kind = "unavailable"

    def __init__(self, message: str, *, hint: str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message, hint=hint)
        self.retry_after = retry_after


class OutcomeUnknown(TransientError):
    """A write may or may not have been applied (timeout, 5xx, lost response): look again
    before writing, never re-send blindly."""


class PermanentError(PromoterError):
    """Retrying cannot help (403, missing model, ...): the job is parked with this reason."""

    exit_code = 1
    http_status = 422
    kind = "permanent"
    disposition = Disposition.PARK


class NotFoundError(PermanentError):
    """What was asked for does not exist (an MR deleted on the forge, GitLab's 404): asking
    again cannot help, and a caller that follows it may stop."""


class UnacceptableContent(PermanentError):
    """A server sent content promoter will not take: over the size cap, compressed although
    asked for it plain, or not matching the digest it was asked for. Unlike a refusal (403)
    it says nothing about the caller's access, so a reader of content anyone may write (a
    signature's referrers) can skip it."""


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


def disposition_of(exc: BaseException) -> Disposition:
    """The one classification of a job failure; anything that is not ours (a bug, a library
    error an adapter failed to translate) is retried until the attempt limit parks it."""
    return exc.disposition if isinstance(exc, PromoterError) else Disposition.RETRY


def http_status_for(exc: BaseException) -> int:
    return exc.http_status if isinstance(exc, PromoterError) else 500
