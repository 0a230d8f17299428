"""Where the harness runs, chosen with ``--backend``: the extension point for isolation, declared here.

* ``local``: the harness and the submission share this machine's loopback and /proc; the submission runs as
  the grader's user under resource limits (:class:`grader.driver.backend.LocalBackend`).
* ``sandbox``: the whole harness of one grading moves into a fresh network namespace (only a loopback of its
  own), PID namespace (its own /proc, mounted ``hidepid=invisible``), IPC and UTS namespace and a private
  ``/tmp``, made with bubblewrap; there each program of the submission runs jailed
  (:class:`grader.driver.jail.JailBackend`: a user of its own, a mount namespace showing only its own files).
  Many gradings run at once with no port clash, and none can reach a service of the host.
* ``docker``: the same harness inside a container of the grader image (``grader.dockerbackend``).

An isolated grading crosses its boundary as plain data: a :class:`Job` (JSON) in, one JSON line per finished
check out (for progress), and the result as JSON (:func:`grader.report.model.to_plain`) in a folder only the
harness can write.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from grader.driver.limits import Limits
from grader.driver.preload import default_cache_dir as preload_cache
from grader.engine.runner import Options, grade, local_backend, select_checks
from grader.errors import GraderError, HarnessError, SpecError, UsageError
from grader.report.model import CheckResult, RunResult, check_from_plain, from_plain, to_plain
from grader.spec.loader import load_spec
from grader.spec.model import Spec

Progress = Callable[[CheckResult], None]
RESULT_FILE = "result.json"
JOB_FILE = "job.json"
# Beyond the grading's own wall-clock limit: the time to set up and tear down an isolation.
SETUP_GRACE_S = 60.0


@dataclass(frozen=True)
class Job:
    """One grading, as plain data: what crosses into an isolated harness."""

    spec: str
    submission: str
    run: str | None
    build: str | None
    student: bool
    only: tuple[str, ...]
    seed: int
    skip_build: bool
    limits: dict[str, Any]
    jail: str = "jail"  # jail: a user and a mount namespace of its own; user: only a user of its own
    hide_processes: bool = True  # remount /proc with hidepid (needs CAP_SYS_ADMIN: not in a container)

    @classmethod
    def make(cls, spec: Spec, submission: Path, options: Options, seed: int, limits: Limits,
             **where: Any) -> Job:
        job = cls(str(spec.path.resolve()), str(submission.resolve()), options.run, options.build,
                  options.student, tuple(options.only), seed, options.skip_build, dataclasses.asdict(limits))
        return dataclasses.replace(job, **where)

    def options(self) -> Options:
        return Options(run=self.run, build=self.build, student=self.student, only=tuple(self.only),
                       seed=self.seed, skip_build=self.skip_build, limits=Limits(**self.limits))

    def dumps(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def loads(cls, text: str) -> Job:
        data = json.loads(text)
        data["only"] = tuple(data["only"])
        return cls(**data)


class Isolation(Protocol):
    name: str

    def problem(self) -> str | None:
        """None when this isolation can be used here, else what is missing and how to get it."""
        ...

    def grade(self, spec: Spec, submission: Path, options: Options, progress: Progress | None = None) -> RunResult:
        ...


class LocalIsolation:
    name = "local"

    def problem(self) -> str | None:
        return None if shutil.which("prlimit") else "the prlimit command (util-linux) is not installed"

    def grade(self, spec: Spec, submission: Path, options: Options, progress: Progress | None = None) -> RunResult:
        return grade(spec, submission, options, progress, make_backend=local_backend)


def _prepare(spec: Spec, submission: Path, options: Options) -> tuple[int, Limits]:
    """Check what can be checked before crossing a boundary; the seed and limits the grading will use."""
    if not submission.is_dir():
        raise UsageError(f"the submission {submission} is not a folder")
    select_checks(spec, options)  # an unknown --only is a usage error here, not inside
    seed = options.seed if options.seed is not None else secrets.randbelow(2**31)
    return seed, options.limits or spec.submission.limits


def run_isolated(argv: list[str], results: Path, timeout: float, progress: Progress | None,
                 what: str) -> RunResult:
    """Run an isolated harness (``argv``), relay its progress lines, and read its result from ``results``."""
    # The isolated harness imports what this one can (a spec's `call` functions among them).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))}
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=env)
    except OSError as exc:
        raise HarnessError(f"cannot start the {what}: {exc}") from exc
    assert proc.stdout is not None and proc.stderr is not None
    errors: list[bytes] = []
    stderr_pipe = proc.stderr
    drain = threading.Thread(target=lambda: errors.append(_read_capped(stderr_pipe)), daemon=True)
    drain.start()
    killer = _deadline(timeout, proc.kill)
    try:
        killer.start()
        for line in proc.stdout:
            event = _event(line)
            if event is not None and progress is not None and "check" in event:
                progress(check_from_plain(event["check"]))
        code = proc.wait()
    finally:
        killer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        drain.join(5)
    stderr = b"".join(errors).decode("utf-8", "replace").strip()
    path = results / RESULT_FILE
    if not path.is_file():
        late = " (killed: it took longer than its deadline)" if code == -9 else ""
        raise HarnessError(f"the {what} ended with status {code}{late} and no result: {stderr[-1500:] or 'no output'}")
    return _read_result(path, what)


def _deadline(timeout: float, action: Callable[[], None]) -> threading.Timer:
    """A timer that runs ``action`` at the deadline; a daemon, so that an interrupted grader (Ctrl-C, SIGTERM,
    even inside ``start()``) never waits for it to exit. Start it inside the ``try`` whose ``finally`` cancels
    it."""
    timer = threading.Timer(timeout, action)
    timer.daemon = True
    return timer


def _read_capped(pipe: IO[bytes], cap: int = 64 * 1024) -> bytes:
    kept = b""
    for chunk in iter(lambda: pipe.read(4096), b""):
        kept = (kept + chunk)[-cap:]
    return kept


def _event(line: bytes) -> dict[str, Any] | None:
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


class SandboxIsolation:
    """The harness in namespaces of its own, made with bubblewrap; the submission jailed inside."""

    name = "sandbox"

    def problem(self) -> str | None:
        from grader.driver import jail

        return jail.available()

    def command(self, results: Path, limits: Limits, shown: list[Path]) -> list[str]:
        """bwrap's command line; ``shown`` are folders the harness reads (the spec's, the submission). The
        sandbox's /tmp is a fresh one, and its TMPDIR: what the harness needs from the machine's /tmp (these
        folders, and the grader itself when it is installed or checked out there) is bound back read-only at its
        own path."""
        needed = [*shown, *_harness_paths()]
        binds = [arg for path in _outermost(p for p in needed if p.is_relative_to("/tmp"))
                 for arg in ("--ro-bind", str(path), str(path))]
        cache = preload_cache()
        if cache.is_relative_to("/tmp"):
            cache.mkdir(parents=True, exist_ok=True)
            binds += ["--bind", str(cache), str(cache)]
        return [
            "bwrap",
            "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
            "--die-with-parent", "--cap-add", "ALL",
            "--dev-bind", "/", "/", "--proc", "/proc", "--size", str(limits.disk_mb * 1024 * 1024), "--tmpfs", "/tmp",
            *binds,
            "--bind", str(results), "/results",
            # its temporary files in its own /tmp, whatever folder the caller's TMPDIR names (a worker's
            # private one, re-made inside by the binds above, is no place for the jail: others cannot enter it)
            "--setenv", "TMPDIR", "/tmp",
            "--", sys.executable, "-m", "grader.isolation", f"/results/{JOB_FILE}",
        ]

    def grade(self, spec: Spec, submission: Path, options: Options, progress: Progress | None = None) -> RunResult:
        why = self.problem()
        if why is not None:
            raise UsageError(f"--backend sandbox is not available here: {why}")
        seed, limits = _prepare(spec, submission, options)
        with tempfile.TemporaryDirectory(prefix="grader-sandbox-") as tmp:
            results = Path(tmp)
            job = Job.make(spec, submission, options, seed, limits)
            (results / JOB_FILE).write_text(job.dumps(), encoding="utf-8")
            argv = self.command(results, limits, [spec.directory.resolve(), submission.resolve()])
            run = run_isolated(argv, results, limits.wall_seconds + SETUP_GRACE_S, progress, "sandbox")
        return dataclasses.replace(run, submission=str(submission))


class DockerIsolation:
    """The harness in a container of the grader image (``--network none``, a read-only root, a sized tmpfs,
    memory, CPU and process limits, only the capabilities the harness needs), the submission run inside as a
    user of its own. The container is removed whatever happens, also on Ctrl-C or SIGTERM."""

    name = "docker"
    JOB_ROOT = "/job"  # a tmpfs only root may enter: the spec, the submission's original and the results
    CAPS = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "SETUID", "SETGID", "KILL", "SYS_PTRACE")
    HARNESS_MB = 512  # beyond the submission's own memory limit

    def problem(self) -> str | None:
        try:
            import docker  # noqa: F401
        except ImportError:
            return "the docker Python package is not installed (pip install docker)"
        return None

    def grade(self, spec: Spec, submission: Path, options: Options, progress: Progress | None = None) -> RunResult:
        from docker.errors import DockerException

        from grader.driver import dockerenv

        why = self.problem()
        if why is not None:
            raise UsageError(f"--backend docker is not available here: {why}")
        seed, limits = _prepare(spec, submission, options)
        client, image = dockerenv.open_image()
        root = self.JOB_ROOT
        with tempfile.TemporaryDirectory(prefix="grader-docker-") as tmp:
            results = Path(tmp)
            job = Job.make(spec, submission, options, seed, limits, jail="user", hide_processes=False)
            job = dataclasses.replace(job, spec=f"{root}/spec/{spec.path.name}", submission=f"{root}/submission")
            (results / JOB_FILE).write_text(job.dumps(), encoding="utf-8")
            name = f"grader-{secrets.token_hex(6)}"
            # A spec's `call` functions are importable in the container from beside the spec, as here.
            spec_dir = spec.directory.resolve()
            inside = [f"{root}/spec/{Path(p).resolve().relative_to(spec_dir)}".rstrip("/.") for p in sys.path
                      if p and Path(p).is_dir() and Path(p).resolve().is_relative_to(spec_dir)]
            try:
                container = client.containers.create(
                    image, name=name, entrypoint=["python", "-m", "grader.isolation"],
                    command=[f"{root}/results/{JOB_FILE}"],
                    labels={"org.socket-lab-grader.grading": "1"},
                    environment={"PYTHONPATH": os.pathsep.join(inside)} if inside else {},
                    network_mode="none", read_only=True, user="0",
                    tmpfs={root: "mode=0700", "/tmp": f"size={limits.disk_mb}m,mode=1777,exec", "/run": "mode=0755"},
                    volumes={str(spec.directory.resolve()): {"bind": f"{root}/spec", "mode": "ro"},
                             str(submission.resolve()): {"bind": f"{root}/submission", "mode": "ro"},
                             str(results): {"bind": f"{root}/results", "mode": "rw"}},
                    mem_limit=f"{limits.memory_mb + self.HARNESS_MB}m", nano_cpus=1_000_000_000,
                    pids_limit=limits.processes + 64, cap_drop=["ALL"], cap_add=list(self.CAPS),
                    security_opt=["no-new-privileges"],
                )
            except DockerException as exc:
                client.close()
                raise HarnessError(f"cannot create the grading container: {exc}") from exc
            try:
                container.start()
                run = self._follow(container, results, limits.wall_seconds + SETUP_GRACE_S, progress)
            except DockerException as exc:
                raise HarnessError(f"the grading container failed: {exc}") from exc
            finally:
                with contextlib.suppress(DockerException):
                    container.remove(force=True)
                client.close()
        return dataclasses.replace(run, submission=str(submission))

    @staticmethod
    def _follow(container: Any, results: Path, timeout: float, progress: Progress | None) -> RunResult:
        """Relay the container's progress lines until it ends (killed at ``timeout``); read its result."""
        def kill() -> None:
            with contextlib.suppress(Exception):  # it may have ended in the meantime
                container.kill()

        killer = _deadline(timeout, kill)
        pending = b""
        try:
            killer.start()
            for chunk in container.logs(stream=True, follow=True, stdout=True, stderr=False):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    event = _event(line)
                    if event is not None and progress is not None and "check" in event:
                        progress(check_from_plain(event["check"]))
            status = container.wait(timeout=timeout)
        finally:
            killer.cancel()
        code = status.get("StatusCode")
        path = results / RESULT_FILE
        if not path.is_file():
            logs = container.logs(stdout=False, stderr=True)[-1500:].decode("utf-8", "replace")
            raise HarnessError(f"the grading container ended with status {code} and no result: {logs or 'no output'}")
        return _read_result(path, "grading container")


