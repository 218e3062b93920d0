"""Label selectors as Kubernetes writes them: `matchLabels` and `matchExpressions`.

Parsed once, when the configuration file is read (every problem listed); matched per pod
with a few dictionary lookups. The semantics are those of `metav1.LabelSelector`: all terms
must hold, an empty selector matches everything, `NotIn` and `DoesNotExist` hold for a
missing label.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from webhook.core.values import is_label_value, is_qualified_name

OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    operator: str
    values: frozenset[str] = frozenset()

    def holds(self, labels: Mapping[str, Any]) -> bool:
        if self.operator == "Exists":
            return self.key in labels
        if self.operator == "DoesNotExist":
            return self.key not in labels
        present = self.key in labels and labels[self.key] in self.values
        return present if self.operator == "In" else not present

    def __str__(self) -> str:
        if self.operator in ("Exists", "DoesNotExist"):
            return f"{'!' if self.operator == 'DoesNotExist' else ''}{self.key}"
        word = "in" if self.operator == "In" else "notin"
        return f"{self.key} {word} ({','.join(sorted(self.values))})"


@dataclass(frozen=True, slots=True)
class Selector:
    match_labels: tuple[tuple[str, str], ...] = ()
    expressions: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, Any]) -> bool:
        for key, value in self.match_labels:
            if labels.get(key) != value:
                return False
        return all(requirement.holds(labels) for requirement in self.expressions)

    def __str__(self) -> str:
        """kubectl's selector syntax (`app=web,tier in (a,b),!legacy`); `{}` for everything."""
        terms = [f"{key}={value}" for key, value in self.match_labels]
        terms += [str(requirement) for requirement in self.expressions]
        return ",".join(terms) or "{}"


def parse_selector(raw: Any, where: str, problems: list[str]) -> Selector | None:
    """A Selector, or None after appending to `problems` (each prefixed with `where`)."""
    if not isinstance(raw, Mapping):
        problems.append(f"{where}: want a label selector (matchLabels, matchExpressions)")
        return None
    before = len(problems)
    for key in raw:
        if key not in ("matchLabels", "matchExpressions"):
            problems.append(f"{where}.{key}: unknown key (want matchLabels, matchExpressions)")
    labels = _match_labels(raw.get("matchLabels", {}), f"{where}.matchLabels", problems)
    expressions = _expressions(raw.get("matchExpressions", []), where, problems)
    if len(problems) > before:
        return None
    return Selector(labels, expressions)


def _match_labels(raw: Any, where: str, problems: list[str]) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, Mapping):
        problems.append(f"{where}: want a mapping of label keys to values")
        return ()
    pairs = []
    for key, value in raw.items():
        if not is_qualified_name(key):
            problems.append(f"{where}: {key!r} is not a label key")
        elif not is_label_value(value):
            problems.append(f"{where}.{key}: {value!r} is not a label value")
        else:
            pairs.append((key, value))
    return tuple(sorted(pairs))


def _expressions(raw: Any, where: str, problems: list[str]) -> tuple[Requirement, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        problems.append(f"{where}.matchExpressions: want a list of {{key, operator, values}}")
        return ()
    requirements = []
    for index, item in enumerate(raw):
        at = f"{where}.matchExpressions[{index}]"
        if not isinstance(item, Mapping):
            problems.append(f"{at}: want {{key, operator, values}}")
            continue
        requirement = _requirement(item, at, problems)
        if requirement is not None:
            requirements.append(requirement)
    return tuple(requirements)


def _requirement(item: Mapping[str, Any], at: str, problems: list[str]) -> Requirement | None:
    before = len(problems)
    for name in item:
        if name not in ("key", "operator", "values"):
            problems.append(f"{at}.{name}: unknown key (want key, operator, values)")
    key, operator, values = item.get("key"), item.get("operator"), item.get("values")
    if not is_qualified_name(key):
        problems.append(f"{at}.key: want a label key, got {key!r}")
    if operator not in OPERATORS:
        problems.append(f"{at}.operator: want {'|'.join(OPERATORS)}, got {operator!r}")
    if values is not None and not (
        isinstance(values, list) and all(is_label_value(value) for value in values)
    ):
        problems.append(f"{at}.values: want a list of label values, got {values!r}")
    elif operator in ("In", "NotIn") and not values:
        problems.append(f"{at}.values: {operator} needs at least one value")
    elif operator in ("Exists", "DoesNotExist") and values:
        problems.append(f"{at}.values: {operator} takes no values")
    if len(problems) > before:
        return None
    return Requirement(str(key), str(operator), frozenset(values or ()))
