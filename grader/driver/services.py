"""Long-running reference services (``grader serve``): start a program that listens, learn where it listens from
its own sockets in /proc, forward its stderr, and stop it with its whole process group.

Only the standard library and :mod:`grader.driver.procfs` are used, so ``labs/reference/serve.py`` runs with a
bare ``python3`` from a checkout.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO

from grader.driver import procfs

POLL_S = 0.02  # how often /proc and the children are looked at while waiting
STOP_GRACE_S = 5.0  # a child gets this long after SIGTERM before SIGKILL
STDERR_TAIL = 5  # lines of a child's stderr kept (the last non-blank one goes into an error message)


class ServiceError(Exception):
    """A service could not be started (its program exited, or never listened in time)."""


@dataclass(frozen=True)
class ServiceSpec:
    """One service: its name, its command (``{port}`` is replaced by the port), and the protocols it listens on
    (every one on the same port number)."""

    name: str
    command: tuple[str, ...]
    protocols: tuple[str, ...]


@dataclass
class Running:
    """A started service: its process, the port it listens on (0 until known), and its stderr's last lines."""

    spec: ServiceSpec
    proc: subprocess.Popen[bytes]
    port: int = 0
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=STDERR_TAIL))
    forwarder: threading.Thread | None = None

    def exited(self) -> str | None:
        """None while it runs, else how it ended, with the last line it wrote to stderr (e.g. the exception that
        stopped it). The process is not reaped here (see :func:`stop_all`)."""
        code = _status_unreaped(self.proc)
        if code is None:
            return None
        how = f"exited with status {code}" if code >= 0 else f"was killed by {signal.Signals(-code).name}"
        if self.forwarder is not None:
            self.forwarder.join(timeout=1.0)  # its stderr closed when it ended: wait for its last line to be read
        said = next((line.strip() for line in reversed(self.tail) if line.strip()), "")
        return f"{how}" + (f" ({said})" if said else "")


def _forward(running: Running, pipe: IO[bytes], sink: IO[str]) -> None:
    """Copy a child's stderr to ours, each line prefixed with the service's name; keep the last lines."""
    for raw in pipe:
        line = raw.decode("utf-8", "replace").rstrip("\n")
        running.tail.append(line)
        try:
            sink.write(f"[{running.spec.name}] {line}\n")
            sink.flush()
        except (OSError, ValueError):
            pass  # our stderr is gone; keep draining so the child never blocks on a full pipe
    pipe.close()


def start(spec: ServiceSpec, port: int, env: Mapping[str, str], sink: IO[str] = sys.stderr) -> Running:
    """Start the service's program with ``port`` (0: it picks a free one itself) in a session of its own, so a
    Ctrl-C in the terminal reaches only the caller, which then stops every service in order."""
    command = [part.replace("{port}", str(port)) for part in spec.command]
    try:
        proc = subprocess.Popen(command, env=dict(env), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, start_new_session=True)
    except OSError as exc:
        raise ServiceError(f"{spec.name}: cannot start {command[0]}: {exc.strerror}") from None
    running = Running(spec, proc)
    assert proc.stderr is not None
    running.forwarder = threading.Thread(target=_forward, args=(running, proc.stderr, sink),
                                         name=f"stderr-{spec.name}", daemon=True)
    running.forwarder.start()
    return running


def _ports(pid: int, protocol: str) -> set[int]:
    return {entry.local[1] for entry in procfs.listening_ports(pid, protocol)}


def wait_listening(running: Running, wanted: int, timeout: float, stopped: Callable[[], bool]) -> bool:
    """Wait until the service's own process tree listens on ``wanted`` (or, when 0, on one port number) for every
    protocol it serves, as /proc shows its sockets: never probed, and never someone else's socket. Sets
    ``running.port``. False if ``stopped()`` became true meanwhile; ServiceError if it exited or took too long."""
    deadline = time.monotonic() + timeout
    while not stopped():
        how = running.exited()
        if how is not None:
            where = f"port {wanted}" if wanted else "a free port"
            hint = (f": another program uses port {wanted}; choose another port, or 0 for a free one"
                    if wanted and "in use" in how else "")
            raise ServiceError(f"{running.spec.name} {how} while starting on {where}{hint}")
        common: set[int] | None = None
        for protocol in running.spec.protocols:
            ports = _ports(running.proc.pid, protocol)
            common = ports if common is None else common & ports
        if common and (not wanted or wanted in common):
            running.port = wanted or min(common)
            return True
        if time.monotonic() > deadline:
            protocols = " and ".join(p.upper() for p in running.spec.protocols)
            raise ServiceError(f"{running.spec.name} is not listening ({protocols}) on "
                               f"{f'port {wanted}' if wanted else 'any port'} after {timeout:g} s")
        time.sleep(POLL_S)
    return False


def stop_all(services: Sequence[Running], grace: float = STOP_GRACE_S, sink: IO[str] = sys.stderr) -> None:
    """SIGTERM every service's process group, then SIGKILL what is left of each group after ``grace``; reap them.

    A service's process is reaped only after its group got SIGKILL: until then its pid, the group's id, cannot
    be handed to another process, so the signal never reaches a stranger.
    """
    for running in services:
        _signal_group(running.proc, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for running in services:
        while _status_unreaped(running.proc) is None and time.monotonic() < deadline:
            time.sleep(POLL_S)
        if _status_unreaped(running.proc) is None:
            sink.write(f"serve: {running.spec.name} ignored SIGTERM for {grace:g} s; killing it\n")
        _signal_group(running.proc, signal.SIGKILL)  # also any grandchild left in its session
        running.proc.wait()
        if running.forwarder is not None:
            running.forwarder.join(timeout=1.0)


def _status_unreaped(proc: subprocess.Popen[bytes]) -> int | None:
    """The child's exit status as Popen.returncode gives it (negative: killed by that signal), or None while it
    runs; the child stays a zombie (WNOWAIT) until Popen.wait() reaps it."""
    if proc.returncode is not None:
        return proc.returncode
    info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    if info is None:
        return None
    return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status


def _signal_group(proc: subprocess.Popen[bytes], signum: int) -> None:
    if proc.returncode is not None:
        return  # reaped: its group id may belong to someone else by now
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is empty already
        os.killpg(proc.pid, signum)  # its own session: the group id is its pid
