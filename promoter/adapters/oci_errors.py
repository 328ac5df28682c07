"""HTTP answers from a registry → promoter errors with a message and what to do."""

from __future__ import annotations

import httpx

from promoter.core.masking import without_credentials
from promoter.errors import AuthError, PermanentError, PromoterError, TransientError, UserError


def _codes(response: httpx.Response) -> tuple[list[str], str]:
    try:
        errors = response.json().get("errors") or []
        codes = [str(item.get("code", "")) for item in errors]
        detail = "; ".join(str(item.get("message", "")) for item in errors if item.get("message"))
    except (ValueError, AttributeError):
        return [], ""
    # A registry (or a proxy before it) may echo the request's headers, bearer token
    # included; tokens change per request, so only their shape can catch them.
    return codes, without_credentials(detail)


def registry_error(registry: str, response: httpx.Response, what: str) -> PromoterError:
    status = response.status_code
    codes, detail = _codes(response)
    said = f" ({', '.join(codes)}: {detail})" if codes else ""
    if status == 401:
        return AuthError(f"registry {registry} refused access while {what} (HTTP 401){said}",
                         hint="check the credentials in the registry auth file")
    if status == 403:
        return PermanentError(f"registry {registry} denied {what} (HTTP 403){said}",
                              hint="the credentials are valid but lack permission for this "
                                   "repository (push needs write access)")
    if status == 404 and "BLOB_UPLOAD_UNKNOWN" in codes:
        # The session expired or was purged (a slow upload, a registry restart): nothing is
        # wrong with the names, and a new session succeeds, so the job tries again.
        return TransientError(f"registry {registry} no longer knows the upload session while "
                              f"{what} (HTTP 404){said}",
                              hint="the upload session expired or was purged; the upload "
                                   "starts again in a new session")
    if status == 404:
        return UserError(f"not found in registry {registry} while {what} (HTTP 404){said}",
                         hint="check the repository name and digest")
    if status == 400 and "MANIFEST_BLOB_UNKNOWN" in codes:
        return PermanentError(f"registry {registry} rejected a manifest while {what}: it names a "
                              f"blob the repository does not have{said}",
                              hint="push every layer and the config before the manifest")
    if status == 400 and any(code in codes for code in ("DIGEST_INVALID", "SIZE_INVALID")):
        return PermanentError(f"registry {registry} rejected uploaded content while {what}"
                              f"{said}", hint="the data changed during upload; build again")
    if status in (429, 500, 502, 503, 504):
        retry_after = response.headers.get("Retry-After", "")
        return TransientError(f"registry {registry} is unavailable while {what} "
                              f"(HTTP {status}){said}",
                              retry_after=float(retry_after) if retry_after.isdigit() else None)
    return PermanentError(f"registry {registry} answered HTTP {status} while {what}{said}")


class StreamedRequestRefused(TransientError):
    """The registry asked for a streamed request (an upload PATCH) again, typically after a
    401 for an expired token that the auth flow has renewed meanwhile: the body is gone, but
    nothing of it was accepted, so an upload can resume where the registry says it stands."""
