"""pip as a subprocess: installs a model's requirements as wheels for the image's platform.

``pip install --target`` with ``--only-binary=:all: --platform … --python-version …`` resolves
wheels for the image rather than for this machine, so no compiler and no daemon are needed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from promoter.errors import UserError

_CREDENTIALS_IN_URL = re.compile(r"://[^/\s:@]+:[^/\s@]+@")
TIMEOUT_SECONDS = 1800


class PipInstaller:
    """``promoter.ports.image.WheelInstaller`` with this interpreter's pip."""

    def install(self, requirements: Path, target: Path, *, platforms: Sequence[str],
                python_version: str, options: Sequence[str]) -> None:
        command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-compile",
                   "--disable-pip-version-check", "--no-warn-script-location",
                   "--target", str(target), "--only-binary=:all:", "--implementation", "cp",
                   "--python-version", python_version, "-r", str(requirements), *options]
        for platform in platforms:
            command += ["--platform", platform]
        try:
            result = subprocess.run(command, capture_output=True, text=True, check=False,
                                    timeout=TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            raise UserError(f"installing the model's requirements took longer than "
                            f"{TIMEOUT_SECONDS} s", hint="check the package index is reachable "
                                                        "(image.pip_options)") from None
        if result.returncode != 0:
            # An index URL in pip_options may carry credentials; pip echoes it in errors.
            detail = _CREDENTIALS_IN_URL.sub("://***@", result.stderr.strip())[-2000:]
            raise UserError(f"installing the model's requirements for the image failed:\n"
                            f"{detail}",
                            hint="each requirement needs a wheel for the image's platform "
                                 f"({', '.join(platforms)}) and Python {python_version}; pin "
                                 "versions that publish wheels or set image.pip_options")
