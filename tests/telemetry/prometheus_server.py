"""A real Prometheus over backfilled history: promtool writes the blocks, prometheus serves them.

Debian's ``prometheus`` package ships both binaries. The server listens on 127.0.0.1 only, over
a temporary data directory, with a retention long enough to keep the synthetic weeks.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from promoter.service import composition

READY_SECONDS = 90


def available() -> str | None:
    """Why the real Prometheus cannot run here, or None."""
    missing = [tool for tool in ("prometheus", "promtool") if shutil.which(tool) is None]
    return (f"{' and '.join(missing)} not on PATH (apt-get install prometheus)"
            if missing else None)


@contextmanager
def prometheus(openmetrics_text: str, directory: Path) -> Iterator[str]:
    """Backfill ``openmetrics_text`` into ``directory`` and serve it; yields the base URL."""
    source, data = directory / "history.om", directory / "data"
    data.mkdir(parents=True)
    source.write_text(openmetrics_text, encoding="utf-8")
    subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", "--quiet",
                    str(source), str(data)], check=True, capture_output=True, timeout=300)
    config = directory / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 1m\nscrape_configs: []\n", encoding="utf-8")
    port = composition.free_port()
    log = (directory / "prometheus.log").open("wb")
    process = subprocess.Popen(
        ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={data}",
         f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=3650d",
         "--query.lookback-delta=20m"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_SECONDS
        while True:
            if process.poll() is not None:
                raise RuntimeError("prometheus exited: "
                                   + (directory / "prometheus.log").read_text()[-2000:])
            try:
                if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"prometheus not ready after {READY_SECONDS}s")
            time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()
