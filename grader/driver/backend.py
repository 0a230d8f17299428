"""The backend: the one object that decides how a submission is built, started and stopped.

:class:`LocalBackend` runs it as local processes reachable on loopback. Later backends (a container, a
network namespace) provide the same methods with another host address.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from grader.driver.process import OUTPUT_CAP, Proc, StartFailed, describe_status, run_build
from grader.errors import SubmissionError

_DROP_ENV = ("LD_PRELOAD", "PYTHONSTARTUP", "PYTHONPATH", "VIRTUAL_ENV")


class LocalBackend:
    """Build and run a submission on this machine; the harness reaches it at 127.0.0.1."""

    host = "127.0.0.1"

    def __init__(self, submission_dir: Path, workdir: Path) -> None:
        self.original = submission_dir.resolve()
        self.workdir = workdir
        self._procs: list[Proc] = []
        # Build and run in a private copy: the student's folder is never written to, and the same
        # submission can be graded several times at once.
        self.submission_dir = workdir / "submission"
        try:
            shutil.copytree(self.original, self.submission_dir, symlinks=True,
                            ignore=shutil.ignore_patterns(".git", "__pycache__"))
        except (OSError, shutil.Error) as exc:
            raise SubmissionError(f"cannot copy the submission {self.original}: {exc}") from exc

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _DROP_ENV}
        path = env.get("PATH", "/usr/local/bin:/usr/bin:/bin")
        venv_bin = os.environ.get("VIRTUAL_ENV")
        if venv_bin:  # the submission should see the system's python3, not the harness's venv
            path = os.pathsep.join(p for p in path.split(os.pathsep) if not p.startswith(venv_bin))
        env["PATH"] = path
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        if extra:
            env.update(extra)
        return env

    def build(self, command: str, timeout: float = 120.0) -> str:
        """Run the build command in the submission's folder; SubmissionError if it fails."""
        code, output = run_build(command, self.submission_dir, self.env(), timeout)
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
        try:
            proc = Proc(argv, self.submission_dir, self.env(extra_env), stdin=stdin, label=label,
                        stdout_cap=stdout_cap)
        except StartFailed as exc:
            raise SubmissionError(str(exc)) from exc
        self._procs.append(proc)
        return proc

    def stop(self, proc: Proc) -> None:
        proc.kill()
        if proc in self._procs:
            self._procs.remove(proc)

    def stop_all(self) -> None:
        for proc in list(self._procs):
            self.stop(proc)
