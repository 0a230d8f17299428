"""Shared fixtures."""

from __future__ import annotations

import os
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from installed import Installed, build_dists, make_venv
from progs import BACKEND_VAR, MARK_VAR, processes_marked


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--backend", default="local", choices=("local", "sandbox", "docker"),
                     help="the backend the step tests (the backend conformance suite) grade with")


def pytest_configure(config: pytest.Config) -> None:
    os.environ[BACKEND_VAR] = str(config.getoption("--backend"))


@pytest.fixture
def no_leftover_processes(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail the test if a program the engine started during it is still running once it ends."""
    mark = uuid.uuid4().hex
    monkeypatch.setenv(MARK_VAR, mark)
    yield
    left = processes_marked(mark)
    assert not left, f"processes left running: {left}"


@pytest.fixture
def direct_python(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let test programs' `#!/usr/bin/env python3` find the interpreter itself, not a version manager's shim
    (pyenv's costs about 0.1 s a start)."""
    bindir = Path(sys.base_prefix) / "bin"
    if (bindir / "python3").is_file():
        monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")


@pytest.fixture(scope="session")
def installed() -> Iterator[Installed]:
    """The sdist and wheel built from this checkout, the wheel installed into a fresh venv in a temporary folder
    outside the checkout; built once per test session and removed at its end."""
    with tempfile.TemporaryDirectory(prefix="grader-wheel-") as tmp:
        folder = Path(tmp)
        (folder / "dist").mkdir()
        sdist, wheel = build_dists(folder / "dist")
        yield Installed(sdist, wheel, make_venv(folder, wheel))
