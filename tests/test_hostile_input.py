"""Over 100,000 generated hostile inputs against the real HTTP app: 0 crashes, 0 hung
requests, 0 HTTP 5xx, 0 patches that fail strict application or strict schema validation.

The bulk is coverage-guided (atheris, tests/fuzz_admission.py: 100,000 inputs) against the
ASGI app in-process, the exact object uvicorn serves; Hypothesis adds structured hostile
reviews (tests/hostile.py) in-process and over TLS to a real server process. Hypothesis costs
5-15 ms per generated review here, atheris about 1 ms, hence the split. `HOSTILE_SCALE`
multiplies every count (`HOSTILE_SCALE=10 pytest tests/test_hostile_input.py`). Each test
prints the inputs it tried.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from webhook.admission import DEFAULT_MAX_BODY_BYTES
from webhook.app import ServerState, create_app
from webhook.cluster.namespaces import StaticNamespaces
from webhook.core.model import PREFIX, Config
from webhook.logs import JsonLog
from webhook.metrics import Metrics

from .hostile import JUNK, Stats, broken_envelopes, check_answer, dumps, envelope, pods
from .test_server_https import REPO, Pki, ServerProcess, tls_args

SCALE = float(os.environ.get("HOSTILE_SCALE", "1"))
HUNG_SECONDS = 2.0
"""The API server's timeout: an answer later than this is as good as none."""
TOTAL: dict[str, int] = {}


def examples(count: int) -> settings:
    return settings(
        max_examples=max(1, int(count * SCALE)),
        deadline=None,
        database=None,
        derandomize=bool(os.environ.get("CI")),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


class InProcess:
    """The server's ASGI app on one event loop; each call is bounded by HUNG_SECONDS."""

    def __init__(self) -> None:
        namespaces = StaticNamespaces(
            {"shop": {PREFIX + "prestop-seconds": "7", PREFIX + "no-such": "1", "x": "\u0000"}}
        )
        self.devnull = open(os.devnull, "wb")  # noqa: SIM115 - closed by close()
        log = JsonLog("error", fd=self.devnull.fileno())
        self.app = create_app(ServerState(Config(), namespaces, Metrics(), log))
        self.runner = asyncio.Runner()

    async def _call(self, body: bytes, content_type: bytes) -> tuple[int, bytes]:
        scope = {
            "type": "http",
            "method": "POST",
            "path": "/mutate",
            "query_string": b"timeout=2s",
            "headers": [(b"content-type", content_type), (b"content-length", b"%d" % len(body))],
        }
        sent: list[dict[str, Any]] = []
        pending = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, Any]:
            return pending.pop() if pending else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await self.app(scope, receive, send)  # type: ignore[arg-type]
        assert len(sent) == 2, sent
        return sent[0]["status"], sent[1]["body"]

    def post(self, body: bytes, content_type: bytes = b"application/json") -> tuple[int, bytes]:
        """Drive the app's coroutine directly (nothing on this path waits for I/O: no cluster);
        only if it does suspend, on an event loop with a deadline."""
        started = time.perf_counter()
        call = self._call(body, content_type)
        try:
            call.send(None)
        except StopIteration as done:
            answer: tuple[int, bytes] = done.value
        else:
            call.close()
            try:
                answer = self.runner.run(
                    asyncio.wait_for(self._call(body, content_type), HUNG_SECONDS)
                )
            except TimeoutError:
                raise AssertionError(
                    f"hung: no answer in {HUNG_SECONDS} s: {body[:200]!r}"
                ) from None
        assert time.perf_counter() - started < HUNG_SECONDS, f"slow: {body[:200]!r}"
        return answer

    def close(self) -> None:
        self.runner.close()
        self.devnull.close()


@pytest.fixture(scope="module")
def app() -> Iterator[InProcess]:
    driver = InProcess()
    yield driver
    driver.close()
    print(f"\nhostile inputs tried: {sum(TOTAL.values()):,} ({TOTAL})")


@pytest.fixture
def stats(request: pytest.FixtureRequest) -> Iterator[Stats]:
    counted = Stats()
    yield counted
    TOTAL[request.node.name] = counted.tried
    print(
        f"\n{request.node.name}: {counted.tried:,} inputs, statuses {counted.statuses}, "
        f"{counted.patches:,} patches applied and validated"
    )


def test_arbitrary_bytes(app: InProcess, stats: Stats) -> None:
    @examples(200)
    @given(st.one_of(st.binary(max_size=3000), st.text(max_size=500).map(str.encode)))
    def run(body: bytes) -> None:
        status, answer = app.post(body)
        check_answer(body, status, answer, stats)
        assert status == 400

    run()
    assert stats.tried >= 200 * SCALE * 0.9


def test_arbitrary_json_documents(app: InProcess, stats: Stats) -> None:
    @examples(200)
    @given(JUNK)
    def run(document: Any) -> None:
        body = dumps(document)
        status, answer = app.post(body)
        check_answer(body, status, answer, stats)
        assert status == 400

    run()
    assert stats.tried >= 200 * SCALE * 0.9


