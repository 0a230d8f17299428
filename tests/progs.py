"""Helpers for the step tests: write a tiny spec and a tiny submission, grade it in-process.

Every test writes a spec of one to three checks and a small real program (Python, or C where the bug needs
C), then runs the engine on them over loopback. Nothing is mocked.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from grader import isolation
from grader.engine.runner import Options
from grader.report.model import RunResult
from grader.spec.loader import load_spec

PROG = "prog"

# A Python prelude shared by the server programs: the port from argv, a listening socket with SO_REUSEADDR,
# and helpers to serve each client in a thread or one at a time.
SERVER_PRELUDE = r'''
import os, signal, socket, struct, sys, threading, time

PORT = int(sys.argv[1])


def listener(reuse=True, kind=socket.SOCK_STREAM):
    s = socket.socket(socket.AF_INET, kind)
    if reuse:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", PORT))
    if kind == socket.SOCK_STREAM:
        s.listen(16)
    return s


def serve_threaded(handler, reuse=True):
    s = listener(reuse)
    while True:
        conn, _ = s.accept()
        threading.Thread(target=handler, args=(conn,), daemon=True).start()


def serve_iterative(handler, reuse=True):
    s = listener(reuse)
    while True:
        conn, _ = s.accept()
        handler(conn)


def recv_line(conn):
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def echo(conn):
    with conn:
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                conn.sendall(data)
        except OSError:
            pass
'''

# A Python prelude for client programs: nothing but the imports.
CLIENT_PRELUDE = r"""
import os, socket, sys, time
"""


def py_prog(folder: Path, body: str, *, prelude: str = SERVER_PRELUDE, name: str = PROG) -> Path:
    """Write an executable Python program ``folder/name``: the prelude, then ``body`` (dedented)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("#!/usr/bin/env python3\n" + prelude + "\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return folder


def c_prog(folder: Path, source: str, *, name: str = PROG, defines: tuple[str, ...] = ()) -> Path:
    """Compile a C program into ``folder/name`` with gcc -Wall -O2 (warnings are errors)."""
    gcc = shutil.which("gcc")
    assert gcc is not None, "gcc is required"
    folder.mkdir(parents=True, exist_ok=True)
    src = folder / f"{name}.c"
    src.write_text(textwrap.dedent(source))
    cmd = [gcc, "-Wall", "-Werror", "-O2", "-pthread", *(f"-D{d}" for d in defines), "-o", str(folder / name),
           str(src)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return folder


def write_spec(
    folder: Path,
    checks: str,
    *,
    run: str = f"./{PROG} {{port}}",
    ready: str | list[str] = "tcp",
    files: dict[str, bytes] | None = None,
    name: str = "spec.yaml",
) -> Path:
    """Write a spec whose checks are given as YAML text (a list); title and category default sensibly.

    ``files`` are written next to the spec (relative paths), for body_file and the like.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for rel, data in (files or {}).items():
        target = folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    items: list[dict[str, Any]] = yaml.safe_load(textwrap.dedent(checks))
    for item in items:
        item.setdefault("title", item["id"])
        item.setdefault("category", "protocol")
    doc = {
        "lab": "step-test",
        "title": "Step test",
        "submission": {"run": run, "ready": ready, "ready_timeout": 5},
        "defaults": {"timeout": 5},
        "checks": items,
    }
    path = folder / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@dataclass(frozen=True)
class Graded:
    """The result of one grading run, with outcomes and messages by check id."""

    result: RunResult

    @property
    def outcomes(self) -> dict[str, str]:
        return {c.id: c.outcome for c in self.result.checks}

    @property
    def messages(self) -> dict[str, str]:
        return {c.id: c.message for c in self.result.checks}

    @property
    def hints(self) -> dict[str, str]:
        return {c.id: c.hint for c in self.result.checks}

    def explain(self) -> str:
        """Everything about the run, for assertion messages."""
        lines = [f"status={self.result.status} {self.result.status_message}"]
        for c in self.result.checks:
            lines.append(f"--- {c.id}: {c.outcome}: {c.message}\n{c.transcript}")
        return "\n".join(lines)


BACKEND_VAR = "GRADER_TEST_BACKEND"


def run_grade(spec_path: Path, submission: Path, *, seed: int = 1, only: tuple[str, ...] = ()) -> Graded:
    """Load the spec and grade the submission with the backend under test (``pytest --backend``, default local):
    the step tests are the conformance suite every backend passes."""
    backend = isolation.get(os.environ.get(BACKEND_VAR, "local"))
    result = backend.grade(load_spec(spec_path), submission, Options(seed=seed, only=only))
    assert result.status == "graded", f"{result.status}: {result.status_message}\n{result.status_output}"
    return Graded(result)


MARK_VAR = "STEP_TEST_MARK"


def processes_marked(mark: str) -> list[str]:
    """Live processes whose environment has ``STEP_TEST_MARK=mark``: every program the engine started while the
    test had that variable set (the engine passes its environment on), wherever it runs."""
    wanted = f"{MARK_VAR}={mark}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                environ = f.read().split(b"\0")
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if wanted in environ:
            found.append(f"{entry}: {cmdline}")
    return found
