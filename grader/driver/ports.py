"""Ports handed out by the backend, reserved until released: no pick-and-release race between gradings.

Picking a free port by binding port 0 and closing the socket again (the usual trick) races when gradings run
side by side: two of them can pick the same port before either server binds it, and the kernel hands ports
of its ephemeral range to outgoing connections too. A :class:`PortPool` instead takes ports from below the
ephemeral range (``/proc/sys/net/ipv4/ip_local_port_range``, so no client socket is ever given one) and
reserves each with an exclusive ``flock`` on a lock file, which every grader on the machine honours and the
kernel drops when the process dies. A port is leased with its byte-swapped twin (the port a server that
forgot ``htons()`` binds), so one grading's mistake never lands on another's port.

Inside a network namespace of its own (the sandbox and docker backends), the lock folder is private too:
each grading then has the whole range to itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import socket
import threading
from pathlib import Path

from grader.errors import HarnessError

LOW = 20000  # well above the well-known and common service ports
_RANGE_FILE = "/proc/sys/net/ipv4/ip_local_port_range"


def byteswap16(port: int) -> int:
    return ((port & 0xFF) << 8) | (port >> 8)


def ephemeral_low(path: str = _RANGE_FILE) -> int:
    """The first port of the kernel's ephemeral range (32768 when it cannot be read)."""
    try:
        with open(path, encoding="ascii") as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def default_lock_dir() -> Path:
    """One folder for the whole machine, whatever TMPDIR a grading has (a batch gives each job its own)."""
    if os.geteuid() == 0 and os.access("/run", os.W_OK):
        return Path("/run/socket-lab-grader-ports")
    return Path("/tmp") / f"socket-lab-grader-ports-{os.geteuid()}"


def bindable(host: str, port: int) -> bool:
    """Whether both a TCP and a UDP socket can bind ``host:port`` right now, without SO_REUSEADDR: a connection
    of an earlier grading left in TIME_WAIT on that port would stop a server that does not set it (the lab's
    classic mistake, which only the restart check may catch), so such a port is not leased."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(family, kind) as s:
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


class PortPool:
    """Leases ports on ``host``; each stays reserved (machine-wide) until released or the pool is closed."""

    def __init__(self, host: str = "127.0.0.1", lock_dir: Path | None = None, low: int = LOW,
                 high: int | None = None) -> None:
        self.host = host
        self.low = low
        self.high = (high if high is not None else ephemeral_low()) - 1
        if self.high < self.low:
            raise HarnessError(f"no port range to lease from ({self.low}-{self.high}): "
                               f"is the ephemeral range in {_RANGE_FILE} too wide?")
        self.lock_dir = lock_dir or default_lock_dir()
        self._held: dict[int, int] = {}  # port -> the lock file's descriptor
        self._twins: dict[int, int] = {}  # leased port -> its byte-swapped twin, reserved with it
        self._lock = threading.Lock()
        self._rng = random.Random()  # where to start looking only; any free port is as good as another

    def _reserve(self, port: int) -> bool:
        """Take the machine-wide lock on ``port``; False if another grading holds it."""
        if port in self._held:
            return False
        try:
            self.lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.lock_dir / f"{port}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise HarnessError(f"cannot reserve ports in {self.lock_dir}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._held[port] = fd
        return True

    def _drop(self, port: int) -> None:
        fd = self._held.pop(port, None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)  # closing the descriptor drops the flock

    def lease(self, avoid_swapped: bool = True) -> int:
        """A port free for TCP and UDP, reserved for this pool; with ``avoid_swapped`` its byte-swapped twin
        (different, not privileged) is free and reserved as well."""
        with self._lock:
            span = self.high - self.low + 1
            start = self._rng.randrange(span)
            for i in range(min(span, 4000)):
                port = self.low + (start + i) % span
                swapped = byteswap16(port)
                if avoid_swapped and (swapped == port or swapped < 1024):
                    continue
                if not self._reserve(port):
                    continue
                if avoid_swapped and not self._reserve(swapped):
                    self._drop(port)
                    continue
                if bindable(self.host, port) and (not avoid_swapped or bindable(self.host, swapped)):
                    if avoid_swapped:
                        self._twins[port] = swapped
                    return port
                self._drop(port)
                if avoid_swapped:
                    self._drop(swapped)
        raise HarnessError(f"no free port to lease on {self.host} between {self.low} and {self.high}")

    def release(self, port: int) -> None:
        """Give back a port (and its byte-swapped twin, when leased with it)."""
        with self._lock:
            self._drop(port)
            twin = self._twins.pop(port, None)
            if twin is not None:
                self._drop(twin)

    def held(self) -> list[int]:
        with self._lock:
            return sorted(self._held)

    def close(self) -> None:
        with self._lock:
            for port in list(self._held):
                self._drop(port)
            self._twins.clear()
