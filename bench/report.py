"""The SPEC section 7 targets, checked against one session's numbers, and the printed tables."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from bench.session import BASELINE, LATENCY, PRODUCT, THROUGHPUT, Results

MIN_THROUGHPUT_RATIO = 0.80
MAX_P99_MS = 1.0
MIN_LARGE_RPS = 1000.0
MAX_RSS_MIB = 64.0
MAX_READY_MS = 500.0
NOISY_OTHERS_SHARE = 0.05
"""Above this share of the server CPU taken by other processes, a run is flagged as noisy."""


@dataclass(frozen=True)
class Row:
    what: str
    baseline: str
    product: str
    ratio: str
    cpu_ratio: str
    """The ratio of reviews per server-CPU-second: the throughput ratio with noise removed."""
    noise: str
    target: str
    passed: bool | None
    """None: no target (context only) or not measured (baseline-only run)."""

    @property
    def verdict(self) -> str:
        return "" if self.passed is None else "PASS" if self.passed else "FAIL"


def _kib(size: int) -> str:
    return f"{size / 1000:.1f} KB"


def _rps(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}/s"


def _ms(value_us: float | None) -> str:
    return "-" if value_us is None else f"{value_us / 1000:.2f} ms"


def _mib(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.1f} MiB"


def _share(value: float | None) -> str:
    return "" if value is None else f"{value:.0%}"


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def target_rows(results: Results) -> list[Row]:
    rows: list[Row] = []
    has_product = PRODUCT in results.servers()
    for scenario in THROUGHPUT:
        base = results.median_rps(BASELINE, scenario)
        prod = results.median_rps(PRODUCT, scenario)
        ratio = _ratio(prod, base)
        cpu_ratio = _ratio(
            results.median_rps_per_cpu(PRODUCT, scenario),
            results.median_rps_per_cpu(BASELINE, scenario),
        )
        rows.append(
            Row(
                f"{scenario.size} ({_kib(results.sizes[scenario.size])}) throughput, "
                f"{scenario.connections} conns",
                _rps(base),
                _rps(prod),
                "-" if ratio is None else f"{ratio:.0%}",
                "-" if cpu_ratio is None else f"{cpu_ratio:.0%}",
                _share(results.noise(scenario)),
                f">= {MIN_THROUGHPUT_RATIO:.0%} of baseline",
                None if ratio is None else ratio >= MIN_THROUGHPUT_RATIO,
            )
        )
    large = THROUGHPUT[-1]
    large_rps = results.median_rps(PRODUCT, large)
    rows.append(
        Row(
            f"{large.size} throughput, absolute",
            _rps(results.median_rps(BASELINE, large)),
            _rps(large_rps),
            "",
            "",
            _share(results.noise(large)),
            f">= {MIN_LARGE_RPS:,.0f}/s",
            None if large_rps is None else large_rps >= MIN_LARGE_RPS,
        )
    )
    base_p99 = results.median_latency_us(BASELINE, LATENCY, "p99")
    prod_p99 = results.median_latency_us(PRODUCT, LATENCY, "p99")
    rows.append(
        Row(
            f"{LATENCY.size} p99 latency, {LATENCY.connections} conn (sequential)",
            _ms(base_p99),
            _ms(prod_p99),
            "-" if not (base_p99 and prod_p99) else f"{prod_p99 / base_p99:.2f}x",
            "",
            _share(results.noise(LATENCY)),
            f"<= {MAX_P99_MS:g} ms",
            None if prod_p99 is None else prod_p99 / 1000 <= MAX_P99_MS,
        )
    )
    rows.append(
        Row(
            "resident memory after the S and M runs",
            _mib(results.rss_before_large_kib(BASELINE)),
            _mib(results.rss_before_large_kib(PRODUCT)),
            "",
            "",
            "",
            "(context)",
            None,
        )
    )
    prod_rss = results.rss_after_kib.get(PRODUCT)
    rows.append(
        Row(
            "resident memory after all runs (VmRSS)",
            _mib(results.rss_after_kib.get(BASELINE)),
            _mib(prod_rss),
            "",
            "",
            "",
            f"<= {MAX_RSS_MIB:g} MiB",
            None if prod_rss is None else prod_rss / 1024 <= MAX_RSS_MIB,
        )
    )
    base_ready = results.median_ready_ms(BASELINE)
    prod_ready = results.median_ready_ms(PRODUCT)
    rows.append(
        Row(
            f"spawn -> /readyz 200, median of {results.options.starts}",
            "-" if base_ready is None else f"{base_ready:.0f} ms",
            "-" if prod_ready is None else f"{prod_ready:.0f} ms",
            "",
            "",
            "",
            f"<= {MAX_READY_MS:g} ms",
            None if prod_ready is None else prod_ready <= MAX_READY_MS,
        )
    )
    if not has_product:
        rows = [dataclasses.replace(r, passed=None) for r in rows]
    return rows


def _table(header: list[str], rows: list[list[str]], right: set[int]) -> str:
    widths = [max(len(line[i]) for line in [header, *rows]) for i in range(len(header))]
    out = []
    for line in [header, *rows]:
        cells = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(line)
        ]
        out.append("  ".join(cells).rstrip())
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def render(results: Results) -> str:
    machine = results.machine
    options = results.options
    lines = [
        "lifecycle-webhook benchmark (SPEC section 7)",
        f"date {results.started}; {machine['cpu_model']}, {machine['cpus_online']} CPUs; "
        f"Python {machine['python']}; "
        + ", ".join(f"{k} {v}" for k, v in machine["packages"].items()),
        f"servers on CPU {options.server_cpu}, wrk on CPU {options.client_cpu}; "
        f"TLS (ECDSA P-256), keep-alive; warm-up {options.warmup_seconds} s, "
        f"measure {options.measure_seconds} s, repeat {options.repeat}"
        + (f", nice {options.nice}" if options.nice else ""),
        "corpus: " + ", ".join(f"{k} {v:,} B" for k, v in results.sizes.items()),
        "load average before {:.2f} {:.2f} {:.2f}, after {:.2f} {:.2f} {:.2f}".format(
            *results.load_before, *results.load_after
        ),
        "",
    ]
    rows = target_rows(results)
    lines.append(
        _table(
            ["target", BASELINE, PRODUCT, "ratio", "per CPU-s", "noise", "SPEC", "result"],
            [
                [r.what, r.baseline, r.product, r.ratio, r.cpu_ratio, r.noise, r.target, r.verdict]
                for r in rows
            ],
            right={1, 2, 3, 4, 5},
        )
    )
    lines += [
        "ratio: product / baseline throughput. per CPU-s: the same ratio for reviews per second",
        "of server CPU time, which discounts CPU taken by other processes. noise: the largest",
        "share of the server or wrk CPU that other processes used in those runs "
        f"(over {NOISY_OTHERS_SHARE:.0%}: noisy).",
        "",
        "runs (the table above shows the median of repeats):",
    ]
    run_rows = []
    noisy = False
    for run in results.runs:
        lat = run.wrk.latency_us
        noisy = noisy or max(run.others_cpu_share, run.client_others_share) > NOISY_OTHERS_SHARE
        run_rows.append(
            [
                run.server,
                run.scenario.size,
                str(run.scenario.connections),
                f"{run.wrk.rps:,.0f}",
                _ms(lat["p50"]),
                _ms(lat["p90"]),
                _ms(lat["p99"]),
                _ms(lat["max"]),
                f"{run.wrk.checked:,}",
                f"{run.server_cpu_share:.0%}",
                f"{run.others_cpu_share:.0%}",
                f"{run.client_others_share:.0%}",
                _mib(run.rss_kib),
            ]
        )
    lines.append(
        _table(
            [
                "server",
                "size",
                "conns",
                "reviews/s",
                "p50",
                "p90",
                "p99",
                "max",
                "checked",
                "server CPU",
                "others there",
                "others on wrk CPU",
                "RSS",
            ],
            run_rows,
            right=set(range(2, 13)),
        )
    )
    if results.outcomes:
        lines.append(
            "product outcomes (its /metrics): "
            + ", ".join(f"{k} {v:,.0f}" for k, v in sorted(results.outcomes.items()))
            + f"; error lines in its log: {results.product_log_errors}"
        )
    if results.peak_rss_kib:
        lines.append(
            "peak RSS (VmHWM): "
            + ", ".join(f"{k} {_mib(v)}" for k, v in results.peak_rss_kib.items())
        )
    if noisy:
        lines.append(
            f"NOTE: other processes used more than {NOISY_OTHERS_SHARE:.0%} of the server or "
            "wrk CPU in some runs; those numbers are noisy, rerun on a quiet machine."
        )
    return "\n".join(lines)


def missed(results: Results) -> list[Row]:
    return [r for r in target_rows(results) if r.passed is False]
