"""What one pod gets, filled step by step by `mutate` and turned into operations at the end."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from webhook.core.model import AdmissionWarning

DEFAULT_GRACE_SECONDS = 30
"""What the API server defaults `terminationGracePeriodSeconds` to; a template may omit it."""


@dataclass(slots=True)
class Plan:
    """What this pod gets; filled step by step, turned into operations at the end."""

    prestop: dict[int, dict[str, Any]] = field(default_factory=dict)
    resized: dict[int, dict[str, Any] | None] = field(default_factory=dict)
    """Our preStops of an earlier round, shortened (None: removed, a 0 s sleep before 1.33)."""
    poststart: dict[int, dict[str, Any]] = field(default_factory=dict)
    grace: tuple[int | None, int] | None = None
    grace_record: tuple[int, int] | None = None
    """The grace period before and after this round, for the status (also when unchanged)."""
    ceiling: tuple[int, str] | None = None
    """The ceiling that shaped the grace period, and its source, for the status."""
    init_order: list[str] | None = None
    warnings: list[AdmissionWarning] = field(default_factory=list)
    explanation: list[str] = field(default_factory=list)
    explain: bool = False


def mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
