"""Coverage-guided fuzzing of the HTTP app with atheris (libFuzzer): the bulk of the hostile
inputs. `python -m tests.fuzz_admission CORPUS_DIR -runs=100000` (libFuzzer flags follow).

Each input is either a raw body (libFuzzer mutates the seed reviews byte by byte, so it finds
the JSON variants that reach new code) or, by its first byte, the recipe for a structured
review: a pod whose names, numbers, shapes and annotations are drawn from the input. Every
answer goes through tests/hostile.py's checks; a failed check is a crash, an input slower than
libFuzzer's -timeout a hang. The count of inputs tried is libFuzzer's "Done N runs".
"""

from __future__ import annotations

import sys
from typing import Any

import atheris

with atheris.instrument_imports(include=["webhook"]):
    from webhook.core.model import PREFIX, STATUS_KEY
    from webhook.core.settings import ANNOTATION_KEYS

from tests.hostile import Stats, check_answer, dumps, envelope
from tests.test_hostile_input import InProcess

TEXTS = ["", " ", "~", "/", "~1", "a/b~c", "\u0000", "\x7f", "٣٠", "１２", "app", "envoy", "*"]
NUMBERS = [0, 1, -1, 5, 30, 3600, 3601, 2**31, 2**63 - 1, 2**63, -(2**63), 10**30, 1.5, True]
OWN = ["5", "0", "3600", "3601", "99999999999999999999", " 30", "+30", "3_0", "true", "false",
       "sleep", "exec", "http", "none", "auto", '["sleep","1"]', "[]", '["a",1]', "app,app,*",
       "*,*", "a,,b", "skip", "inject"]  # fmt: skip
DRIVER = InProcess()
STATS = Stats()


class Recipe:
    """Draws values from the fuzzer's bytes."""

    def __init__(self, data: bytes) -> None:
        self.fdp = atheris.FuzzedDataProvider(data)

    def pick(self, options: list[Any]) -> Any:
        return options[int(self.fdp.ConsumeIntInRange(0, len(options) - 1))]

    def count(self, most: int) -> int:
        return int(self.fdp.ConsumeIntInRange(0, most))

    def text(self) -> str:
        if self.fdp.ConsumeBool():
            return str(self.pick(TEXTS))
        return str(self.fdp.ConsumeUnicode(self.count(24)))

    def number(self) -> Any:
        if self.fdp.ConsumeBool():
            return self.pick(NUMBERS)
        return self.fdp.ConsumeInt(self.pick([1, 4, 8, 9]))

    def junk(self, depth: int = 0) -> Any:
        kind = self.count(6 if depth < 4 else 3)
        if kind == 0:
            return None
        if kind == 1:
            return self.number()
        if kind in (2, 3):
            return self.text()
        if kind == 4:
            return [self.junk(depth + 1) for _ in range(self.count(3))]
        return {self.text(): self.junk(depth + 1) for _ in range(self.count(3))}

    def maybe_junk(self, value: Any) -> Any:
        return self.junk() if self.count(7) == 0 else value

    def hook(self) -> Any:
        return self.pick(
            [
                lambda: {"sleep": {"seconds": self.number()}},
                lambda: {"exec": {"command": [self.text() for _ in range(self.count(3))]}},
                lambda: {"httpGet": {"port": self.maybe_junk(self.text() or 80)}},
                self.junk,
            ]
        )()

    def container(self) -> dict[str, Any]:
        container: dict[str, Any] = {"name": self.text(), "image": "img"}
        if self.fdp.ConsumeBool():
            lifecycle = {k: self.hook() for k in ("preStop", "postStart") if self.fdp.ConsumeBool()}
            container["lifecycle"] = self.maybe_junk(lifecycle)
        if self.fdp.ConsumeBool():
            ports = [{"containerPort": self.number(), "name": self.text()}]
            container["ports"] = self.maybe_junk(ports * self.count(2))
        if self.count(5) == 0:
            container["restartPolicy"] = self.maybe_junk("Always")
        return container

    def annotations(self) -> dict[str, Any]:
        keys = [*ANNOTATION_KEYS, STATUS_KEY]
        result: dict[str, Any] = {}
        for _ in range(self.count(8)):
            key = self.pick(keys) if self.fdp.ConsumeBool() else PREFIX + self.text()
            value = self.pick(OWN) if self.fdp.ConsumeBool() else self.text()
            result[key] = self.maybe_junk(value)
        return result

    def pod(self) -> dict[str, Any]:
        count = self.count(6)
        if count == 6:
            count = self.pick([0, 50, 500])
        spec: dict[str, Any] = {"containers": [self.container() for _ in range(count)]}
        if self.fdp.ConsumeBool():
            spec["initContainers"] = self.maybe_junk(
                [self.container() for _ in range(self.count(4))]
            )
        if self.fdp.ConsumeBool():
            spec["terminationGracePeriodSeconds"] = self.maybe_junk(self.number())
        if self.fdp.ConsumeBool():
            spec["restartPolicy"] = self.maybe_junk(self.pick(["Always", "Never", "OnFailure"]))
        metadata = {"name": self.text(), "namespace": "shop", "annotations": self.annotations()}
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}
        for key in ("metadata", "spec"):
            pod[key] = self.maybe_junk(pod[key])
        return pod

    def review(self) -> dict[str, Any]:
        extra = self.pick([{}, {}, {"dryRun": True}, {"operation": self.text()}])
        document = envelope(self.pod(), uid=self.text() or "uid", **extra)
        if self.count(9) == 0:
            document[self.pick(["apiVersion", "kind", "request"])] = self.junk()
        return document


def one_input(data: bytes) -> None:
    if not data:
        return
    body = data[1:] if data[0] < 64 else dumps(Recipe(data[1:]).review())
    status, answer = DRIVER.post(body)
    check_answer(body, status, answer, STATS)


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
