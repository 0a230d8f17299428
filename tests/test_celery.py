"""grader grade --executor celery: a real redis-server (Debian's) and two real `grader worker` processes on
loopback grade a class; one worker is killed mid-batch and nothing is lost or graded twice; a task past its
time limit is stopped, with everything it started, and its student reported as not graded."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml
from classes import FAST_LAB, LABS, make_class
from progs import MARK_VAR, processes_marked

from grader.report.model import RunResult

TIME_LIMIT = "6"  # seconds a task may take here (soft; the worker process is killed 10 s later)
REDIS_SERVER = "/usr/bin/redis-server"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(predicate: object, what: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out after {seconds:.0f}s waiting for {what}"
        time.sleep(0.05)  # polling, bounded by the deadline


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[str]:
    assert os.access(REDIS_SERVER, os.X_OK), "redis-server is missing: scripts/setup.sh installs redis-server"
    for _attempt in range(5):  # a port picked now may be taken by the time redis binds it: pick again
        port = _free_port()
        proc = subprocess.Popen([REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no", "--dir", str(tmp_path)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)
        deadline = time.monotonic() + 10
        try:
            while proc.poll() is None and time.monotonic() < deadline:
                try:
                    if client.ping():
                        break
                except redis.ConnectionError:
                    time.sleep(0.05)
            if proc.poll() is None:
                try:
                    yield f"redis://127.0.0.1:{port}/0"
                    return
                finally:
                    client.close()
        finally:
            proc.terminate()
            proc.wait(10)
    pytest.fail("could not start redis-server on a free loopback port")


class Worker:
    def __init__(self, broker: str, log: Path, mark: str, tmpdir: Path | None = None) -> None:
        self.mark, self.log = mark, log
        self.tmpdir = tmpdir or log.with_suffix(".tmp")  # its gradings' private folders: none may be left behind
        self.tmpdir.mkdir(exist_ok=True)
        env = {**os.environ, MARK_VAR: mark, "GRADER_TASK_TIME_LIMIT": TIME_LIMIT, "TMPDIR": str(self.tmpdir)}
        self.proc = subprocess.Popen([sys.executable, "-m", "grader", "worker", "--broker", broker,
                                      "--concurrency", "1"], env=env, stdout=log.open("w"),
                                     stderr=subprocess.STDOUT)
        _wait(lambda: " ready." in log.read_text() or self.proc.poll() is not None, "a worker to be ready", 60)
        assert self.proc.poll() is None, log.read_text()

    def grading(self) -> bool:
        """Is a program of a submission running under this worker (not the worker's own processes)?"""
        return any("grader" not in p.split(":", 1)[1] for p in processes_marked(self.mark))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _expected(name: str) -> set[str]:
    fixture = name.removeprefix("bob-")
    path = LABS / "fixtures" / FAST_LAB / fixture / "expect.yaml"
    return set(yaml.safe_load(path.read_text())["fails"]) if path.is_file() else set()


def test_two_workers_one_killed_mid_batch(broker: str, tmp_path: Path) -> None:
    fixtures = ("py-strips", "py-exits-on-empty", "c-no-htons", "c-strlen")
    make_class(tmp_path / "class", fixtures=fixtures)
    slow = tmp_path / "class" / "frank-slow-build"
    slow.mkdir()
    (slow / "Makefile").write_text("all:\n\tsleep 100\n")  # past the task's time limit
    workers = [Worker(broker, tmp_path / f"worker{i}.log", f"celery-{i}-{os.getpid()}-{time.monotonic_ns()}")
               for i in (1, 2)]
    out = tmp_path / "out"
    env = {**os.environ, "GRADER_TASK_TIME_LIMIT": TIME_LIMIT}
    batch = subprocess.Popen([sys.executable, "-m", "grader", "grade", FAST_LAB, str(tmp_path / "class"),
                              "--out", str(out), "--executor", "celery", "--broker", broker],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait(workers[0].grading, "worker 1 to be grading a submission", 120)
        workers[0].proc.send_signal(signal.SIGKILL)  # the whole worker lost, mid-task
        workers[0].proc.wait(10)
        _wait(lambda: not processes_marked(workers[0].mark), "worker 1's gradings to stop", 30)
        stdout, _ = batch.communicate(timeout=240)
    finally:
        if batch.poll() is None:
            batch.kill()
            batch.communicate()
        for w in workers:
            w.stop()
    # every student once, and only the slow one not graded (its task went past the time limit)
    assert batch.returncode == 1, stdout
    lines = [line for line in stdout.splitlines() if line.startswith("[")]
    students = sorted(line.split("] ", 1)[1].split(":", 1)[0] for line in lines)
    expected_students = sorted(p.name for p in (tmp_path / "class").iterdir())
    assert students == expected_students, stdout
    assert "frank-slow-build: harness error: grading took longer than the time limit of 6s" in stdout
    assert not (out / "students" / "frank-slow-build").exists()
    graded = sorted(p.parent.name for p in (out / "students").glob("*/result.json"))
    assert graded == [s for s in expected_students if s != "frank-slow-build"]
    for name in graded:  # the same verdicts as a local run
        run = RunResult.from_dict(json.loads((out / "students" / name / "result.json").read_text()))
        assert run.submission == str(tmp_path / "class" / name)
        if name.startswith(("alice", "bob")):
            assert run.status == "graded"
            assert {c.id for c in run.checks if c.outcome != "passed"} == _expected(name), name
    # the task worker 1 was killed in came back, and worker 2 graded it
    log1, log2 = workers[0].log.read_text(), workers[1].log.read_text()
    lost = [t for t in re.findall(r"Task grader\.grade\[([0-9a-f-]+)\] received", log1)
            if f"[{t}] succeeded" not in log1]
    assert lost, log1
    assert all(f"Task grader.grade[{t}] succeeded" in log2 for t in lost), log2
    for w in workers:
        _wait(lambda w=w: not processes_marked(w.mark), "the workers' processes to end", 30)
        # (the one thing a SIGKILLed worker cannot remove: its own multiprocessing folder, pymp-*)
        left = [p.name for p in w.tmpdir.iterdir() if not (w is workers[0] and p.name.startswith("pymp-"))]
        assert not left, left


def test_the_worker_needs_a_redis_broker(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "grader", "worker", "--broker", "amqp://127.0.0.1/"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "expected a Redis URL" in done.stderr
    make_class(tmp_path / "class", fixtures=(), broken=False)
    done = subprocess.run([sys.executable, "-m", "grader", "grade", FAST_LAB, str(tmp_path / "class"), "--out",
                           str(tmp_path / "o"), "--executor", "celery"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "needs --broker" in done.stderr
    shutil.rmtree(tmp_path / "class")


def test_a_course_spec_crosses_the_queue_by_content(broker: str, tmp_path: Path) -> None:
    # A spec outside the grader, in a course's folder: the workers grade with what the batch sent, even once
    # that folder is gone (as on a worker machine that never had it).
    course = tmp_path / "course"
    course.mkdir()
    spec = yaml.safe_load((LABS / "specs" / f"{FAST_LAB}.yaml").read_text())
    spec["checks"] = spec["checks"][:3]
    for check in spec["checks"]:
        check["title"] = "Course: " + check["title"]
    (course / "echo-lab.yaml").write_text(yaml.safe_dump(spec))
    make_class(tmp_path / "class", fixtures=(), broken=False)
    out = tmp_path / "out"
    batch = subprocess.Popen([sys.executable, "-m", "grader", "grade", str(course / "echo-lab.yaml"),
                              str(tmp_path / "class"), "--out", str(out), "--executor", "celery", "--broker", broker],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    client = redis.Redis.from_url(broker)
    worker = None
    try:
        _wait(lambda: client.llen("grader") == 1 or batch.poll() is not None, "the task to be queued", 60)
        assert batch.poll() is None
        keys = client.keys("grader:spec:*")
        assert len(keys) == 1, keys
        shutil.rmtree(course)
        worker = Worker(broker, tmp_path / "worker.log", f"celery-spec-{os.getpid()}-{time.monotonic_ns()}")
        stdout, _ = batch.communicate(timeout=120)
    finally:
        if batch.poll() is None:
            batch.kill()
            batch.communicate()
        if worker is not None:
            worker.stop()
        client.close()
    assert batch.returncode == 0, stdout
    run = RunResult.from_dict(json.loads((out / "students" / "alice-reference" / "result.json").read_text()))
    assert run.status == "graded" and len(run.checks) == 3
    assert all(c.title.startswith("Course: ") and c.outcome == "passed" for c in run.checks), run.checks


def test_a_worker_grades_in_the_sandbox(broker: str, tmp_path: Path) -> None:
    # The worker's gradings have a private folder each, in its TMPDIR; the sandbox's jail, in there, must still
    # be reachable by the submission's user (a folder others may pass through, such as /tmp, as a worker has).
    make_class(tmp_path / "class", fixtures=("c-no-htons",), broken=False)
    shared_tmp = Path(tempfile.mkdtemp(prefix="grader-test-worker-", dir="/tmp"))
    shared_tmp.chmod(0o711)
    worker = None
    try:
        worker = Worker(broker, tmp_path / "worker.log", f"celery-sandbox-{os.getpid()}-{time.monotonic_ns()}",
                        tmpdir=shared_tmp)
        out = tmp_path / "out"
        done = subprocess.run([sys.executable, "-m", "grader", "grade", FAST_LAB, str(tmp_path / "class"),
                               "--out", str(out), "--executor", "celery", "--broker", broker, "--backend", "sandbox"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=240)
        assert done.returncode == 0, done.stdout
        for name in ("alice-reference", "bob-c-no-htons"):
            run = RunResult.from_dict(json.loads((out / "students" / name / "result.json").read_text()))
            assert run.status == "graded", run
            assert {c.id for c in run.checks if c.outcome != "passed"} == _expected(name), name
        worker.stop()
        assert not list(shared_tmp.iterdir())  # nothing left behind
    finally:
        if worker is not None:
            worker.stop()
        shutil.rmtree(shared_tmp, ignore_errors=True)
