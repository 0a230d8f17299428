"""Supervision: build, readiness, crash and restart, output caps, and nothing left running afterwards."""

from __future__ import annotations

import os
import tempfile
import textwrap
from pathlib import Path

import pytest

from grader.driver import procfs
from grader.driver.backend import copy_submission
from grader.engine.runner import Options, grade
from grader.errors import SubmissionError
from grader.spec.loader import load_spec

SPEC = """\
lab: sup
title: Supervision
submission:
  build: {build}
  run: ./server {{port}}
  ready: tcp
  ready_timeout: {ready_timeout}
checks:
  - id: echo
    title: Echo
    category: protocol
    timeout: 5
    steps:
      - connect: {{}}
      - send: {{text: "ping"}}
      - expect_bytes: {{echo: true, timeout: 3}}
  - id: again
    title: Echo again
    category: protocol
    timeout: 5
    steps:
      - connect: {{}}
      - send: {{text: "pong"}}
      - expect_bytes: {{echo: true, timeout: 3}}
"""

ECHO = """\
#!/usr/bin/env python3
import os, socket, sys
{prelude}
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(8)
while True:
    c, _ = s.accept()
    data = c.recv(100)
    {on_request}
    c.sendall(data); c.close()
"""


def setup(tmp_path: Path, prelude: str = "", on_request: str = "pass", build: str = "null",
          ready_timeout: float = 5) -> tuple[Path, Path]:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.format(build=build, ready_timeout=ready_timeout))
    sub = tmp_path / "sub"
    sub.mkdir()
    prog = sub / "server"
    prog.write_text(ECHO.format(prelude=textwrap.dedent(prelude), on_request=on_request))
    prog.chmod(0o755)
    return spec, sub


def session_members(marker: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmd:
                pids.append(int(entry))
    return pids


def test_passes_and_leaves_nothing_running(tmp_path: Path) -> None:
    # The server forks a detached grandchild that would outlive a naive kill of the leader.
    prelude = """
    import subprocess
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", "grader-test-orphan-marker"],
                     start_new_session=True)
    """
    spec, sub = setup(tmp_path, prelude=prelude)
    result = grade(load_spec(spec), sub, Options(seed=1))
    assert [c.outcome for c in result.checks] == ["passed", "passed"]
    assert session_members("grader-test-orphan-marker") == []
    assert not (sub / "build-output").exists()


def test_build_failure_is_exit_3_with_output(tmp_path: Path) -> None:
    spec, sub = setup(tmp_path, build="'echo compiling; echo error: oops >&2; exit 2'")
    result = grade(load_spec(spec), sub, Options(seed=1))
    assert result.status == "build-failed" and result.exit_code == 3
    assert "error: oops" in result.status_output
    assert all(c.outcome == "failed" for c in result.checks)


def test_never_ready_shows_stderr(tmp_path: Path) -> None:
    spec, sub = setup(tmp_path, prelude="sys.stderr.write('cannot bind: oops\\n'); sys.exit(4)")
    result = grade(load_spec(spec), sub, Options(seed=1))
    assert result.status == "start-failed" and result.exit_code == 3
    assert "exited with status 4" in result.status_message
    assert "cannot bind: oops" in result.status_output


def test_never_listens_times_out(tmp_path: Path) -> None:
    spec, sub = setup(tmp_path, prelude="import time; time.sleep(30)", ready_timeout=0.5)
    result = grade(load_spec(spec), sub, Options(seed=1))
    assert result.status == "start-failed"
    assert "did not listen on TCP port" in result.status_message


def test_crash_costs_only_its_check(tmp_path: Path) -> None:
    # Dies of SIGSEGV on "ping" only; the next check gets a fresh server and passes.
    spec, sub = setup(tmp_path, on_request="import signal\n    if data == b'ping': os.kill(os.getpid(), "
                      "signal.SIGSEGV)")
    result = grade(load_spec(spec), sub, Options(seed=1))
    outcomes = {c.id: c for c in result.checks}
    assert outcomes["echo"].outcome == "failed"
    assert "SIGSEGV" in outcomes["echo"].message
    assert outcomes["again"].outcome == "passed"


def test_output_is_capped(tmp_path: Path) -> None:
    prelude = """
    import threading
    def spam():
        chunk = b"x" * 65536
        for _ in range(800):  # 50 MiB
            os.write(1, chunk)
    threading.Thread(target=spam, daemon=True).start()
    """
    spec, sub = setup(tmp_path, prelude=prelude)
    result = grade(load_spec(spec), sub, Options(seed=1))
    assert [c.outcome for c in result.checks] == ["passed", "passed"]


def test_submission_folder_is_not_written(tmp_path: Path) -> None:
    spec, sub = setup(tmp_path, build="'echo built > artefact'")
    before = sorted(p.name for p in sub.iterdir())
    result = grade(load_spec(spec), sub, Options(seed=1))
    assert result.status == "graded"
    assert sorted(p.name for p in sub.iterdir()) == before


def test_submission_folder_holding_the_graders_own_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `grader check lab /tmp` (or a TMPDIR inside the submission): the working folder is left out of the
    # copy, not copied into itself without end.
    spec, sub = setup(tmp_path)
    scratch = sub / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    result = grade(load_spec(spec), sub, Options(seed=1))
    assert result.status == "graded"
    assert [c.outcome for c in result.checks] == ["passed", "passed"]


def test_a_huge_submission_folder_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "small").write_bytes(b"x" * 10)
    (src / "big").write_bytes(b"x" * 100)
    with pytest.raises(SubmissionError, match="holds more than 0 MiB of files: is it the right folder"):
        copy_submission(src, tmp_path / "dst", skip=tmp_path / "work", limit=50)
    assert not (tmp_path / "dst").exists()
    copy_submission(src, tmp_path / "dst", skip=tmp_path / "work", limit=200)
    assert sorted(p.name for p in (tmp_path / "dst").iterdir()) == ["big", "small"]


def test_missing_htons_is_found_on_swapped_port(tmp_path: Path) -> None:
    # The harness still reaches a server on the byte-swapped port, so only a port check would fail.
    spec, sub = setup(tmp_path)
    prog = sub / "server"
    prog.write_text(prog.read_text().replace('int(sys.argv[1])', '__import__("socket").ntohs(int(sys.argv[1]))'))
    result = grade(load_spec(spec), sub, Options(seed=1))
    assert [c.outcome for c in result.checks] == ["passed", "passed"]
    assert procfs.byteswap16(procfs.byteswap16(8080)) == 8080
