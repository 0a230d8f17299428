"""Supervising a server submission: start it, see it ready in /proc, restart it after a crash, stop it.

Readiness is observed, never probed: a listening TCP socket (or bound UDP socket) on the given port owned by
the submission's process tree, as /proc/net shows. A probe connection would use up a client of a server that
serves one client and exits. A socket on the byte-swapped port is accepted and remembered, so that one missing
htons() fails the byte-order checks and not every check.
"""

from __future__ import annotations

import ipaddress
import shlex
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from grader.driver import procfs
from grader.driver.backend import Backend
from grader.driver.poll import Poll
from grader.driver.preload import ShortIO, build_preload
from grader.driver.process import Proc
from grader.errors import CheckFailed, HarnessError, SubmissionError
from grader.spec.model import ShortIOConfig

POLL_S = 0.005
READY_GRACE_S = 2.0  # once the server is up on one of its sockets, how long the others may take to come up


def fill(template: str, values: Mapping[str, str]) -> list[str]:
    """Split a run template like a shell would, then fill each word's {placeholders}."""
    return [word.format_map(values) for word in shlex.split(template)]


class Supervisor:
    """Owns the running server submission for one grading run."""

    def __init__(
        self,
        backend: Backend,
        template: str,
        placeholders: Mapping[str, str],
        ready: Sequence[str],
        ready_timeout: float,
    ) -> None:
        self.backend = backend
        self.template = template
        self.placeholders = dict(placeholders)
        self.port = backend.ports.lease()  # leased with its byte-swapped twin, for the whole grading
        self.ready = tuple(ready)
        self.ready_timeout = ready_timeout
        self.proc: Proc | None = None
        self.tcp_port: int = self.port
        self.udp_port: int = self.port
        self.short_io: tuple[ShortIOConfig, int] | None = None
        self.starts = 0
        self.ready_inodes: set[int] = set()
        # the sockets (inodes) of earlier checks' connections this server keeps open: never a later check's
        self.left_open: frozenset[int] = frozenset()
        self.missing: dict[str, tuple[str, str]] = {}  # a socket the harness cannot reach -> why, hint
        self.known_missing: frozenset[str] = frozenset()  # those missing at the first start
        self.argv = self._argv()

    def _argv(self) -> list[str]:
        """The command line for the current port (raises KeyError or ValueError for a bad template)."""
        values = {**self.placeholders, "host": self.host, "port": str(self.port),
                  "url": f"http://{self.host}:{self.port}/"}
        return fill(self.template, values)

    @property
    def host(self) -> str:
        return self.backend.host

    def ensure(self, short_io: ShortIOConfig | None, seed: int, fresh: bool = False) -> None:
        """Have the server running with this short-I/O setting (restarting it if needed).

        A restart the harness needs (after a crash, or for another short-I/O setting) uses a new port, so
        that the old connections in TIME_WAIT never matter: only the restart step tests SO_REUSEADDR.
        """
        wanted = None if short_io is None else (short_io, seed)
        if self.proc is not None and self.died() is None and not fresh and wanted == self.short_io:
            return
        self.stop()
        if self.starts:
            self.backend.ports.release(self.port)
            self.port = self.backend.ports.lease()
            self.argv = self._argv()
        self.start(wanted)

    def start(self, short_io: tuple[ShortIOConfig, int] | None = None) -> None:
        env: dict[str, str] = {}
        if short_io is not None:
            cfg, seed = short_io
            try:
                lib = build_preload()
            except Exception as exc:
                raise HarnessError(f"cannot build the short-I/O preload library: {exc}") from exc
            env = ShortIO(seed, cfg.max_chunk, cfg.eintr, cfg.writes, cfg.reads).env(Path(self.backend.expose(lib)))
        self.short_io = short_io
        self.left_open = frozenset()
        self.proc = self.backend.start(self.argv, env, label="server")
        self.starts += 1
        self.wait_ready(self.proc)

    def wait_ready(self, proc: Proc) -> None:
        """Poll /proc until the process tree listens on every socket of the spec; SubmissionError if it dies first
        or nothing at all comes up. Partial credit: once it is up on some socket (see _up), the others get
        READY_GRACE_S more (none, on later starts, for those missing at the first start), then it is graded
        as it is and each missing socket is described in ``missing``, for the checks that need it."""
        deadline = time.monotonic() + self.ready_timeout
        self.ready_inodes = set()
        self.tcp_port = self.udp_port = self.port
        pending = set(self.ready) - {"none"}
        up_since: float | None = None
        poll = Poll(POLL_S)
        while pending:
            self._take_ready(proc, pending)
            if not pending:
                break
            if up_since is None and self._up(proc):
                up_since = time.monotonic()
            if up_since is not None and (pending <= self.known_missing
                                         or time.monotonic() - up_since > READY_GRACE_S):
                break
            code = proc.poll()
            if code is not None:
                raise SubmissionError(
                    f"the server {proc.status_text()} before it was ready "
                    f"(expected it to listen on {'/'.join(sorted(self.ready)).upper()} port {self.port})",
                    proc.output("stderr") + proc.output("stdout"),
                )
            if time.monotonic() > deadline:
                seen = sorted({e.local[1] for e in self.backend.observer.sockets(proc.pid)})
                raise SubmissionError(
                    f"the server did not listen on {'/'.join(sorted(pending)).upper()} port {self.port} "
                    f"within {self.ready_timeout:g}s (its sockets are on ports {seen or 'none'})",
                    proc.output("stderr") + proc.output("stdout"),
                )
            poll.pause(deadline)
        self.missing = {mode: self._absent(proc, mode) for mode in sorted(pending)}
        if self.starts <= 1:
            self.known_missing = frozenset(pending)

    def _take_ready(self, proc: Proc, pending: set[str]) -> None:
        """Take each pending mode the tree serves on the port (or its byte-swapped twin, for the byte-order
        checks) at an address the harness reaches: remember port and inodes, drop it from ``pending``."""
        swapped = procfs.byteswap16(self.port)
        for mode in list(pending):
            entries = [e for e in self.backend.observer.listening(proc.pid, mode) if self._reachable(e.local[0])]
            ports = {e.local[1] for e in entries}
            for candidate in (self.port, swapped):
                if candidate in ports:
                    self.ready_inodes |= {e.inode for e in entries if e.local[1] == candidate}
                    if mode == "tcp":
                        self.tcp_port = candidate
                    else:
                        self.udp_port = candidate
                    pending.discard(mode)
                    break

    def _reachable(self, ip: str) -> bool:
        """Whether the harness, connecting to ``host``, reaches a socket bound to ``ip`` (a wildcard, the host
        itself; ``::`` accepts IPv4 too unless IPV6_V6ONLY)."""
        try:
            addr = ipaddress.ip_address(ip)
            host = ipaddress.ip_address(self.host)
        except ValueError:
            return True  # a host name: the harness resolves it, /proc cannot tell
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return addr.is_unspecified or addr == host

    def _up(self, proc: Proc) -> bool:
        """Whether the tree listens on any TCP socket or has bound any UDP port: the server has started."""
        observer = self.backend.observer
        return bool(observer.listening(proc.pid, "tcp") or observer.listening(proc.pid, "udp"))

    def _absent(self, proc: Proc, mode: str) -> tuple[str, str]:
        """Why the harness cannot reach the server's ``mode`` socket, and a hint, for the checks that need it."""
        proto = mode.upper()
        entries = self.backend.observer.listening(proc.pid, mode)
        where = sorted({f"[{e.local[0]}]" if ":" in e.local[0] else e.local[0] for e in entries
                        if e.local[1] == self.port})
        if where:
            return (f"it listens on {proto} port {self.port} at {', '.join(where)} only, which the harness, at "
                    f"{self.host}, does not reach (IPv6 only, or another address)",
                    "Bind the wildcard address: sin_addr.s_addr = htonl(INADDR_ANY) (in Python bind((\"\", port)) "
                    "on an AF_INET socket), so that clients reach the server at 127.0.0.1.")
        ports = sorted({e.local[1] for e in entries})
        if ports:
            return (f"it listens on {proto} port{'s' if len(ports) > 1 else ''} {', '.join(map(str, ports))} "
                    f"instead of {self.port}, the port it was given",
                    "Take the port from the command line (argv[1]), convert it with htons() and bind() to it.")
        return (f"it never opened a {proto} socket on port {self.port}",
                f"Open the {proto} socket as well: socket(), then bind() to INADDR_ANY and the port given on the "
                "command line, and serve every socket at once (select() or a thread each).")

    def require(self, mode: str) -> None:
        """CheckFailed, naming why, when the server's ``mode`` socket is missing (it is up on another)."""
        if mode in self.missing:
            reason, hint = self.missing[mode]
            raise CheckFailed(f"the server cannot be reached on {mode.upper()} port {self.port}: {reason}", hint=hint)

    def died(self) -> str | None:
        """How the server ended, or None while it runs.

        A server that has closed its listening socket may be a moment away from exiting (its sockets close
        before the kernel reaps it): give it up to a second, so the verdict never depends on that moment.
        """
        proc = self.proc
        if proc is None:
            return None
        if proc.alive() and not self._listening(proc):
            proc.wait(1.0)
        return None if proc.alive() else proc.status_text()

    def _listening(self, proc: Proc) -> bool:
        """Whether the process tree still holds the sockets it was ready with (cheap: no socket tables)."""
        if not self.ready_inodes:
            return True
        observer = self.backend.observer
        held = observer.socket_inodes([proc.pid])
        if self.ready_inodes <= held.keys():
            return True
        return self.ready_inodes <= observer.socket_inodes(observer.processes(proc.pid)).keys()

    def restart(self) -> None:
        """Kill the server and start it again at once on the same port."""
        self.stop()
        self.start(self.short_io)

    def stop(self) -> None:
        if self.proc is not None:
            self.backend.stop(self.proc)
            self.proc = None
