"""Hostile submissions, graded for real under each backend.

Each attack (tests/hostile/hostile.py) reports a success by not starting ("ATTACK SUCCEEDED: ..."), so the
same program proves both sides: where a backend claims to stop it, the grading passes and nothing was read,
written or reached; where the README's table says a backend does not stop it, the attack is seen to work
(the test of the test). Whatever the attack, the grading ends within its deadline, leaves no process and no
work folder behind, and the next submission grades exactly as it would alone.

The table (keep it equal to the README's "What each backend stops"):
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from grader import catalog, isolation
from grader.driver import jail
from grader.engine.runner import Options
from grader.report.model import RunResult
from grader.spec.loader import load_spec

HERE = Path(__file__).resolve().parent / "hostile"
SPEC = load_spec(HERE / "spec.yaml")
REFERENCE = catalog.LABS_DIR / "reference" / "tcp-echo-server"

# Attacks whose success the program reports, and the resource attacks, with the backends that stop each.
STOPS: dict[str, set[str]] = {
    "spy": {"sandbox", "docker"},
    "tamper": {"sandbox", "docker"},
    "network": {"sandbox", "docker"},
    "daemon": {"sandbox", "docker"},
    "squat": {"local", "sandbox", "docker"},
    "memory": {"local", "sandbox", "docker"},
    "output": {"local", "sandbox", "docker"},
    "stubborn": {"local", "sandbox", "docker"},
    "forkbomb": {"sandbox", "docker"},
    "disk": {"sandbox", "docker"},
}
# Attacks that report their success by not starting: where stopped, the submission passes like a correct one.
REPORTED = {"spy", "tamper", "network"}
# What a backend that does not stop an attack can still run safely here (a fork bomb or a disk filler as
# root on the machine itself would harm the machine, so they run only where they are stopped).
RUN_UNSTOPPED = {"spy", "tamper", "network", "daemon"}
CASES = [(attack, backend) for attack, backends in STOPS.items() for backend in ("local", "sandbox", "docker")
         if backend in backends or attack in RUN_UNSTOPPED]


@dataclass
class HostService:
    """A TCP service on the host's loopback that a submission must not reach."""

    sock: socket.socket = field(default_factory=socket.socket)
    reached: list[str] = field(default_factory=list)

    def start(self) -> int:
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        threading.Thread(target=self._serve, daemon=True).start()
        return int(self.sock.getsockname()[1])

    def _serve(self) -> None:
        while self.sock.fileno() != -1:
            try:
                conn, addr = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.reached.append(f"{addr[0]}:{addr[1]}")
            conn.close()

    def close(self) -> None:
        self.sock.close()


def processes_with(marker: str) -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmdline:
                found.append(pid + ": " + cmdline.replace(b"\0", b" ").decode(errors="replace"))
    return found


def _uid(pid: str) -> int:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return -1


def kill_marked(marker: str) -> None:
    for line in processes_with(marker):
        subprocess.run(["kill", "-9", line.split(":")[0]], check=False)


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The grader's temporary folders go here, so the test sees exactly what this grading left."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.fixture
def host_service() -> Iterator[HostService]:
    svc = HostService()
    yield svc
    svc.close()


def make_submission(tmp_path: Path, attack: str, host_port: int, marker: str) -> tuple[Path, dict[Path, bytes]]:
    sub = tmp_path / f"sub-{marker}"
    sub.mkdir()
    shutil.copy(HERE / "hostile.py", sub / "hostile.py")
    launcher = sub / "echo_server"
    launcher.write_text(f'#!/bin/sh\nexec python3 ./hostile.py {attack} "$1"\n')
    launcher.chmod(launcher.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    other = tmp_path / "other-student"
    other.mkdir(exist_ok=True)
    (other / "server.c").write_text("/* another student's work */\n")
    canaries = tmp_path / "canaries"
    canaries.mkdir(exist_ok=True)
    originals: dict[Path, bytes] = {}
    for name in ("report.json", "spec.yaml", "grader-module.py"):
        path = canaries / name
        path.write_bytes(f"original {name}\n".encode())
        originals[path] = path.read_bytes()
    reads = [str(HERE / "spec.yaml"), str(catalog.specs_dir() / "http-server.yaml"),
             str(catalog.LABS_DIR / "fixtures" / "http-server" / "py-traversal" / "expect.yaml"),
             str(other / "server.c"), str(Path(catalog.__file__).resolve())]
    targets = {"read": reads, "write": [str(p) for p in originals], "host_port": host_port, "marker": marker}
    (sub / "targets.json").write_text(json.dumps(targets))
    return sub, originals


def grade(backend: str, sub: Path) -> tuple[RunResult, float]:
    t0 = time.monotonic()
    result = isolation.get(backend).grade(SPEC, sub, Options(seed=7))
    return result, time.monotonic() - t0


@pytest.mark.parametrize(("attack", "backend"), CASES, ids=[f"{a}-{b}" for a, b in CASES])
def test_hostile_submission(attack: str, backend: str, tmp_path: Path, host_service: HostService,
                            private_tmp: Path) -> None:
    if backend == "sandbox":
        assert jail.available() is None, jail.available()
    marker = f"hostile-{uuid.uuid4().hex}"
    sub, canaries = make_submission(tmp_path, attack, host_service.start(), marker)
    try:
        result, took = grade(backend, sub)
        left = processes_with(marker) + processes_with(str(sub))
    finally:
        kill_marked(marker)
        kill_marked(str(sub))
    stopped = backend in STOPS[attack]
    wall = SPEC.submission.limits.wall_seconds
    assert took < wall + isolation.SETUP_GRACE_S, f"the grading took {took:.1f}s"
    output = result.status_output + " ".join(c.message + c.transcript for c in result.checks)
    if stopped:
        assert "ATTACK SUCCEEDED" not in output, output[-2000:]
        if attack in REPORTED:
            assert result.status == "graded", (result.status_message, result.status_output[-2000:])
            assert {c.id: c.outcome for c in result.checks} == {"echo": "passed", "echo-fresh-server": "passed"}, [
                (c.id, c.message, c.transcript[-800:]) for c in result.checks]
        else:  # a resource attack may cost the submission its own checks (e.g. no process left to start its
            # server), with a reason; never a harness error
            assert [c.id for c in result.checks if c.outcome == "error"] == [], [c.message for c in result.checks]
        assert not left, f"processes left behind: {left}"
        assert host_service.reached == []
        for path, data in canaries.items():
            assert path.read_bytes() == data, f"{path} was changed"
    else:  # the README says this backend does not stop it: the attack is seen to work
        if attack == "daemon":
            assert left, "the daemon was expected to outlive a local grading"
        else:
            assert result.status == "start-failed", result.status
            assert "ATTACK SUCCEEDED" in result.status_output, result.status_output[-2000:]
    assert [p.name for p in private_tmp.glob("grader-*")] == [], "work folders left behind"
    if backend != "local":
        jailed = range(jail.UID_LOW, jail.UID_LOW + jail.UID_COUNT)
        busy = [p for p in os.listdir("/proc") if p.isdigit() and _uid(p) in jailed]
        assert busy == [], f"processes of submission users left: {busy}"
    # The next submission grades exactly as it would alone.
    after, _ = grade(backend, REFERENCE)
    assert after.status == "graded" and after.exit_code == 0, [(c.id, c.message) for c in after.checks]


def test_sandbox_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    """A submission that is not a folder is a usage error before anything starts."""
    from grader.errors import UsageError

    with pytest.raises(UsageError, match="not a folder"):
        isolation.get("sandbox").grade(SPEC, tmp_path / "missing", Options(seed=1))
