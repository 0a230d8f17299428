"""How the harness sees what a submission does, without talking to it: the kernel's socket tables and /proc.

:class:`Observer` is the protocol every backend provides; :class:`LocalObserver` reads the kernel of the
harness's own network and PID namespace, which is where the submission runs under every backend (the
sandbox and docker isolations move the harness into the submission's namespace, not the other way round).
"""

from __future__ import annotations

import ipaddress
import os
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

    def tcp_table(self, ports: tuple[int, ...] | None = None,
                  states: tuple[int, ...] | None = None) -> list[procfs.SockEntry]:
        """Every TCP socket of the namespace (TIME_WAIT ones included), or those with one of ``ports``, or in one
        of ``states``."""
        ...

    def waiting(self, pid: int) -> bool:
        """Whether every thread of ``pid``'s process tree waits (sleeps in recv, accept, poll...) or has ended."""
        ...


class LocalObserver:
    """The kernel's view from the harness's own network and PID namespace: /proc and sock_diag."""

    def listening(self, pid: int, proto: str) -> list[procfs.SockEntry]:
        if proto == "tcp":
            found = _diag_tree_sockets(pid, (procfs.TcpState.LISTEN,))
            if found is not None:
                return found
        return procfs.listening_ports(pid, proto)

    def sockets(self, pid: int) -> list[procfs.SockEntry]:
        found = _diag_tree_sockets(pid, _HELD_STATES)
        if found is None:
            return procfs.owned_sockets(pid)
        return found + procfs.owned_sockets(pid, protos=("udp", "udp6"))

    def socket_inodes(self, pids: Iterable[int]) -> dict[int, list[int]]:
        return procfs.socket_inodes(pids)

    def processes(self, pid: int) -> list[int]:
        return procfs.process_tree(pid)

    def progress(self, local: tuple[str, int], remote: tuple[str, int]) -> sockdiag.TcpProgress | None:
        return sockdiag.tcp_progress(local, remote) if sockdiag.available() else None

    def find_tcp(self, local: tuple[str, int], remote: tuple[str, int]) -> procfs.SockEntry | None:
        return procfs.find_tcp(local, remote)

    def tcp_table(self, ports: tuple[int, ...] | None = None,
                  states: tuple[int, ...] | None = None) -> list[procfs.SockEntry]:
        if states is not None and len(ports or ()) <= 1 and sockdiag.available():
            return [_entry(reply, proto) for reply, proto in sockdiag.tcp_sockets(states, (ports or (None,))[0])]
        entries = procfs.read_sockets(("tcp", "tcp6"), ports=ports)
        return entries if states is None else [e for e in entries if e.state in states]

    def waiting(self, pid: int) -> bool:
        return procfs.tree_waiting(pid)


_HELD_STATES = tuple(st for st in procfs.TcpState if st not in (procfs.TcpState.TIME_WAIT, procfs.TcpState.SYN_RECV))


def _diag_tree_sockets(pid: int, states: tuple[int, ...]) -> list[procfs.SockEntry] | None:
    """The TCP sockets in ``states`` that the process tree of ``pid`` holds, asked of sock_diag (the kernel skips
    the other states, and formats nothing); None where sock_diag cannot answer: not available, or a process of the
    tree is in another network namespace than the harness."""
    if not sockdiag.available():
        return None
    pids = procfs.process_tree(pid)
    own = procfs.netns_key(os.getpid())
    if any(procfs.netns_key(p) not in (own, None) for p in pids):
        return None
    inodes = procfs.socket_inodes(pids)
    if not inodes:
        return []
    return [_entry(reply, proto) for reply, proto in sockdiag.tcp_sockets(states) if reply.progress.inode in inodes]


def _entry(reply: sockdiag.DiagSocket, proto: str) -> procfs.SockEntry:
    """A sock_diag reply as /proc/net/tcp{,6} would show it (an IPv4-mapped address keeps its mapped form)."""
    def text(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
        return f"::ffff:{addr}" if proto == "tcp6" and addr.version == 4 else addr.compressed
    return procfs.SockEntry(proto, (text(reply.src), reply.sport), (text(reply.dst), reply.dport),
                            reply.progress.state, reply.progress.wqueue, reply.progress.rqueue, reply.progress.inode)


LOCAL_OBSERVER = LocalObserver()
