"""Packet captures of a check's traffic with tcpdump, on the loopback interface, filtered to the check's ports.

A :class:`Capture` starts ``tcpdump`` with a capture filter on the given ports and waits (with a deadline, never
a fixed sleep) until tcpdump says it is listening: from then on every packet on those ports is captured. To
stop, it sends one marker datagram from a UDP socket of its own to itself (its port is in the filter too) and
waits until the marker is in the file: packets are written in order, so everything before it has been written
as well. Then tcpdump is stopped and the file cut just before the marker's record, so the pcap holds only the
check's traffic. Wireshark, tshark and tcpdump open it as it is.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import select
import shutil
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

from grader.errors import HarnessError

INTERFACE = "lo"
READY_S = 10.0  # how long tcpdump may take to start capturing
FLUSH_S = 5.0  # how long the marker may take to reach the file
STOP_S = 5.0  # how long tcpdump may take to exit after SIGINT
POLL_S = 0.01
_READY = b"listening on"
_MAGICS = {b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">", b"\x4d\x3c\xb2\xa1": "<", b"\xa1\xb2\x3c\x4d": ">"}


def tcpdump() -> str:
    """The tcpdump program; HarnessError when it is not installed."""
    path = shutil.which("tcpdump") or next((p for p in ("/usr/bin/tcpdump", "/usr/sbin/tcpdump")
                                             if os.access(p, os.X_OK)), None)
    if path is None:
        raise HarnessError("packet capture needs tcpdump (Debian package tcpdump; scripts/setup.sh installs it)")
    return path


def port_filter(ports: Iterable[int]) -> str:
    """A capture filter matching TCP and UDP packets to or from any of ``ports``."""
    return " or ".join(f"port {p}" for p in sorted(set(ports)))


def records(data: bytes) -> list[tuple[int, bytes]]:
    """The (offset, packet bytes) of each record of a pcap file's contents (a partial last record is left out)."""
    order = _MAGICS.get(data[:4])
    if order is None:
        return []
    out: list[tuple[int, bytes]] = []
    pos = 24
    while pos + 16 <= len(data):
        incl = struct.unpack(order + "I", data[pos + 8 : pos + 12])[0]
        if pos + 16 + incl > len(data):
            break
        out.append((pos, data[pos + 16 : pos + 16 + incl]))
        pos += 16 + incl
    return out


class Capture:
    """One running tcpdump writing the traffic on some ports of the loopback interface to ``path``."""

    def __init__(self, path: Path, ports: Iterable[int]) -> None:
        self.path = path
        self.ports = sorted(set(ports))
        self._marker_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._marker_sock.bind(("127.0.0.1", 0))
        self._marker_port = int(self._marker_sock.getsockname()[1])
        self._marker = b"grader-capture-marker-" + secrets.token_hex(8).encode()
        argv = [tcpdump(), "-i", INTERFACE, "-n", "-U", "--immediate-mode", "-w", str(path)]
        if os.geteuid() == 0:
            argv += ["-Z", "root"]  # else tcpdump writes the file as its own user, into our private folder
        argv.append(f"({port_filter(self.ports)}) or (udp and port {self._marker_port})")
        try:
            self._proc: subprocess.Popen[bytes] = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                start_new_session=True)
        except OSError as exc:
            self._marker_sock.close()
            raise HarnessError(f"cannot start tcpdump: {exc}") from exc
        self._stderr = b""
        try:
            self._wait_ready()
        except HarnessError:
            self._kill()
            raise

    def _read_stderr(self, wait: float) -> None:
        assert self._proc.stderr is not None
        readable, _, _ = select.select([self._proc.stderr], [], [], wait)
        if readable:
            chunk = os.read(self._proc.stderr.fileno(), 4096)
            self._stderr += chunk
            if not chunk:
                self._proc.wait(1.0)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_S
        while _READY not in self._stderr:
            if self._proc.poll() is not None:
                self._read_stderr(0)
                raise HarnessError(f"tcpdump could not capture on {INTERFACE} (exit {self._proc.returncode}): "
                                   f"{self._stderr.decode(errors='replace').strip()[-400:]}")
            if time.monotonic() > deadline:
                raise HarnessError(f"tcpdump did not start capturing on {INTERFACE} within {READY_S:g}s")
            self._read_stderr(min(0.1, max(0.0, deadline - time.monotonic())))

    def stop(self) -> Path:
        """Flush (marker), stop tcpdump, cut the marker off; the pcap's path. HarnessError if it went wrong."""
        try:
            self._marker_sock.sendto(self._marker, ("127.0.0.1", self._marker_port))
            deadline = time.monotonic() + FLUSH_S
            while True:
                data = self.path.read_bytes() if self.path.exists() else b""
                found = next((off for off, pkt in records(data) if self._marker in pkt), None)
                if found is not None:
                    break
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    raise HarnessError(f"tcpdump did not write the check's last packets within {FLUSH_S:g}s "
                                       f"({self._stderr.decode(errors='replace').strip()[-300:]})")
                time.sleep(POLL_S)  # polling the file for the marker, with a deadline
            self._proc.send_signal(signal.SIGINT)
            try:
                self._proc.wait(STOP_S)
            except subprocess.TimeoutExpired:
                self._kill()
            data = self.path.read_bytes()
            found = next(off for off, pkt in records(data) if self._marker in pkt)
            self.path.write_bytes(data[:found])
            return self.path
        finally:
            self._kill()

    def _kill(self) -> None:
        if self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()
        if self._proc.stderr is not None:
            self._proc.stderr.close()
        self._marker_sock.close()

    def discard(self) -> None:
        """Stop tcpdump and delete the file (a check that passed)."""
        self._kill()
        self.path.unlink(missing_ok=True)


def merge(parts: list[Path], target: Path) -> list[Path]:
    """One pcap from several (mergecap, from Wireshark's tools); without mergecap, the parts as they are."""
    if len(parts) == 1:
        parts[0].replace(target)
        return [target]
    mergecap = shutil.which("mergecap")
    if mergecap is None:
        return parts
    done = subprocess.run([mergecap, "-w", str(target), *map(str, parts)], capture_output=True, timeout=60,
                          check=False)
    if done.returncode != 0:
        return parts
    for p in parts:
        p.unlink(missing_ok=True)
    return [target]
