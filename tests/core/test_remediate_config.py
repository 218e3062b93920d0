"""The remediation keys of the config file: top-level only, validated with the rest."""

from __future__ import annotations

from typing import Any

import pytest

from webhook.core import ConfigError, parse_config


def test_remediation_is_off_by_default_with_a_five_minute_interval() -> None:
    config = parse_config({})
    assert config.remediate == "off"
    assert config.remediate_interval_seconds == 300


def test_remediate_restart_and_its_interval() -> None:
    config = parse_config({"remediate": "restart", "remediateIntervalSeconds": 30})
    assert (config.remediate, config.remediate_interval_seconds) == ("restart", 30)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"remediate": "delete"}, "remediate: want off or restart, got 'delete'"),
        ({"remediate": True}, "remediate: want off or restart, got True"),
        ({"remediateIntervalSeconds": 0}, "remediateIntervalSeconds: want 1 to 86400, got 0"),
        ({"remediateIntervalSeconds": "60"}, "want 1 to 86400, got '60'"),
        ({"remediateIntervalSeconds": True}, "want 1 to 86400, got True"),
        (
            {"profiles": [{"name": "p", "settings": {"remediate": "restart"}}]},
            "profiles[0] (p).settings.remediate: only at the top level",
        ),
    ],
)
def test_bad_remediation_values_are_rejected_with_the_others(
    data: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({**data, "prestopSeconds": -1})
    assert any(problem in p for p in caught.value.problems), caught.value.problems
    assert any(p.startswith("prestopSeconds") for p in caught.value.problems)
