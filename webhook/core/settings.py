"""The settings table and its layers: default < config file < profile < namespace < pod.

Every setting has one key; an annotation `lifecycle-webhook.io/<key>` on the Namespace or on the
Pod sets it, and so does the camelCase key in the configuration file (and in a profile's
`settings`) where the table has one. A few are the operator's alone (`annotation=False`): a
team cannot lift a ceiling with an annotation. A value that does not parse is ignored (the
layer below stays in force) and reported once.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from webhook.core import values
from webhook.core.messages import quoted, warning
from webhook.core.model import PREFIX, STATUS_KEY, AdmissionWarning, Config, Layer, Profile


@dataclass(frozen=True, slots=True)
class Setting:
    key: str
    config_key: str | None
    parse: values.Parser
    default: Any = None
    annotation: bool = True
    """Whether Namespace and Pod annotations may set it."""


SETTINGS: tuple[Setting, ...] = (
    Setting("prestop", "prestop", values.choice("auto", "sleep", "exec", "http", "none"), "auto"),
    Setting("prestop-seconds", "prestopSeconds", values.parse_prestop_seconds, 5),
    Setting("prestop-exec", "prestopExec", values.parse_command),
    Setting("prestop-http-path", "prestopHttpPath", values.parse_http_path, "/shutdown"),
    Setting("prestop-http-port", "prestopHttpPort", values.parse_port),
    Setting("shutdown-seconds", "shutdownSeconds", values.parse_seconds, 25),
    Setting("sidecar-shutdown-seconds", "sidecarShutdownSeconds", values.parse_seconds, 5),
    Setting("termination-grace-period-seconds", None, values.parse_seconds),
    Setting("containers", None, values.parse_names),
    Setting("sidecars", None, values.parse_names),
    Setting("init-order", None, values.parse_init_order),
    Setting("poststart-exec", None, values.parse_command),
    Setting("jobs", "jobs", values.choice("skip", "inject"), "skip"),
    Setting("inject", None, values.parse_bool),
    Setting("report-only", "reportOnly", values.parse_bool, False),
    Setting(
        "max-grace-period-seconds", "maxGracePeriodSeconds", values.parse_ceiling, annotation=False
    ),
)
SETTINGS_BY_KEY = {setting.key: setting for setting in SETTINGS}
_ANNOTATION_SETTINGS = tuple(setting.key for setting in SETTINGS if setting.annotation)
ANNOTATION_KEYS = tuple(PREFIX + key for key in _ANNOTATION_SETTINGS)
_RESERVED_ANNOTATIONS = frozenset({STATUS_KEY})


@dataclass(frozen=True, slots=True)
class Resolved:
    """The value of every setting for one pod, and the layer each came from."""

    values: Mapping[str, Any]
    layers: Mapping[str, Layer]
    problems: tuple[AdmissionWarning, ...]
    """Invalid values and unknown keys: warnings, or a denial in strict mode."""

    def __getitem__(self, key: str) -> Any:
        return self.values[key]


def resolve(
    config: Config,
    profile: Profile | None,
    namespace_annotations: Mapping[str, Any],
    pod_annotations: Mapping[str, Any],
) -> Resolved:
    resolved: dict[str, Any] = {}
    layers: dict[str, Layer] = {}
    problems: list[AdmissionWarning] = []
    profile_values = profile.values if profile is not None else {}
    profile_layer = profile.layer if profile is not None else ""
    for setting in SETTINGS:
        resolved[setting.key] = setting.default
        if setting.default is not None:
            layers[setting.key] = "default"
        if setting.key in config.values:
            resolved[setting.key] = config.values[setting.key]
            layers[setting.key] = "config"
        if setting.key in profile_values:
            resolved[setting.key] = profile_values[setting.key]
            layers[setting.key] = profile_layer
    for layer, layer_annotations in (
        ("namespace", namespace_annotations),
        ("pod", pod_annotations),
    ):
        # Sorted, as the API server serialises annotations: warnings come in the same order
        # from the server and from the CLI, whatever order a manifest listed them in.
        ours = sorted(k for k in layer_annotations if k.startswith(PREFIX))
        for name in ours:
            if name in _RESERVED_ANNOTATIONS:
                continue
            raw = layer_annotations[name]
            key = name[len(PREFIX) :]
            known = SETTINGS_BY_KEY.get(key)
            if known is None:
                problems.append(_unknown_key(key, layer))
                continue
            if not known.annotation:
                problems.append(
                    warning(
                        "config_only",
                        f"{{}} on {layer} ignored: {known.config_key} is config-only",
                        name,
                    )
                )
                continue
            try:
                resolved[key] = known.parse(raw, config.max_seconds)
            except values.InvalidValue as invalid:
                problems.append(
                    warning(
                        "invalid_value",
                        f"{name}={{}} on {layer} ignored: {invalid.reason}",
                        quoted(raw),
                    )
                )
                continue
            layers[key] = layer
    return Resolved(values=resolved, layers=layers, problems=tuple(problems))


def _unknown_key(key: str, layer: str) -> AdmissionWarning:
    close = difflib.get_close_matches(key, _ANNOTATION_SETTINGS, n=1, cutoff=0.7)
    hint = f"; did you mean {close[0]}?" if close else ""
    return warning("unknown_key", f"unknown annotation {PREFIX}{{}} on {layer}{hint}", key)
