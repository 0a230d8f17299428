"""The docker backend, for real: a grading in a container of the grader image, removed whatever happens."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import docker
import pytest

from grader import catalog, isolation
from grader.engine.runner import Options
from grader.spec.loader import load_spec

LABEL = "org.socket-lab-grader.grading"


def gradings(client: docker.DockerClient) -> list[str]:
    return [c.name for c in client.containers.list(all=True, filters={"label": LABEL})]


@pytest.fixture
def client() -> docker.DockerClient:
    c = docker.from_env()
    yield c
    c.close()


def test_docker_grades_like_local(client: docker.DockerClient) -> None:
    spec = load_spec(catalog.resolve("tcp-echo-server"))
    fixture = catalog.LABS_DIR / "fixtures" / "tcp-echo-server" / "c-sizeof-buf"
    before = set(gradings(client))
    local = isolation.get("local").grade(spec, fixture, Options(seed=11))
    boxed = isolation.get("docker").grade(spec, fixture, Options(seed=11))
    assert {c.id: c.outcome for c in boxed.checks} == {c.id: c.outcome for c in local.checks}
    assert boxed.submission == str(fixture)
    assert set(gradings(client)) == before, "a grading container was left behind"


def test_sigterm_removes_the_container(tmp_path: Path, client: docker.DockerClient) -> None:
    """A grader stopped with SIGTERM mid-grading leaves no container behind."""
    sub = tmp_path / "slow"
    sub.mkdir()
    server = sub / "echo_server"
    # Listens, accepts, never answers: every check waits for its timeout, so the grading is long.
    server.write_text("#!/usr/bin/env python3\nimport socket, sys, time\ns = socket.socket()\n"
                      "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
                      "s.bind(('', int(sys.argv[1])))\ns.listen(8)\nconns = []\n"
                      "end = time.monotonic() + 120\n"
                      "while time.monotonic() < end:\n    conns.append(s.accept()[0])\n")
    server.chmod(0o755)
    before = set(gradings(client))
    proc = subprocess.Popen([sys.executable, "-m", "grader", "check", "tcp-echo-server", str(sub),
                             "--backend", "docker", "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not set(gradings(client)) - before:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no grading container appeared"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert set(gradings(client)) == before, "the container outlived the grader"


def test_docker_refuses_what_is_not_a_folder(tmp_path: Path) -> None:
    from grader.errors import UsageError

    spec = load_spec(catalog.resolve("tcp-echo-server"))
    with pytest.raises(UsageError, match="not a folder"):
        isolation.get("docker").grade(spec, tmp_path / "missing", Options(seed=1))