def _read_result(path: Path, what: str) -> RunResult:
    data = json.loads(path.read_text(encoding="utf-8"))
    if "error" in data:
        kind, message = data["error"]["kind"], data["error"]["message"]
        raise UsageError(message) if kind == "usage" else HarnessError(f"in the {what}: {message}")
    return from_plain(data["result"])


def _harness_paths() -> list[Path]:
    """Where the running grader lives: its interpreter's prefixes, its package, its import path."""
    paths = [Path(sys.prefix), Path(sys.base_prefix), Path(sys.executable).resolve().parent,
             Path(__file__).resolve().parent.parent]
    paths += [Path(p) for p in sys.path if p and os.path.isdir(p)]
    return [p.resolve() for p in paths]


def _outermost(paths: Iterable[Path]) -> list[Path]:
    """The paths, without those inside another of them."""
    chosen: list[Path] = []
    for path in sorted(set(paths), key=lambda p: len(p.parts)):
        if not any(path.is_relative_to(c) for c in chosen):
            chosen.append(path)
    return chosen


ISOLATIONS: dict[str, Isolation] = {"local": LocalIsolation(), "sandbox": SandboxIsolation(),
                                    "docker": DockerIsolation()}


def get(name: str) -> Isolation:
    try:
        return ISOLATIONS[name]
    except KeyError:
        raise UsageError(f"--backend {name}: expected one of {', '.join(ISOLATIONS)}") from None


