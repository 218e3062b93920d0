"""Warning texts as the API server will show them.

The API server drops warnings with control characters and truncates long ones; Kubernetes asks
for at most 120 characters. Every text is therefore built here: prefixed, with user-supplied
parts quoted, escaped to printable ASCII and shortened before anything else is cut.
"""

from __future__ import annotations

from webhook.core.model import AdmissionWarning

WARNING_PREFIX = "lifecycle-webhook: "
MAX_WARNING_LENGTH = 120
_ELLIPSIS = "..."


def printable(value: object) -> str:
    """Escape anything that is not printable ASCII, so a header can carry it."""
    text = value if isinstance(value, str) else repr(value)
    out = []
    for char in text:
        if " " <= char <= "~":
            out.append(char)
        elif ord(char) <= 0xFFFF:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    return "".join(out)


def shorten(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[: max(limit - len(_ELLIPSIS), 0)] + _ELLIPSIS


MIN_ELASTIC_LENGTH = 16


def warning(reason: str, template: str, elastic: object = "") -> AdmissionWarning:
    """Build a warning from a template with one `{}` for the user-supplied part.

    The elastic part is escaped and shortened so the whole text fits in 120 characters, but
    keeps at least 16 characters: naming the offending value matters more than the tail of
    the template, which is what gets cut when both cannot fit.
    """
    fixed = WARNING_PREFIX + template.replace("{}", "")
    room = MAX_WARNING_LENGTH - len(fixed)
    part = shorten(printable(elastic), max(room, MIN_ELASTIC_LENGTH))
    text = shorten(WARNING_PREFIX + template.replace("{}", part), MAX_WARNING_LENGTH)
    return AdmissionWarning(reason=reason, text=text)


def quoted(value: object) -> str:
    return '"' + (value if isinstance(value, str) else repr(value)) + '"'
