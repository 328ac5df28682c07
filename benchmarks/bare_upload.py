"""One blob pushed by the barest client possible: what is left of a push without a client.

Run by benchmarks/image.py after `skopeo copy`. The blob is the layout's largest (the layer
holding the weights); its bytes are read into memory and its digest is its file name before
the clock starts, so the timed part is only what every client must do: POST, one PATCH of the
whole blob written straight to the socket, PUT ?digest=. No reading, hashing, tar or chunking
on the client's side is left to measure: what remains is the registry receiving, hashing and
writing the bytes, and the loopback copy. A promoter push near this figure has no client-side
cost left to cut against this registry. Prints {"seconds", "bytes"} as JSON.
Usage: python benchmarks/bare_upload.py OCI_LAYOUT REGISTRY/REPO
"""

from __future__ import annotations

import http.client
import json
import sys
import time
from pathlib import Path

PIECE = 4 * 1024 * 1024  # bytes per sendall: large enough that Python's cost per call is noise


def main() -> None:
    layout, repository = Path(sys.argv[1]), sys.argv[2]
    blobs = layout / "blobs" / "sha256"
    largest = max(blobs.iterdir(), key=lambda path: path.stat().st_size)
    data = memoryview(largest.read_bytes())
    digest = f"sha256:{largest.name}"
    host, _, rest = repository.partition("/")
    address, _, port = host.partition(":")
    connection = http.client.HTTPConnection(address, int(port or 80), timeout=600)
    started = time.perf_counter()
    connection.request("POST", f"/v2/{rest}/blobs/uploads/", headers={"Content-Length": "0"})
    location = _answer(connection, 202)
    connection.putrequest("PATCH", location)
    connection.putheader("Content-Type", "application/octet-stream")
    connection.putheader("Content-Length", str(len(data)))
    connection.endheaders()
    assert connection.sock is not None
    for offset in range(0, len(data), PIECE):
        connection.sock.sendall(data[offset:offset + PIECE])
    location = _answer(connection, 202)
    separator = "&" if "?" in location else "?"
    connection.request("PUT", f"{location}{separator}digest={digest}",
                       headers={"Content-Length": "0"})
    _answer(connection, 201)
    print(json.dumps({"seconds": time.perf_counter() - started, "bytes": len(data)}))


def _answer(connection: http.client.HTTPConnection, expected: int) -> str:
    response = connection.getresponse()
    body = response.read()
    if response.status != expected:
        raise SystemExit(f"registry answered {response.status}, not {expected}: {body[:300]!r}")
    return response.getheader("Location") or ""


if __name__ == "__main__":
    main()