# -- the isolated side ---------------------------------------------------------------------------------------


def _hide_processes() -> None:
    """Mount /proc so that a process sees only its own user's processes (the harness sees all)."""
    done = subprocess.run(["mount", "-o", "remount,hidepid=invisible", "/proc"], capture_output=True, text=True,
                          timeout=30, check=False)
    if done.returncode != 0:
        raise HarnessError(f"cannot hide the harness's processes from the submission: {done.stderr.strip()}")


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def inner_main(job_path: Path, hide: bool = True) -> int:
    """Grade one job inside the isolation, the submission jailed; the result goes beside the job file."""
    from grader.driver.jail import JailBackend, UserBackend

    out = job_path.parent / RESULT_FILE
    try:
        job = Job.loads(job_path.read_text(encoding="utf-8"))
        if hide and job.hide_processes:
            _hide_processes()
        spec = load_spec(Path(job.spec), validate=False)  # the outer harness has validated it

        def progress(result: CheckResult) -> None:
            sys.stdout.write(json.dumps({"check": dataclasses.asdict(result)}) + "\n")
            sys.stdout.flush()

        backend = UserBackend if job.jail == "user" else JailBackend
        run = grade(spec, Path(job.submission), job.options(), progress, make_backend=backend)
        _write_atomically(out, json.dumps({"result": to_plain(run)}))
        return 0
    except (UsageError, SpecError) as exc:
        _write_atomically(out, json.dumps({"error": {"kind": "usage", "message": str(exc)}}))
        return 2
    except GraderError as exc:
        _write_atomically(out, json.dumps({"error": {"kind": "harness", "message": str(exc)}}))
        return 1


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write("usage: python -m grader.isolation JOB.json (run by the grader inside an isolation)\n")
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        return inner_main(Path(argv[0]))
    return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
