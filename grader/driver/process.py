"""The process side of the I/O driver: building, starting, watching and killing a submission.

A submission runs in its own session (setsid) so that the whole process tree can be killed at once; its
output is captured through pipes by reader threads that keep at most a fixed number of bytes, so a program
that prints gigabytes cannot exhaust memory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

from grader.driver import procfs
from grader.errors import HarnessError

OUTPUT_CAP = 256 * 1024  # what is kept of a server's output, and of any program's stderr
DATA_CAP = 64 * 1024 * 1024  # what is kept of a client's stdout, which checks compare byte for byte


SIGPIPE_HINT = (
    "SIGPIPE kills a process that writes to a connection the peer has closed: ignore it "
    "(signal(SIGPIPE, SIG_IGN) or send(..., MSG_NOSIGNAL)) and handle EPIPE from send()."
)


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def describe_status(returncode: int) -> str:
    """'exited with status 1' or 'was killed by SIGSEGV (signal 11)'."""
    if returncode < 0:
        return f"was killed by {signal_name(-returncode)} (signal {-returncode})"
    return f"exited with status {returncode}"


class CappedBuffer:
    """Drains a pipe in a thread, keeping the first ``cap`` bytes and counting the rest."""

    def __init__(self, pipe: IO[bytes], cap: int = OUTPUT_CAP) -> None:
        self._pipe = pipe
        self._cap = cap
        self._chunks: list[bytes] = []
        self._kept = 0
        self.total = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        fd = self._pipe.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            with self._lock:
                self.total += len(chunk)
                room = self._cap - self._kept
                if room > 0:
                    self._chunks.append(chunk[:room])
                    self._kept += min(room, len(chunk))
        with contextlib.suppress(OSError):
            self._pipe.close()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def value(self) -> bytes:
        with self._lock:
            return b"".join(self._chunks)

    @property
    def truncated(self) -> bool:
        return self.total > self._kept


class Proc:
    """A running submission process (the leader of its own session)."""

    def __init__(
        self,
        argv: Sequence[str],
        cwd: Path,
        env: Mapping[str, str],
        stdin: bytes | None = None,
        label: str = "submission",
        stdout_cap: int = OUTPUT_CAP,
    ) -> None:
        self.argv = list(argv)
        self.label = label
        try:
            self.popen = subprocess.Popen(
                self.argv,
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except FileNotFoundError as exc:
            raise StartFailed(f"cannot run {self.argv[0]!r}: no such file") from exc
        except PermissionError as exc:
            raise StartFailed(f"cannot run {self.argv[0]!r}: not executable (chmod +x?)") from exc
        except OSError as exc:
            raise StartFailed(f"cannot run {self.argv[0]!r}: {exc}") from exc
        self.pid = self.popen.pid
        self.started = time.monotonic()
        assert self.popen.stdout is not None and self.popen.stderr is not None
        self.stdout = CappedBuffer(self.popen.stdout, stdout_cap)
        self.stderr = CappedBuffer(self.popen.stderr)
        self._feeder: threading.Thread | None = None
        if stdin is not None:
            self._feeder = threading.Thread(target=self._feed, args=(stdin,), daemon=True)
            self._feeder.start()

    def _feed(self, data: bytes) -> None:
        pipe = self.popen.stdin
        assert pipe is not None
        try:
            pipe.write(data)
        except (BrokenPipeError, OSError):
            pass
        finally:
            with contextlib.suppress(OSError):
                pipe.close()

    #: Turns the status the harness's child reports into the program's own (a jail's monitor reports a
    #: program killed by signal N as exit status 128+N; see grader.driver.jail).
    decode_status: Callable[[int], int] | None = None

    def _decoded(self, code: int | None) -> int | None:
        if code is None or self.decode_status is None:
            return code
        return self.decode_status(code)

    def poll(self) -> int | None:
        return self._decoded(self.popen.poll())

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait(self, timeout: float) -> int | None:
        """The exit status, or None if still running after ``timeout`` seconds."""
        try:
            return self._decoded(self.popen.wait(timeout=max(0.0, timeout)))
        except subprocess.TimeoutExpired:
            return None

    def status_text(self) -> str:
        code = self.poll()
        return "is still running" if code is None else describe_status(code)

    def output(self, which: str = "stderr", limit: int = 2000) -> str:
        buf = self.stderr if which == "stderr" else self.stdout
        data = buf.value()
        text = data.decode("utf-8", "replace")
        if len(text) > limit:
            text = "…" + text[-limit:]
        if buf.truncated:
            text += f"\n[output capped: {buf.total} bytes in all]"
        return text

    def kill(self) -> None:
        """Kill the whole process tree and session, reap the leader, and close the pipes."""
        tree = procfs.process_tree(self.pid) if self.popen.poll() is None else []
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        for pid in tree:  # descendants that left the group or the session (setsid) but not the tree
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.kill()
        try:
            self.popen.wait(timeout=5)
        except subprocess.TimeoutExpired as exc:
            raise HarnessError(f"process {self.pid} did not die after SIGKILL") from exc
        for pid in procfs.process_tree(self.pid):  # what is left in its session (forked while we killed)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        self.stdout.join(2)
        self.stderr.join(2)

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)


class StartFailed(Exception):
    """The program could not be executed at all."""


def check_runnable(argv0: str, cwd: Path, env: Mapping[str, str]) -> None:
    """StartFailed, with the reason in a student's words, when ``argv0`` cannot be executed at all.

    Checked before a wrapper (prlimit, a jail) runs it, whose own error would be less clear.
    """
    if "/" in argv0:
        path = cwd / argv0
        if not path.exists():
            raise StartFailed(f"cannot run {argv0!r}: no such file")
        if path.is_dir() or not os.access(path, os.X_OK):
            raise StartFailed(f"cannot run {argv0!r}: not executable (chmod +x?)")
    elif shutil.which(argv0, path=env.get("PATH")) is None:
        raise StartFailed(f"cannot run {argv0!r}: no such command")


def run_build(command: str, cwd: Path, env: Mapping[str, str], timeout: float,
              prefix: Sequence[str] = ()) -> tuple[int | None, str]:
    """Run a build command through the shell; (exit status or None on timeout, captured output)."""
    proc = Proc([*prefix, "/bin/sh", "-c", command], cwd, env, label="build")
    try:
        code = proc.wait(timeout)
    finally:  # also when the wait is interrupted (a batch task's time limit): nothing of the build survives
        proc.kill()  # stop it on a timeout, and reap anything it left behind either way
    out = proc.stdout.value() + proc.stderr.value()
    return code, out.decode("utf-8", "replace")[-8000:]
