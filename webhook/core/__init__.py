"""The pure core: a pod and its settings in, patch operations and warnings out.

No HTTP, environment, clock or logging here, and no fastapi, uvicorn or kubernetes imports:
the server, the CLI and the tests all call the same `mutate`.
"""

from webhook.core.config import ConfigError, parse_config
from webhook.core.model import (
    AdmissionWarning,
    Config,
    Mutation,
    Settings,
)
from webhook.core.mutate import mutate
from webhook.core.patch import PatchError, apply_patch

__all__ = [
    "AdmissionWarning",
    "Config",
    "ConfigError",
    "Mutation",
    "PatchError",
    "Settings",
    "apply_patch",
    "mutate",
    "parse_config",
]
