"""pip as a subprocess: installs a model's requirements as wheels for the image's platform.

``pip install --target`` with ``--only-binary=:all: --platform … --python-version …`` resolves
wheels for the image rather than for this machine, so no compiler and no daemon are needed.

pip runs with an allowlisted environment: the service's own secrets (GitLab token, signing
password, webhook secrets, database password) are no business of pip's, and its errors end up
in a failure reason the model's owner reads. That reason is pip's last ``ERROR:`` line, redacted
and short; the whole of pip's output goes to the log, redacted too.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from promoter.core.masking import without_credential_shapes
from promoter.errors import UserError
from promoter.redaction import Redactor, without_url_userinfo

TIMEOUT_SECONDS = 1800
REASON_CHARS = 300
_log = logging.getLogger(__name__)

# What pip needs to find its index, reach it through the operator's proxy, trust its
# certificate and use its cache and config (HOME / XDG_*: ~/.config/pip/pip.conf, ~/.netrc,
# ~/.cache/pip). PYTHONPATH, PYTHONHOME and PYTHONSTARTUP stay out: pip is this interpreter's
# own (sys.executable finds it without them) and they would let another directory's modules
# shadow it.
_PASSED_VARIABLES = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ",
    "TMPDIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_CONFIG_DIRS",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY",
    "http_proxy", "https_proxy", "no_proxy", "all_proxy",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
    "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX",
    "PIP_TRUSTED_HOST", "PIP_CERT", "PIP_CLIENT_CERT", "PIP_PROXY", "PIP_CONSTRAINT",
    "PIP_DEFAULT_TIMEOUT", "PIP_TIMEOUT", "PIP_RETRIES", "PIP_CONFIG_FILE", "PIP_CACHE_DIR",
    "PIP_NO_CACHE_DIR", "PIP_DISABLE_PIP_VERSION_CHECK",
})


def pip_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The part of ``environ`` pip runs with: the allowlist above, nothing else."""
    return {name: value for name, value in environ.items() if name in _PASSED_VARIABLES}


class PipInstaller:
    """``promoter.ports.image.WheelInstaller`` with this interpreter's pip. ``secrets``: the
    configured secret values, masked wherever pip's output is quoted."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._redact = Redactor(secrets)

    def install(self, requirements: Path, target: Path, *, platforms: Sequence[str],
                python_version: str, options: Sequence[str]) -> None:
        command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-compile",
                   "--disable-pip-version-check", "--no-warn-script-location",
                   "--target", str(target), "--only-binary=:all:", "--implementation", "cp",
                   "--python-version", python_version, "-r", str(requirements), *options]
        for platform in platforms:
            command += ["--platform", platform]
        try:
            # cwd: a relative name pip might take for a local file resolves in our scratch
            # directory, not in whatever directory the service was started from.
            result = subprocess.run(command, capture_output=True, text=True, check=False,
                                    timeout=TIMEOUT_SECONDS, env=pip_environment(os.environ),
                                    cwd=requirements.parent)
        except subprocess.TimeoutExpired:
            raise UserError(f"installing the model's requirements took longer than "
                            f"{TIMEOUT_SECONDS} s", hint="check the package index is reachable "
                                                        "(image.pip_options)") from None
        if result.returncode != 0:
            output = self.redacted(result.stderr.strip())
            _log.warning("pip install failed (exit %d):\n%s", result.returncode, output)
            raise UserError(f"installing the model's requirements for the image failed: "
                            f"{failure_reason(output)}",
                            hint="each requirement needs a wheel for the image's platform "
                                 f"({', '.join(platforms)}) and Python {python_version}; pin "
                                 "versions that publish wheels or set image.pip_options; "
                                 "pip's full output is in the log")

    def redacted(self, text: str) -> str:
        """``text`` without configured secrets or URL credentials (an index URL in pip_options
        or PIP_INDEX_URL may carry them, and pip echoes URLs in its errors)."""
        return without_url_userinfo(without_credential_shapes(self._redact(text)))


def failure_reason(output: str) -> str:
    """pip's last ``ERROR:`` line (its last line when it printed none), at most REASON_CHARS.
    pip's diagnostic errors (a failed build, say) read ``error: <what>`` followed by hints."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.lower().startswith("error:")]
    reason = (errors or lines or ["pip printed nothing"])[-1]
    return reason if len(reason) <= REASON_CHARS else reason[:REASON_CHARS] + "…"
