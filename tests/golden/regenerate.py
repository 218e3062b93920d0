"""Rewrite every golden output from the core: `python -m tests.golden.regenerate`.

Also run by `UPDATE_GOLDEN=1 pytest tests/golden`. Files are replaced atomically, outputs
whose input is gone are deleted, and a unified diff of every change is printed so the
reviewer reads what changed rather than trusting it.
"""

from __future__ import annotations

import sys

from tests.golden import harness


def regenerate() -> list[str]:
    """Bring the outputs up to date; returns the report lines (diffs and a summary)."""
    report: list[str] = []
    wanted: set[str] = set()
    changed = 0
    for case in harness.discover():
        for suffix, text in harness.run_core(case).expected_files().items():
            path = case.output(suffix)
            wanted.add(path.name)
            old = path.read_text(encoding="utf-8") if path.exists() else ""
            if path.exists() and old == text:
                continue
            report.append(harness.unified_diff(old, text, path.name))
            harness.write_atomically(path, text)
            changed += 1
    removed = 0
    for path in sorted(harness.output_files()):
        if path.name not in wanted:
            report.append(f"removed {path.name} (no input produces it any more)\n")
            path.unlink()
            removed += 1
    report.append(f"golden files: {changed} written, {removed} removed\n")
    return report


def main() -> int:
    sys.stdout.write("".join(regenerate()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
