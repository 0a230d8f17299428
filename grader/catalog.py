"""Finding specs: a path, or the name of a spec shipped in the project's specs/ folder."""

from __future__ import annotations

import os
from pathlib import Path

from grader.errors import UsageError


def specs_dir() -> Path:
    env = os.environ.get("GRADER_SPECS_DIR")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "specs"


def shipped() -> list[Path]:
    return sorted(specs_dir().glob("*.yaml"))


def resolve(name: str) -> Path:
    path = Path(name)
    if path.is_file():
        return path
    candidate = specs_dir() / f"{name}.yaml"
    if candidate.is_file():
        return candidate
    names = ", ".join(p.stem for p in shipped()) or "none"
    raise UsageError(f"no spec file {name!r} and no shipped spec of that name (shipped: {names})")
