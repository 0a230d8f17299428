"""Finding specs: a path, or the name of a spec shipped with the package or in a course's own folders.

The labs ship inside the package (``grader/labs/``: ``specs/``, ``reference/``, ``fixtures/``), so a plain
``pip install`` can list, explain, check, selftest and serve them. ``GRADER_SPECS_DIR`` (one folder, or several
joined by ``os.pathsep``) adds a course's own specs; a course spec of the same name as a shipped one wins.
A lab's reference program and fixtures live beside its spec's folder: ``<specs>/../reference/<lab>`` and
``<specs>/../fixtures/<lab>/*``.
"""

from __future__ import annotations

import os
from pathlib import Path

from grader.errors import UsageError

LABS_DIR = Path(__file__).resolve().parent / "labs"


def specs_dir() -> Path:
    """The folder of the specs shipped with the package."""
    return LABS_DIR / "specs"


def search_dirs() -> list[Path]:
    """Where specs are looked for, first match wins: the course's folders, then the shipped one.

    A ``GRADER_SPECS_DIR`` entry that is not a folder is a usage error (a typo would otherwise hide a course's
    specs behind the shipped ones of the same name).
    """
    env = os.environ.get("GRADER_SPECS_DIR", "")
    extra = [Path(p).expanduser() for p in env.split(os.pathsep) if p]
    for folder in extra:
        if not folder.is_dir():
            raise UsageError(f"GRADER_SPECS_DIR names {folder}, which is not a folder")
    return [*extra, specs_dir()]


def shipped() -> list[Path]:
    """Every spec found, one per lab name (a course's folder shadows a shipped spec of the same name)."""
    found: dict[str, Path] = {}
    for folder in search_dirs():
        for path in sorted(folder.glob("*.yaml")):
            found.setdefault(path.stem, path)
    return [found[name] for name in sorted(found)]


def resolve(name: str) -> Path:
    path = Path(name)
    if path.is_file():
        return path
    for folder in search_dirs():
        candidate = folder / f"{name}.yaml"
        if candidate.is_file():
            return candidate
    names = ", ".join(p.stem for p in shipped()) or "none"
    raise UsageError(f"no spec file {name!r} and no spec of that name in {where()} (found: {names})")


def where() -> str:
    """The folders searched, in order, a missing one marked (the shipped one is missing from a broken install)."""
    return ", ".join(str(d) if d.is_dir() else f"{d} (missing)" for d in search_dirs())


def lab_root(spec_directory: Path) -> Path:
    """The folder holding ``reference/`` and ``fixtures/`` for specs in ``spec_directory``."""
    return spec_directory.resolve().parent
