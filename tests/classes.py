"""Helpers for the class (batch) tests: lay out a small class of real submissions, as an LMS download does."""

from __future__ import annotations

import shutil
from pathlib import Path

from grader import catalog

LABS = catalog.LABS_DIR
FAST_LAB = "udp-echo-server"  # the fastest shipped lab to grade (about 0.2 s a submission)


def make_class(root: Path, lab: str = FAST_LAB, fixtures: tuple[str, ...] = ("py-strips", "c-no-htons"),
               broken: bool = True) -> dict[str, str]:
    """Copy the reference and some fixtures as students; with ``broken``, add a student whose build fails, an
    empty folder and one holding only a compiled binary. Returns student -> expected status."""
    root.mkdir(parents=True, exist_ok=True)
    expected = {"alice-reference": "graded"}
    shutil.copytree(LABS / "reference" / lab, root / "alice-reference")
    for fx in fixtures:
        shutil.copytree(LABS / "fixtures" / lab / fx, root / f"bob-{fx}")
        expected[f"bob-{fx}"] = "graded"
    if broken:
        (root / "carol-build-fails").mkdir()
        (root / "carol-build-fails" / "Makefile").write_text("all:\n\tcc -o udp_echo missing.c\n")
        expected["carol-build-fails"] = "build-failed"
        (root / "dave-empty").mkdir()
        (root / "dave-empty" / ".DS_Store").write_bytes(b"\0\0")  # what a Mac leaves: still nothing handed in
        expected["dave-empty"] = "empty"
        (root / "erin-binary").mkdir()
        shutil.copy2("/bin/true", root / "erin-binary" / "udp_echo")
        expected["erin-binary"] = "binary-only"
    return expected
