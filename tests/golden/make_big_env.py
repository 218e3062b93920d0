"""Write cases/big-env.yaml: a Pod with 2,000 environment variables (SPEC 7's large pod).

Run once; the file is committed: `python -m tests.golden.make_big_env`.
"""

from __future__ import annotations

from pathlib import Path

CASE = Path(__file__).parent / "cases" / "big-env.yaml"
COUNT = 2000


def render() -> str:
    lines = [
        "apiVersion: v1",
        "kind: Pod",
        "metadata:",
        "  name: big-env",
        "  namespace: shop",
        "  annotations:",
        "    lifecycle-webhook.io/sidecars: proxy",
        "spec:",
        "  containers:",
        "  - name: app",
        "    image: ghcr.io/example/app:4.2",
        "    env:",
    ]
    for index in range(COUNT):
        lines.append(f"    - name: SETTING_{index:04d}")
        lines.append(f'      value: "value-{index:04d}-{"x" * (index % 17)}"')
    lines += [
        "  - name: proxy",
        "    image: envoyproxy/envoy:v1.31.0",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    CASE.write_text(render(), encoding="utf-8")
    print(f"wrote {CASE} ({COUNT} environment variables)")


if __name__ == "__main__":
    main()
