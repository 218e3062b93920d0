"""A steady-rate HTTP client, run inside the node during a rolling restart.

    python -m tests.node.load_client URL RATE MAX_SECONDS OUT.json

Request i is due at start + i / RATE; a small pool of threads sends each on a new TCP
connection (`Connection: close`), as a client behind a ClusterIP does when every request may
land on another pod. It stops on SIGTERM or after MAX_SECONDS, whichever comes first, waits for
the requests in flight and writes a summary: counts, failures by kind, the first failures with
their time. Bounded: at most RATE x MAX_SECONDS requests, each with a 2 s timeout.
"""

from __future__ import annotations

import http.client
import json
import signal
import sys
import threading
import time
import urllib.parse
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

TIMEOUT_SECONDS = 2.0
WORKERS = 64
"""Enough that requests hanging for their whole timeout (to a pod whose network is gone) do
not hold up the ones due after them, even on a loaded machine."""


def one_request(host: str, port: int, path: str) -> str | None:
    """None when the answer is a complete 200; else the kind of failure."""
    connection = http.client.HTTPConnection(host, port, timeout=TIMEOUT_SECONDS)
    try:
        connection.request("GET", path, headers={"Connection": "close"})
        response = connection.getresponse()
        response.read()
        return None if response.status == 200 else f"HTTP {response.status}"
    except ConnectionRefusedError:
        return "connection refused"
    except ConnectionResetError:
        return "connection reset"
    except TimeoutError:
        return "timeout"
    except (OSError, http.client.HTTPException) as exc:
        return type(exc).__name__
    finally:
        connection.close()


def main(argv: list[str]) -> int:
    url, rate, max_seconds, out = argv[0], float(argv[1]), float(argv[2]), argv[3]
    parts = urllib.parse.urlsplit(url)
    host, port, path = parts.hostname or "", parts.port or 80, parts.path or "/"
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    results: list[tuple[float, str | None]] = []
    lock = threading.Lock()

    def send(due: float) -> None:
        outcome = one_request(host, port, path)
        with lock:
            results.append((due, outcome))

    start = time.monotonic()
    sent = 0
    pool = ThreadPoolExecutor(max_workers=WORKERS)
    futures = []
    while not stop.is_set():
        due = start + sent / rate
        if due - start >= max_seconds:
            break
        delay = due - time.monotonic()
        if delay > 0 and stop.wait(delay):
            break
        futures.append(pool.submit(send, due - start))
        sent += 1
    # Requests not started by now were never sent: not counted either way.
    pool.shutdown(wait=True, cancel_futures=True)
    sent = sum(1 for future in futures if not future.cancelled())
    failures = sorted((t, kind) for t, kind in results if kind is not None)
    summary = {
        "sent": sent,
        "ok": sum(1 for _, kind in results if kind is None),
        "failed": len(failures),
        "by_kind": dict(Counter(kind for _, kind in failures)),
        "first_failures": [[round(t, 3), kind] for t, kind in failures[:20]],
        "seconds": round(time.monotonic() - start, 3),
        "rate": rate,
    }
    with open(out, "w") as handle:
        json.dump(summary, handle)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
