"""The configuration file (a mounted ConfigMap): read at start, re-read when its bytes change.

The file holds the camelCase keys of SPEC section 3 as YAML or JSON; `webhook.core.parse_config`
validates them. The webhook's own namespace is always added to `excludedNamespaces`, even
when the file lists its own: a webhook that mutates (and so depends on) its own pods cannot
start them again once it is down and the failure policy is Fail.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from webhook.core.model import Config
from webhook.logs import JsonLog
from webhook.metrics import Metrics

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class ConfigFileError(Exception):
    """The file cannot be used; `problems` lists every reason, one per item."""

    def __init__(self, path: str | os.PathLike[str], problems: list[str]) -> None:
        super().__init__(f"{path}: " + "; ".join(problems))
        self.path = str(path)
        self.problems = problems


def own_namespace() -> str | None:
    """The namespace this process runs in: $POD_NAMESPACE, else the service account's."""
    namespace = os.environ.get("POD_NAMESPACE", "").strip()
    if namespace:
        return namespace
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or None
    except OSError:
        return None


def with_namespace_excluded(config: Config, namespace: str | None) -> Config:
    if not namespace or namespace in config.excluded_namespaces:
        return config
    return dataclasses.replace(config, excluded_namespaces=config.excluded_namespaces | {namespace})


def parse_config_bytes(path: str | os.PathLike[str], data: bytes) -> Config:
    """Decode YAML or JSON (JSON is YAML) and validate it with the core."""
    from webhook.core import ConfigError, parse_config

    mapping: Any
    if not data.strip():
        mapping = {}
    else:
        import yaml

        loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        try:
            mapping = yaml.load(data, Loader=loader)  # noqa: S506 - a SafeLoader
        except yaml.YAMLError as exc:
            raise ConfigFileError(path, [f"not YAML or JSON: {exc}".replace("\n", " ")]) from None
        if mapping is None:
            mapping = {}
    if not isinstance(mapping, dict):
        raise ConfigFileError(
            path, [f"must be a mapping of settings, not {type(mapping).__name__}"]
        )
    try:
        return parse_config(mapping)
    except ConfigError as exc:
        problems = getattr(exc, "problems", None) or [str(exc)]
        raise ConfigFileError(path, [str(p) for p in problems]) from None


def load_config(path: str | os.PathLike[str] | None, namespace: str | None) -> tuple[Config, bytes]:
    """The Config for `path` (built-in defaults when None) plus the bytes it came from."""
    if path is None:
        return with_namespace_excluded(Config(), namespace), b""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigFileError(path, [f"cannot read: {exc.strerror or exc}"]) from None
    return with_namespace_excluded(parse_config_bytes(path, data), namespace), data


class ConfigWatcher:
    """Re-reads the file when its bytes change; a bad file keeps the previous config."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        data: bytes,
        namespace: str | None,
        on_change: Callable[[Config], None],
        *,
        log: JsonLog,
        metrics: Metrics,
    ) -> None:
        self.path = Path(path)
        self.namespace = namespace
        self.on_change = on_change
        self.log = log
        self.metrics = metrics
        self._seen = data
        self._unreadable = False

    def check(self) -> bool:
        """True when a new config was applied."""
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            if not self._unreadable:
                self._unreadable = True
                self.log.event(
                    "config reload failed",
                    level="error",
                    path=str(self.path),
                    problems=[f"cannot read: {exc.strerror or exc}"],
                    keeping="previous config",
                )
                self.metrics.config_reloads.labels("error").inc()
            return False
        self._unreadable = False
        if data == self._seen:
            return False
        self._seen = data
        try:
            config = with_namespace_excluded(parse_config_bytes(self.path, data), self.namespace)
        except ConfigFileError as exc:
            time.sleep(0.1)
            try:
                if self.path.read_bytes() != data:
                    self._seen = b"\0"  # mid-write: look again on the next poll
                    return False
            except OSError:
                pass
            self.metrics.config_reloads.labels("error").inc()
            self.log.event(
                "config reload failed",
                level="error",
                path=str(self.path),
                problems=exc.problems,
                keeping="previous config",
            )
            return False
        self.on_change(config)
        self.metrics.config_reloads.labels("success").inc()
        self.log.event("config reloaded", path=str(self.path))
        return True
