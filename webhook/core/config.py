"""The configuration file's layer: camelCase keys, validated as a whole before it is used.

A bad file is rejected with every problem listed (the server keeps its previous config, the
CLI exits 2): a half-applied cluster default is worse than a loud error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from webhook.core import values
from webhook.core.model import Config
from webhook.core.settings import SETTINGS


class ConfigError(ValueError):
    """The configuration file is unusable; `problems` lists every reason."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


_BY_CONFIG_KEY = {setting.config_key: setting for setting in SETTINGS if setting.config_key}
_CONFIG_ONLY = ("maxSeconds", "strict", "excludedNamespaces", "clusterVersion")


def parse_config(data: Mapping[str, Any] | None) -> Config:
    """Validate a configuration mapping (the parsed YAML/JSON file) into a `Config`."""
    if data is None:
        return Config()
    if not isinstance(data, Mapping):
        raise ConfigError(["the configuration must be a mapping of keys to values"])
    problems: list[str] = []
    max_seconds = 3600
    if "maxSeconds" in data:
        raw = data["maxSeconds"]
        if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0:
            max_seconds = raw
        else:
            problems.append(f"maxSeconds: want a non-negative integer, got {raw!r}")
    strict = False
    if "strict" in data:
        try:
            strict = values.parse_bool(data["strict"])
        except values.InvalidValue as invalid:
            problems.append(f"strict: {invalid.reason}, got {data['strict']!r}")
    excluded = Config().excluded_namespaces
    if "excludedNamespaces" in data:
        raw = data["excludedNamespaces"]
        if isinstance(raw, list) and all(isinstance(item, str) and item for item in raw):
            excluded = frozenset(raw)
        else:
            problems.append(f"excludedNamespaces: want a list of namespace names, got {raw!r}")
    cluster_version = None
    if "clusterVersion" in data:
        try:
            cluster_version = values.parse_cluster_version(data["clusterVersion"])
        except values.InvalidValue as invalid:
            problems.append(f"clusterVersion: {invalid.reason}, got {data['clusterVersion']!r}")
    parsed: dict[str, Any] = {}
    for key, raw in data.items():
        if key in _CONFIG_ONLY:
            continue
        setting = _BY_CONFIG_KEY.get(key)
        if setting is None:
            problems.append(f"{key}: unknown key")
            continue
        try:
            parsed[setting.key] = setting.parse(raw, max_seconds)
        except values.InvalidValue as invalid:
            problems.append(f"{key}: {invalid.reason}, got {raw!r}")
    if problems:
        raise ConfigError(problems)
    return Config(
        values=parsed,
        max_seconds=max_seconds,
        strict=strict,
        excluded_namespaces=excluded,
        cluster_version=cluster_version,
    )
