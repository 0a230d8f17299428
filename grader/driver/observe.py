"""How the harness sees what a submission does, without talking to it: the kernel's socket tables and /proc.

:class:`Observer` is the protocol every backend provides; :class:`LocalObserver` reads the kernel of the
harness's own network and PID namespace, which is where the submission runs under every backend (the
sandbox and docker isolations move the harness into the submission's namespace, not the other way round).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

from grader.driver import procfs, sockdiag


@runtime_checkable
class Observer(Protocol):
    """What the harness sees of the submission, read from the kernel, never by talking to it."""

    def listening(self, pid: int, proto: str) -> list[procfs.SockEntry]:
        """Listening TCP (``tcp``) or bound UDP (``udp``) sockets held by ``pid``'s process tree."""
        ...

    def sockets(self, pid: int) -> list[procfs.SockEntry]:
        """Every socket held by ``pid``'s process tree."""
        ...

    def socket_inodes(self, pids: Iterable[int]) -> dict[int, list[int]]:
        """Socket inode -> the pids holding it, for these processes."""
        ...

    def processes(self, pid: int) -> list[int]:
        """``pid`` and every process it started (its session included)."""
        ...

    def progress(self, local: tuple[str, int], remote: tuple[str, int]) -> sockdiag.TcpProgress | None:
        """The submission's socket ``local`` connected to the harness's ``remote``: state, inode, bytes read."""
        ...

    def find_tcp(self, local: tuple[str, int], remote: tuple[str, int]) -> procfs.SockEntry | None:
        """The same socket as /proc/net/tcp shows it (the fallback when sock_diag is not available)."""
        ...

    def tcp_table(self, ports: tuple[int, ...] | None = None) -> list[procfs.SockEntry]:
        """Every TCP socket of the namespace (TIME_WAIT ones included), or those with one of ``ports``."""
        ...

    def waiting(self, pid: int) -> bool:
        """Whether every thread of ``pid``'s process tree waits (sleeps in recv, accept, poll...) or has ended."""
        ...


class LocalObserver:
    """The kernel's view from the harness's own network and PID namespace: /proc and sock_diag."""

    def listening(self, pid: int, proto: str) -> list[procfs.SockEntry]:
        return procfs.listening_ports(pid, proto)

    def sockets(self, pid: int) -> list[procfs.SockEntry]:
        return procfs.owned_sockets(pid)

    def socket_inodes(self, pids: Iterable[int]) -> dict[int, list[int]]:
        return procfs.socket_inodes(pids)

    def processes(self, pid: int) -> list[int]:
        return procfs.process_tree(pid)

    def progress(self, local: tuple[str, int], remote: tuple[str, int]) -> sockdiag.TcpProgress | None:
        return sockdiag.tcp_progress(local, remote) if sockdiag.available() else None

    def find_tcp(self, local: tuple[str, int], remote: tuple[str, int]) -> procfs.SockEntry | None:
        return procfs.find_tcp(local, remote)

    def tcp_table(self, ports: tuple[int, ...] | None = None) -> list[procfs.SockEntry]:
        return procfs.read_sockets(("tcp", "tcp6"), ports=ports)

    def waiting(self, pid: int) -> bool:
        return procfs.tree_waiting(pid)


LOCAL_OBSERVER = LocalObserver()
