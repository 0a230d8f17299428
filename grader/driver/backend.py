"""The backend seam: the one small interface through which the engine and the steps build, start, observe
and stop a submission.

:class:`Backend` is the protocol; :class:`Observer` is how the harness sees what the submission does (its
listening sockets, the sockets its process tree holds, how much it has read of a connection, its processes)
without poking it. :class:`LocalBackend` runs the submission as local processes on 127.0.0.1 under resource
limits; :class:`grader.driver.jail.JailBackend` runs each process as a user of its own in a mount namespace
that shows it only its own files. The sandbox and docker isolations (``grader.isolation``) run the whole
harness, with a jail backend, inside a network and PID namespace (or a container) of its own, so the observer
is always the kernel's view from the harness's own namespace.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from grader.driver.limits import Limits, prlimit_prefix
from grader.driver.observe import LOCAL_OBSERVER, Observer
from grader.driver.ports import PortPool
from grader.driver.process import OUTPUT_CAP, Proc, StartFailed, check_runnable, describe_status, run_build
from grader.errors import SubmissionError

_DROP_ENV = ("LD_PRELOAD", "PYTHONSTARTUP", "PYTHONPATH", "VIRTUAL_ENV")


MAX_SUBMISSION_BYTES = 256 * 1024 * 1024  # a submission folder larger than this is not a submission
_SKIP = shutil.ignore_patterns(".git", "__pycache__")


class _TooBig(Exception):
    pass


def copy_submission(src: Path, dst: Path, skip: Path, limit: int = MAX_SUBMISSION_BYTES) -> None:
    """Copy the submission folder ``src`` to ``dst`` (symlinks as links), leaving out .git, __pycache__ and
    ``skip`` (the grader's own working folder, should it lie inside ``src``); SubmissionError when it cannot,
    or when the files add up to more than ``limit`` bytes (the wrong folder was given, such as a home)."""
    skip = skip.resolve()
    copied = 0

    def ignore(folder: str, names: list[str]) -> set[str]:
        left_out = set(_SKIP(folder, names))
        left_out.update(n for n in names if Path(folder, n).resolve() == skip)
        return left_out

    def copy(source: str, target: str) -> object:
        nonlocal copied
        copied += os.lstat(source).st_size
        if copied > limit:
            raise _TooBig
        return shutil.copy2(source, target)

    try:
        shutil.copytree(src, dst, symlinks=True, ignore=ignore, copy_function=copy)
    except _TooBig:
        shutil.rmtree(dst, ignore_errors=True)
        raise SubmissionError(
            f"the submission folder {src} holds more than {limit // (1024 * 1024)} MiB of files: "
            "is it the right folder?"
        ) from None
    except (OSError, shutil.Error) as exc:
        raise SubmissionError(f"cannot copy the submission {src}: {exc}") from exc






@runtime_checkable
class Backend(Protocol):
    """How a submission is built, started, reached, observed and stopped. The engine and steps use only this."""

    name: str
    host: str  # the address the harness's peer side uses to reach the submission
    observer: Observer
    ports: PortPool
    limits: Limits
    submission_dir: Path  # the private copy the harness built (the harness's path)

    def build(self, command: str, timeout: float = 120.0) -> str:
        """Run the build command in the submission's folder; SubmissionError if it fails."""
        ...

    def start(self, argv: Sequence[str], extra_env: Mapping[str, str] | None = None, stdin: bytes | None = None,
              label: str = "submission", stdout_cap: int = OUTPUT_CAP) -> Proc:
        """Start one program of the submission; SubmissionError when it cannot run at all."""
        ...

    def expose(self, path: Path) -> str:
        """The path under which the submission reads ``path`` (a spec file, the preload library)."""
        ...

    def output_file(self, name: str) -> tuple[Path, str]:
        """A file the submission may write: (where the harness reads it, the path the submission is told)."""
        ...

    def stop(self, proc: Proc) -> None:
        """Kill ``proc`` with its whole process tree."""
        ...

    def stop_all(self) -> None:
        ...

    def close(self) -> None:
        """Stop everything and give back every port and resource."""
        ...


class LocalBackend:
    """Build and run a submission on this machine as the grader's own user, under resource limits; the harness
    reaches it at 127.0.0.1."""

    name = "local"
    host = "127.0.0.1"

    def __init__(self, submission_dir: Path, workdir: Path, limits: Limits | None = None,
                 ports: PortPool | None = None) -> None:
        self.original = submission_dir.resolve()
        self.workdir = workdir
        self.limits = limits or Limits()
        self.observer: Observer = LOCAL_OBSERVER
        self.ports = ports or PortPool(self.host)
        self._procs: list[Proc] = []
        # Build and run in a private copy: the student's folder is never written to, and the same
        # submission can be graded several times at once.
        self.submission_dir = workdir / "submission"
        copy_submission(self.original, self.submission_dir, skip=workdir)
        self.outputs = workdir / "outputs"
        self.outputs.mkdir(exist_ok=True)
        # The submission's temporary files (a compiler's among them, even one killed mid-build) stay in the
        # work folder, which goes when the grading ends.
        self.tmp = workdir / "tmp"
        self.tmp.mkdir(exist_ok=True)

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _DROP_ENV}
        path = env.get("PATH", "/usr/local/bin:/usr/bin:/bin")
        venv_bin = os.environ.get("VIRTUAL_ENV")
        if venv_bin:  # the submission should see the system's python3, not the harness's venv
            path = os.pathsep.join(p for p in path.split(os.pathsep) if not p.startswith(venv_bin))
        env["PATH"] = path
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env["TMPDIR"] = str(self.tmp)
        if extra:
            env.update(extra)
        return env

    def build(self, command: str, timeout: float = 120.0) -> str:
        """Run the build command in the submission's folder; SubmissionError if it fails."""
        code, output = run_build(command, self.submission_dir, self.env(), timeout, prefix=self.prefix())
        if code is None:
            raise SubmissionError(f"the build command {command!r} did not finish within {timeout:.0f}s", output)
        if code != 0:
            raise SubmissionError(f"the build command {command!r} failed: it {describe_status(code)}", output)
        return output

    def start(
        self,
        argv: Sequence[str],
        extra_env: Mapping[str, str] | None = None,
        stdin: bytes | None = None,
        label: str = "submission",
        stdout_cap: int = OUTPUT_CAP,
    ) -> Proc:
        env = self.env(extra_env)
        try:
            check_runnable(argv[0], self.submission_dir, env)
            proc = Proc([*self.prefix(), *argv], self.submission_dir, env, stdin=stdin,
                        label=label, stdout_cap=stdout_cap)
        except StartFailed as exc:
            raise SubmissionError(str(exc)) from exc
        self._procs.append(proc)
        return proc

    def prefix(self) -> list[str]:
        """The argv prefix that applies the limits (and, in subclasses, the jail)."""
        return prlimit_prefix(self.limits)

    def expose(self, path: Path) -> str:
        return str(path)

    def output_file(self, name: str) -> tuple[Path, str]:
        path = self.outputs / name
        return path, str(path)

    def stop(self, proc: Proc) -> None:
        proc.kill()
        if proc in self._procs:
            self._procs.remove(proc)

    def stop_all(self) -> None:
        for proc in list(self._procs):
            self.stop(proc)

    def close(self) -> None:
        self.stop_all()
        self.ports.close()
