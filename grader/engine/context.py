"""The state of one running check: its deadline, transcript, connections, and the submission's processes."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grader.driver.backend import Backend
from grader.driver.net import Listener, TcpConn, UdpSock
from grader.driver.observe import Observer
from grader.driver.process import Proc
from grader.engine.supervisor import Supervisor
from grader.engine.transcript import Transcript
from grader.errors import HarnessError
from grader.spec.model import Check, Spec


@dataclass
class Shared:
    """What every branch of a check shares (parallel groups included)."""

    spec: Spec
    check: Check
    backend: Backend
    supervisor: Supervisor | None
    transcript: Transcript
    deadline: float
    seed: int
    workdir: Path
    run_template: str
    client: Proc | None = None
    files: dict[Path, bytes] = field(default_factory=dict)


class CheckContext:
    """Handed to every step. Connection names are local to a branch; everything else is shared."""

    def __init__(self, shared: Shared, label_prefix: str = "", branch: int = 0) -> None:
        self.shared = shared
        self.prefix = label_prefix
        self.rng = random.Random(f"{shared.seed}:{shared.check.id}:{branch}")
        self.conns: dict[str, TcpConn] = {}
        self.listeners: dict[str, Listener] = {}
        self.udps: dict[str, UdpSock] = {}
        self.values: dict[str, Any] = {}
        self.group: threading.Barrier | None = None  # the branches of the parallel step this context runs in

    # -- shared state --------------------------------------------------------------------------------
    @property
    def transcript(self) -> Transcript:
        return self.shared.transcript

    @property
    def deadline(self) -> float:
        return self.shared.deadline

    def step_deadline(self, timeout: float | None) -> float:
        """The earlier of the check's deadline and ``timeout`` seconds from now."""
        if timeout is None:
            return self.shared.deadline
        return min(self.shared.deadline, time.monotonic() + timeout)

    @property
    def supervisor(self) -> Supervisor:
        if self.shared.supervisor is None:
            raise HarnessError("this step needs a server submission, but the spec's submission has ready: none")
        return self.shared.supervisor

    @property
    def host(self) -> str:
        return self.shared.backend.host

    @property
    def backend(self) -> Backend:
        return self.shared.backend

    @property
    def observer(self) -> Observer:
        return self.shared.backend.observer

    def label(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def observed(self) -> Proc | None:
        """The submission process to observe: the client started by this check, else the server."""
        if self.shared.client is not None:
            return self.shared.client
        if self.shared.supervisor is not None:
            return self.shared.supervisor.proc
        return None

    def read_file(self, path: Path) -> bytes:
        data = self.shared.files.get(path)
        if data is None:
            data = path.read_bytes()
            self.shared.files[path] = data
        return data

    def spec_path(self, relative: str) -> Path:
        return (self.shared.spec.directory / relative).resolve()

    # -- named resources -----------------------------------------------------------------------------
    def conn(self, name: str) -> TcpConn:
        try:
            return self.conns[name]
        except KeyError:
            raise HarnessError(f"no open connection named {name!r}") from None

    def udp(self, name: str) -> UdpSock:
        if name not in self.udps:
            self.udps[name] = UdpSock(self.host, self.label(name), self.transcript)
        return self.udps[name]

    def listener(self, name: str) -> Listener:
        try:
            return self.listeners[name]
        except KeyError:
            raise HarnessError(f"no listener named {name!r}") from None

    def died_note(self) -> str:
        """' (the server was killed by SIGPIPE)' when the observed process has ended, else ''.

        Only called on failure paths: it may wait a moment for a dying process to be reaped.
        """
        proc = self.observed()
        if proc is None:
            return ""
        if proc.alive() and proc.wait(0.1) is None:
            return ""
        return f" (the {proc.label} {proc.status_text()})"

    @contextmanager
    def branch(self, index: int, group: threading.Barrier | None = None) -> Iterator[CheckContext]:
        child = CheckContext(self.shared, f"{self.prefix}#{index}.", branch=index)
        child.group = group
        try:
            yield child
        finally:
            child.close_all()

    def close_all(self) -> None:
        for conn in self.conns.values():
            conn.closed = True
            conn.sock.close()
        for lst in self.listeners.values():
            lst.close()
        for u in self.udps.values():
            u.close()
        self.conns.clear()
        self.listeners.clear()
        self.udps.clear()