def test_broken_envelopes(app: InProcess, stats: Stats) -> None:
    @examples(400)
    @given(broken_envelopes())
    def run(document: Any) -> None:
        body = dumps(document)
        check_answer(body, *app.post(body), stats)

    run()
    assert stats.tried >= 400 * SCALE * 0.9


def test_hostile_pods(app: InProcess, stats: Stats) -> None:
    @examples(800)
    @given(pods(), st.sampled_from([{}, {"dryRun": True}, {"operation": "UPDATE"}]))
    def run(pod: Any, extra: dict[str, Any]) -> None:
        body = dumps(envelope(pod, **extra))
        check_answer(body, *app.post(body), stats)

    run()
    assert stats.tried >= 800 * SCALE * 0.9
    # Many hostile pods still get (valid) patches, so the patch checks really run: about a
    # quarter on average, 21 % seen in an unlucky random run; the floor leaves room for that.
    assert stats.patches > stats.tried // 10


def big_pod(containers: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "big", "annotations": {PREFIX + "sidecars": "c1,c2,nope"}},
        "spec": {"containers": [{"name": f"c{i}", "image": "i"} for i in range(containers)]},
    }


def test_extremes(app: InProcess, stats: Stats) -> None:
    """10,000 containers, duplicate names, bodies at and over the size limit, deep nesting,
    a non-JSON content type."""
    cases: list[tuple[bytes, bytes, int]] = []
    many = orjson.dumps(envelope(big_pod(10_000)))
    cases.append((many, b"application/json", 200))
    duplicates = big_pod(3)
    for container in duplicates["spec"]["containers"]:
        container["name"] = "app"
    cases.append((orjson.dumps(envelope(duplicates)), b"application/json", 200))
    at_limit = orjson.dumps(envelope(big_pod(2)))
    at_limit += b" " * (DEFAULT_MAX_BODY_BYTES - len(at_limit))
    cases.append((at_limit, b"application/json", 200))
    cases.append((at_limit + b" ", b"application/json", 413))
    nested_pod = big_pod(1)
    nested_pod["spec"]["containers"][0]["env"] = orjson.loads(b"[" * 200 + b"]" * 200)
    cases.append((dumps(envelope(nested_pod)), b"application/json", 200))
    cases.append((b"[" * 100_000 + b"]" * 100_000, b"application/json", 400))
    cases.append((many, b"text/yaml", 415))
    for body, content_type, expected in cases:
        status, answer = app.post(body, content_type)
        check_answer(body, status, answer, stats)
        assert status == expected, (expected, answer[:200])


# --- a share over TLS to a real server process -----------------------------------------------


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("hostile")
    pki = Pki(base / "pki")
    server = ServerProcess(base / "server", [*tls_args(pki), "--log-level", "error"], pki.ca_file)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def test_a_share_over_tls_to_a_real_server(tls_server: ServerProcess, stats: Stats) -> None:
    with httpx.Client(
        base_url=f"https://127.0.0.1:{tls_server.port}",
        verify=tls_server.context(),
        timeout=HUNG_SECONDS,
    ) as client:

        @examples(400)
        @given(
            st.one_of(
                pods().map(lambda pod: dumps(envelope(pod))),
                broken_envelopes().map(dumps),
                st.binary(max_size=500),
            )
        )
        def run(body: bytes) -> None:
            response = client.post(
                "/mutate?timeout=2s", content=body, headers={"Content-Type": "application/json"}
            )
            check_answer(body, response.status_code, response.content, stats)

        run()
    assert tls_server.proc.poll() is None
    errors = [line for line in tls_server.logs() if line.get("level") == "error"]
    assert errors == []
    assert stats.tried >= 400 * SCALE * 0.9


def test_the_server_logged_no_traceback(tls_server: ServerProcess) -> None:
    assert "Traceback" not in Path(tls_server.stderr_path).read_text(errors="replace")


def test_coverage_guided_fuzzing_of_the_app(tmp_path: Path) -> None:
    """100,000 atheris inputs (raw bodies mutated from real reviews, and structured recipes);
    libFuzzer stops at the first failed check (a crash) or an input slower than 2 s (a hang)."""
    from bench import corpus

    runs = int(100_000 * SCALE)
    seeds = tmp_path / "corpus"
    seeds.mkdir()
    for name in ("S", "M"):
        (seeds / f"review-{name}").write_bytes(b"\0" + orjson.dumps(corpus.build()[name]))
    for index in range(8):
        (seeds / f"recipe-{index}").write_bytes(bytes([255 - index]) + bytes(range(index, 256)))
    done = subprocess.run(
        [sys.executable, "-m", "tests.fuzz_admission", str(seeds), f"-runs={runs}",
         "-max_len=8192", "-timeout=2", "-rss_limit_mb=2048", "-seed=1",
         f"-artifact_prefix={tmp_path}/"],
        cwd=REPO, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    crash = done.stderr.find("Uncaught Python exception")
    output = done.stderr[crash - 200 : crash + 3000] if crash >= 0 else done.stderr[-3000:]
    assert done.returncode == 0, output
    assert f"Done {runs} runs" in done.stderr, output
    TOTAL["atheris"] = runs
    print(f"\natheris: {runs:,} inputs, no crash or hang")
