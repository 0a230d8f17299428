"""Supervising a server submission: start it, see it ready in /proc, restart it after a crash, stop it.

Readiness is observed, never probed: a listening TCP socket (or bound UDP socket) on the given port owned by
the submission's process tree, as /proc/net shows. A probe connection would use up a client of a server that
serves one client and exits. A socket on the byte-swapped port is accepted and remembered, so that one missing
htons() fails the byte-order checks and not every check.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from grader.driver import procfs
from grader.driver.backend import Backend
from grader.driver.preload import ShortIO, build_preload
from grader.driver.process import Proc
from grader.errors import HarnessError, SubmissionError
from grader.spec.model import ShortIOConfig

POLL_S = 0.005


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
        self.proc = self.backend.start(self.argv, env, label="server")
        self.starts += 1
        self.wait_ready(self.proc)

    def wait_ready(self, proc: Proc) -> None:
        """Poll /proc until the process tree listens; SubmissionError if it dies or never does."""
        deadline = time.monotonic() + self.ready_timeout
        swapped = procfs.byteswap16(self.port)
        self.ready_inodes = set()
        pending = set(self.ready) - {"none"}
        while pending:
            for mode in list(pending):
                entries = self.backend.observer.listening(proc.pid, mode)
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
            if not pending:
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
            time.sleep(POLL_S)

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
