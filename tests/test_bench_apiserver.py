"""The arithmetic of `python -m bench apiserver`: reading the API server's admission histogram."""

from __future__ import annotations

import math

from bench.apiserver import ADMISSION_METRIC, delta, histogram, histogram_quantile

EXPOSITION = "\n".join(
    [
        f"# TYPE {ADMISSION_METRIC} histogram",
        *(
            f'{ADMISSION_METRIC}_bucket{{name="hook.example.io",operation="CREATE",'
            f'rejected="false",type="admit",le="{le}"}} {count}'
            for le, count in (("0.005", 60), ("0.025", 90), ("0.1", 100), ("+Inf", 100))
        ),
        f'{ADMISSION_METRIC}_sum{{name="hook.example.io",operation="CREATE",rejected="false",'
        f'type="admit"}} 0.9',
        f'{ADMISSION_METRIC}_count{{name="hook.example.io",operation="CREATE",rejected="false",'
        f'type="admit"}} 100',
        f'{ADMISSION_METRIC}_count{{name="hook.example.io",operation="UPDATE",rejected="false",'
        f'type="admit"}} 7',
    ]
)


def test_histogram_reads_create_admits_per_webhook() -> None:
    parsed = histogram(EXPOSITION, ADMISSION_METRIC)["hook.example.io"]
    assert parsed["0.005"] == 60 and parsed["+Inf"] == 100
    assert parsed["count"] == 100  # the UPDATE series is not added
    assert math.isclose(parsed["sum"], 0.9)


def test_quantiles_interpolate_like_promql() -> None:
    parsed = histogram(EXPOSITION, ADMISSION_METRIC)["hook.example.io"]
    assert math.isclose(histogram_quantile(0.5, parsed), 0.005 * 50 / 60)
    assert math.isclose(histogram_quantile(0.75, parsed), 0.005 + 0.02 * 15 / 30)
    assert math.isclose(histogram_quantile(0.99, parsed), 0.025 + 0.075 * 9 / 10)


def test_delta_is_what_one_phase_added() -> None:
    before = {"0.005": 10.0, "+Inf": 20.0, "count": 20.0}
    after = {"0.005": 15.0, "+Inf": 30.0, "count": 30.0}
    assert delta(before, after) == {"0.005": 5.0, "+Inf": 10.0, "count": 10.0}
    assert math.isnan(histogram_quantile(0.5, {"+Inf": 0.0}))
