"""The configuration file's layer: camelCase keys, validated as a whole before it is used.

A bad file is rejected with every problem listed (the server keeps its previous config, the
CLI exits 2): a half-applied cluster default is worse than a loud error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from webhook.core import values
from webhook.core.model import Config, Match, Profile
from webhook.core.selectors import parse_selector
from webhook.core.settings import SETTINGS
from webhook.core.traffic import EXPOSURES, OWNER_KINDS


class ConfigError(ValueError):
    """The configuration file is unusable; `problems` lists every reason."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


_BY_CONFIG_KEY = {setting.config_key: setting for setting in SETTINGS if setting.config_key}
_CONFIG_ONLY = (
    "maxSeconds",
    "strict",
    "excludedNamespaces",
    "clusterVersion",
    "profiles",
    "remediate",
    "remediateIntervalSeconds",
)
REMEDIATIONS = ("off", "restart")
_PROFILE_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", re.ASCII)
_MATCH_KEYS = ("exposure", "ownerKind", "podSelector", "namespaceSelector")


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
    remediate = data.get("remediate", "off")
    if remediate not in REMEDIATIONS:
        problems.append(f"remediate: want {' or '.join(REMEDIATIONS)}, got {remediate!r}")
    interval = data.get("remediateIntervalSeconds", Config().remediate_interval_seconds)
    if isinstance(interval, bool) or not isinstance(interval, int) or not 1 <= interval <= 86400:
        problems.append(f"remediateIntervalSeconds: want 1 to 86400, got {interval!r}")
    parsed = _settings(
        {k: v for k, v in data.items() if k not in _CONFIG_ONLY}, max_seconds, "", problems
    )
    profiles = _profiles(data.get("profiles"), max_seconds, problems)
    if problems:
        raise ConfigError(problems)
    return Config(
        values=parsed,
        max_seconds=max_seconds,
        strict=strict,
        excluded_namespaces=excluded,
        cluster_version=cluster_version,
        profiles=profiles,
        remediate=remediate,
        remediate_interval_seconds=interval,
    )


def _settings(
    data: Mapping[str, Any], max_seconds: int, where: str, problems: list[str]
) -> dict[str, Any]:
    """The settings keys of the file (or of a profile's `settings`), by annotation key."""
    parsed: dict[str, Any] = {}
    for key, raw in data.items():
        setting = _BY_CONFIG_KEY.get(key)
        if setting is None:
            why = "only at the top level" if key in _CONFIG_ONLY and where else "unknown key"
            problems.append(f"{where}{key}: {why}")
            continue
        try:
            parsed[setting.key] = setting.parse(raw, max_seconds)
        except values.InvalidValue as invalid:
            problems.append(f"{where}{key}: {invalid.reason}, got {raw!r}")
    return parsed


def _profiles(raw: Any, max_seconds: int, problems: list[str]) -> tuple[Profile, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        problems.append("profiles: want a list of {name, match, settings}")
        return ()
    profiles: list[Profile] = []
    names: set[str] = set()
    for index, item in enumerate(raw):
        name = item.get("name") if isinstance(item, Mapping) else None
        where = f"profiles[{index}]" + (f" ({name})" if isinstance(name, str) else "")
        before = len(problems)
        profile = _profile(item, where, max_seconds, problems)
        if profile is not None and profile.name in names:
            problems.append(f"{where}.name: {profile.name!r} is used by an earlier profile")
        if profile is not None and len(problems) == before:
            names.add(profile.name)
            profiles.append(profile)
    return tuple(profiles)


def _profile(item: Any, where: str, max_seconds: int, problems: list[str]) -> Profile | None:
    if not isinstance(item, Mapping):
        problems.append(f"{where}: want {{name, match, settings}}")
        return None
    before = len(problems)
    for key in item:
        if key not in ("name", "match", "settings"):
            problems.append(f"{where}.{key}: unknown key (want name, match, settings)")
    name = item.get("name")
    if not (isinstance(name, str) and len(name) <= 63 and _PROFILE_NAME.fullmatch(name)):
        problems.append(f"{where}.name: want a lower-case DNS label, got {name!r}")
    match = _match(item.get("match", {}), f"{where}.match", problems)
    raw_settings = item.get("settings", {})
    parsed: dict[str, Any] = {}
    if isinstance(raw_settings, Mapping):
        parsed = _settings(raw_settings, max_seconds, f"{where}.settings.", problems)
    else:
        problems.append(f"{where}.settings: want a mapping of settings")
    if len(problems) > before:
        return None
    return Profile(name=str(name), match=match, values=parsed)


def _match(raw: Any, where: str, problems: list[str]) -> Match:
    if raw is None:
        return Match()
    if not isinstance(raw, Mapping):
        problems.append(f"{where}: want a mapping of {', '.join(_MATCH_KEYS)}")
        return Match()
    for key in raw:
        if key not in _MATCH_KEYS:
            problems.append(f"{where}.{key}: unknown key (want {', '.join(_MATCH_KEYS)})")
    pod = raw.get("podSelector")
    namespace = raw.get("namespaceSelector")
    return Match(
        exposure=_one_or_more(raw, "exposure", EXPOSURES, where, problems),
        owner_kinds=_one_or_more(raw, "ownerKind", OWNER_KINDS, where, problems),
        pod_selector=None if pod is None else parse_selector(pod, f"{where}.podSelector", problems),
        namespace_selector=None
        if namespace is None
        else parse_selector(namespace, f"{where}.namespaceSelector", problems),
    )


def _one_or_more(
    raw: Mapping[str, Any], key: str, allowed: tuple[str, ...], where: str, problems: list[str]
) -> frozenset[str] | None:
    """A value from `allowed`, or a non-empty list of them."""
    if key not in raw:
        return None
    value = raw[key]
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(item, str) and item in allowed for item in items):
        problems.append(f"{where}.{key}: want {'|'.join(allowed)} or a list of them, got {value!r}")
        return None
    return frozenset(items)
