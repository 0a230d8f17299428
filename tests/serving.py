"""Helpers for the ``grader serve`` tests: start it, read where each service listens, talk to the services over
loopback, stop it."""

from __future__ import annotations

import queue
import re
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

SERVICES = ("http-server", "tcp-echo-server", "udp-echo-server", "time-server")
LINE = re.compile(r"^(?P<name>\S+)\s+(?P<host>\[[^\]]+\]|[^\s:]+):(?P<port>\d+)\s+(?P<protocols>\S+)")
START_TIMEOUT = 30.0
IO_TIMEOUT = 5.0
RFC868_OFFSET = 2208988800


@dataclass
class Served:
    """A running ``grader serve``: its process, and what it printed so far."""

    proc: subprocess.Popen[str]
    lines: queue.Queue[str | None]
    stderr: list[str]

    def listening(self, count: int = len(SERVICES)) -> dict[str, tuple[str, int, str]]:
        """Read ``count`` service lines (bounded in time): name -> (host, port, protocols)."""
        found: dict[str, tuple[str, int, str]] = {}
        deadline = time.monotonic() + START_TIMEOUT
        while len(found) < count:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"serve printed only {found} in {START_TIMEOUT} s; stderr: {self.errors()}")\
                    from None
            if line is None:
                raise AssertionError(f"serve ended after printing {found}; stderr: {self.errors()}")
            m = LINE.match(line)
            assert m, f"not a service line: {line!r}"
            found[m["name"]] = (m["host"].strip("[]"), int(m["port"]), m["protocols"])
        return found

    def errors(self) -> str:
        return "".join(self.stderr)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


def start_serve(command: Sequence[str], cwd: Path, env: Mapping[str, str] | None = None) -> Served:
    proc = subprocess.Popen(list(command), cwd=cwd, env=None if env is None else dict(env), text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines: queue.Queue[str | None] = queue.Queue()
    stderr: list[str] = []

    def read_out() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    def read_err() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            stderr.append(line)

    for target in (read_out, read_err):
        threading.Thread(target=target, daemon=True).start()
    return Served(proc, lines, stderr)


def connect(port: int, host: str = "127.0.0.1") -> socket.socket:
    """Connect at the first try: a service line is printed only once the service listens."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(IO_TIMEOUT)
    sock.connect((host, port))
    return sock


def read_to_eof(sock: socket.socket, limit: int = 1 << 22) -> bytes:
    data = b""
    while len(data) <= limit:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    raise AssertionError(f"more than {limit} bytes and no end of stream")


def http_get(port: int, target: str, host: str = "127.0.0.1") -> tuple[bytes, bytes]:
    """One HTTP/1.0 GET: (head, body)."""
    with connect(port, host) as sock:
        sock.sendall(f"GET {target} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
        response = read_to_eof(sock)
    head, _, body = response.partition(b"\r\n\r\n")
    return head, body


def tcp_echo(port: int, data: bytes, host: str = "127.0.0.1") -> bytes:
    with connect(port, host) as sock:

        def send() -> None:  # while the echo is read: a large message never deadlocks on full buffers
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        echoed = read_to_eof(sock, limit=len(data) + 1)
        sender.join(IO_TIMEOUT)
    return echoed


def udp_exchange(port: int, data: bytes, host: str = "127.0.0.1") -> bytes:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(IO_TIMEOUT)
        sock.connect((host, port))
        sock.send(data)
        return sock.recv(65535)


def rfc868_now() -> int:
    return (int(time.time()) + RFC868_OFFSET) % 2**32


def assert_rfc868(reply: bytes) -> None:
    assert len(reply) == 4, f"expected 4 bytes, got {reply!r}"
    (value,) = struct.unpack("!I", reply)
    assert abs(value - rfc868_now()) <= 5, f"{value} is not seconds since 1900 now ({rfc868_now()})"


def children_of(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of the direct children of ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if int(stat.rpartition(")")[2].split()[1]) == pid:
            found.append((int(entry.name), cmdline))
    return found
