"""Observe a student's program through Linux ``/proc`` instead of poking it.

The harness needs to know things such as "is the submission listening on its
port yet?", "how many bytes are sitting unread in the server's receive
queue?" or "did the server leak connections in CLOSE_WAIT?".  All of that can
be read from procfs without touching the student's sockets:

* ``/proc/net/{tcp,tcp6,udp,udp6}`` (or ``/proc/<pid>/net/...`` to see the
  network namespace of another process) list every socket with its state,
  queue lengths and inode number;
* ``/proc/<pid>/fd/*`` are symlinks reading ``socket:[<inode>]`` for the
  sockets a process holds, which ties table entries to processes;
* ``/proc/<pid>/stat`` gives the parent pid and session id, from which the
  process tree of a submission is rebuilt.

The module is split into pure parsing functions (text in, frozen dataclasses
out) and thin I/O wrappers that read procfs.  Processes and file descriptors
come and go while we read them; such races are normal and are handled by
silently skipping whatever vanished (or is not readable), never by raising.
"""

from __future__ import annotations

import enum
import ipaddress
import os
import sys
from collections.abc import Container, Iterable
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "NET_PROTOS",
    "ProcStat",
    "SockEntry",
    "TcpState",
    "byteswap16",
    "find_tcp",
    "listening_ports",
    "open_fd_count",
    "owned_sockets",
    "parse_net_table",
    "parse_stat",
    "process_tree",
    "read_sockets",
    "socket_inodes",
]

PROC = "/proc"

#: The socket tables understood by :func:`parse_net_table`.
NET_PROTOS: tuple[str, ...] = ("tcp", "tcp6", "udp", "udp6")

ByteOrder = Literal["little", "big"]


class TcpState(enum.IntEnum):
    """TCP states as numbered in the ``st`` column of ``/proc/net/tcp``."""

    ESTABLISHED = 1
    SYN_SENT = 2
    SYN_RECV = 3
    FIN_WAIT1 = 4
    FIN_WAIT2 = 5
    TIME_WAIT = 6
    CLOSE = 7
    CLOSE_WAIT = 8
    LAST_ACK = 9
    LISTEN = 10
    CLOSING = 11


_TCP_STATES: dict[int, TcpState] = {s.value: s for s in TcpState}

#: Raw ``st`` values of UDP sockets.
UDP_ESTABLISHED = 1
UDP_UNCONNECTED = 7


@dataclass(frozen=True)
class SockEntry:
    """One line of a ``/proc/net/{tcp,tcp6,udp,udp6}`` table.

    ``local`` and ``remote`` are ``(ip text, port)``; IPv4 addresses use
    dotted-quad text, IPv6 addresses compressed text (``"::1"``), and
    IPv4-mapped IPv6 addresses keep their mapped form
    (``"::ffff:127.0.0.1"``).  ``state`` is the raw ``st`` value (a
    :class:`TcpState` for tcp tables).  For a LISTEN socket ``rx_queue`` is
    the accept backlog length.  TIME_WAIT entries have ``inode`` 0.
    """

    proto: str
    local: tuple[str, int]
    remote: tuple[str, int]
    state: int
    tx_queue: int
    rx_queue: int
    inode: int


@dataclass(frozen=True)
class ProcStat:
    """The fields of ``/proc/<pid>/stat`` the harness cares about."""

    pid: int
    comm: str
    state: str
    ppid: int
    pgrp: int
    session: int


# --------------------------------------------------------------------------
# Pure helpers and parsers
# --------------------------------------------------------------------------


def byteswap16(port: int) -> int:
    """Swap the two bytes of a 16-bit value (``htons``/``ntohs`` on x86)."""
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"not a 16-bit value: {port!r}")
    return ((port & 0xFF) << 8) | (port >> 8)


def _ip_text(packed: bytes) -> str:
    """Render 4 or 16 network-order bytes as address text."""
    if len(packed) == 4:
        return str(ipaddress.IPv4Address(packed))
    addr = ipaddress.IPv6Address(packed)
    mapped = addr.ipv4_mapped
    if mapped is not None:
        # ipaddress renders these as "::ffff:7f00:1" (before 3.13); keep
        # the familiar dotted form regardless of the Python version.
        return f"::ffff:{mapped}"
    return addr.compressed


def _decode_address(field: str, byteorder: ByteOrder) -> tuple[str, int]:
    """Decode ``HEXADDR:HEXPORT`` from a socket table.

    The kernel prints the address as a sequence of 32-bit words, each in
    host byte order (``%08X`` of the raw ``__be32``), and the port already
    converted to host order (``%04X`` of ``ntohs``).
    """
    hexaddr, sep, hexport = field.partition(":")
    if not sep or len(hexaddr) not in (8, 32) or not hexport:
        raise ValueError(f"bad socket address field: {field!r}")
    packed = b"".join(int(hexaddr[i : i + 8], 16).to_bytes(4, byteorder) for i in range(0, len(hexaddr), 8))
    return _ip_text(packed), int(hexport, 16)


def _parse_net_line(line: str, proto: str, byteorder: ByteOrder) -> SockEntry:
    fields = line.split()
    if len(fields) < 10 or not fields[0].endswith(":"):
        raise ValueError(f"short socket table line: {line!r}")
    local = _decode_address(fields[1], byteorder)
    remote = _decode_address(fields[2], byteorder)
    st = int(fields[3], 16)
    tx_hex, sep, rx_hex = fields[4].partition(":")
    if not sep:
        raise ValueError(f"bad queue field: {fields[4]!r}")
    state: int = _TCP_STATES.get(st, st) if proto.startswith("tcp") else st
    return SockEntry(
        proto=proto,
        local=local,
        remote=remote,
        state=state,
        tx_queue=int(tx_hex, 16),
        rx_queue=int(rx_hex, 16),
        inode=int(fields[9]),
    )


def parse_net_table(text: str, proto: str, *, byteorder: ByteOrder = sys.byteorder) -> list[SockEntry]:
    """Parse the content of ``/proc/net/{tcp,tcp6,udp,udp6}``.

    The header line and blank or malformed lines (e.g. a line cut short by
    a concurrent change while reading) are skipped.  ``byteorder`` is the
    byte order of the machine that produced ``text`` (the host's by
    default; ``"little"`` on x86).
    """
    if proto not in NET_PROTOS:
        raise ValueError(f"unknown socket table {proto!r}; expected one of {NET_PROTOS}")
    entries: list[SockEntry] = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("sl "):
            continue
        try:
            entries.append(_parse_net_line(stripped, proto, byteorder))
        except ValueError:
            continue
    return entries


def parse_stat(text: str) -> ProcStat:
    """Parse the content of ``/proc/<pid>/stat``.

    ``comm`` is enclosed in parentheses and may itself contain spaces and
    parentheses, so the fields are split after the *last* ``)``.
    """
    head, sep, tail = text.rpartition(")")
    pid_text, lparen, comm = head.partition("(")
    rest = tail.split()
    if not sep or not lparen or len(rest) < 4:
        raise ValueError(f"malformed stat line: {text!r}")
    return ProcStat(
        pid=int(pid_text),
        comm=comm,
        state=rest[0],
        ppid=int(rest[1]),
        pgrp=int(rest[2]),
        session=int(rest[3]),
    )


def _canon_ip(ip: str) -> str:
    """Canonical text of an address, IPv4-mapped IPv6 folded to IPv4."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address):
        mapped = addr.ipv4_mapped
        if mapped is not None:
            return str(mapped)
        return addr.compressed
    return str(addr)


def _canon_endpoint(endpoint: tuple[str, int]) -> tuple[str, int]:
    return _canon_ip(endpoint[0]), int(endpoint[1])


# --------------------------------------------------------------------------
# Thin I/O over /proc
# --------------------------------------------------------------------------


def _read_text(path: str) -> str | None:
    """Read a procfs file; ``None`` if it vanished or cannot be read."""
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            return fh.read()
    except OSError:
        return None


def _keep_ports(text: str, ports: Iterable[int]) -> str:
    """Only the header and the lines whose local or remote port is one of ``ports`` (a cheap text filter
    that spares parsing thousands of TIME_WAIT lines on a busy machine)."""
    tokens = tuple(f":{p:04X} " for p in ports)
    lines = text.splitlines(keepends=True)
    return "".join(lines[:1] + [line for line in lines[1:] if any(t in line for t in tokens)])


def _keep_inodes(text: str, inodes: Container[int]) -> str:
    """Only the header and the lines of sockets with one of these inodes (no address decoding needed)."""
    lines = text.splitlines(keepends=True)
    kept = lines[:1]
    for line in lines[1:]:
        fields = line.split(None, 10)
        if len(fields) > 9 and fields[9].isdigit() and int(fields[9]) in inodes:
            kept.append(line)
    return "".join(kept)


def _read_tables(
    protos: Iterable[str],
    pid: int | None,
    ports: Iterable[int] | None = None,
    inodes: Container[int] | None = None,
) -> list[SockEntry] | None:
    """Read socket tables; ``None`` if not a single one could be read."""
    base = os.path.join(PROC, "net") if pid is None else os.path.join(PROC, str(pid), "net")
    entries: list[SockEntry] = []
    any_read = False
    wanted = None if ports is None else tuple(ports)
    for proto in protos:
        text = _read_text(os.path.join(base, proto))
        if text is not None:
            any_read = True
            if wanted is not None:
                text = _keep_ports(text, wanted)
            if inodes is not None:
                text = _keep_inodes(text, inodes)
            entries.extend(parse_net_table(text, proto))
    return entries if any_read else None


def read_sockets(
    protos: Iterable[str] = NET_PROTOS, pid: int | None = None, ports: Iterable[int] | None = None
) -> list[SockEntry]:
    """Read socket tables from ``/proc/net/<proto>``.

    With ``pid``, read ``/proc/<pid>/net/<proto>`` instead, which shows the
    network namespace of that process.  A missing table (no IPv6, or the
    process is gone) contributes nothing.  With ``ports``, only entries whose
    local or remote port is among them (the filter may keep a few more).
    """
    return _read_tables(protos, pid, ports) or []


def _all_stats() -> list[ProcStat]:
    stats: list[ProcStat] = []
    try:
        names = os.listdir(PROC)
    except OSError:
        return stats
    for name in names:
        if not name.isdigit():
            continue
        text = _read_text(os.path.join(PROC, name, "stat"))
        if text is None:
            continue
        try:
            stats.append(parse_stat(text))
        except ValueError:
            continue
    return stats


def alive(pid: int) -> bool:
    """Whether ``pid`` exists and runs: a zombie (dead, not yet reaped) does not."""
    text = _read_text(os.path.join(PROC, str(pid), "stat"))
    if text is None:
        return False
    try:
        return parse_stat(text).state not in ("Z", "X")
    except ValueError:
        return False


def process_tree(root_pid: int) -> list[int]:
    """Return ``root_pid`` and all its descendants, sorted and unique.

    Descendants are found through the parent pid in ``/proc/*/stat``.  Any
    process whose session id equals ``root_pid`` is included too (with its
    own descendants): submissions are started with ``setsid``, so this
    catches children that double-forked and were reparented away.  Only
    processes present in ``/proc`` are returned (zombies included; they hold
    no file descriptors); the root itself is omitted once it has exited.
    """
    try:
        names = os.listdir(PROC)
    except OSError:
        return []
    present = {int(n) for n in names if n.isdigit()}
    stack = [pid for pid in present if _in_session(pid, root_pid)]
    if root_pid in present:
        stack.append(root_pid)
    found: set[int] = set()
    while stack:
        pid = stack.pop()
        if pid in found:
            continue
        found.add(pid)
        kids = _children(pid)
        if kids is None:  # a kernel without /proc/PID/task/TID/children: every process's parent, once
            return _process_tree_by_stat(root_pid)
        stack.extend(kids)
    return sorted(found)


# Processes known to be outside a session: a process never joins a session it was not born in (setsid()
# makes a session of its own), so what was seen outside stays outside and /proc/PID/stat is read once per
# process, not at every look. (A child forked inside the session is found through its parent.)
_outside: dict[int, set[int]] = {}
_OUTSIDE_ROOTS = 64


def _in_session(pid: int, root_pid: int) -> bool:
    outside = _outside.get(root_pid)
    if outside is None:
        if len(_outside) >= _OUTSIDE_ROOTS:
            _outside.pop(next(iter(_outside)))
        outside = _outside[root_pid] = set()
    if pid in outside:
        return False
    text = _read_text(os.path.join(PROC, str(pid), "stat"))
    if text is None:
        return False
    try:
        session = parse_stat(text).session
    except ValueError:
        return False
    if session != root_pid:
        outside.add(pid)
        return False
    return True


def _children(pid: int) -> list[int] | None:
    """The children of every thread of ``pid`` (empty once it is gone), None when the kernel cannot tell."""
    task_dir = os.path.join(PROC, str(pid), "task")
    try:
        tids = os.listdir(task_dir)
    except OSError:
        return []
    kids: list[int] = []
    for tid in tids:
        text = _read_text(os.path.join(task_dir, tid, "children"))
        if text is None:
            if not os.path.exists(os.path.join(task_dir, tid)):
                continue  # the thread ended
            return None
        kids.extend(int(k) for k in text.split())
    return kids


def _process_tree_by_stat(root_pid: int) -> list[int]:
    stats = _all_stats()
    present = {st.pid for st in stats}
    children: dict[int, list[int]] = {}
    for st in stats:
        children.setdefault(st.ppid, []).append(st.pid)
    found: set[int] = set()
    stack = [st.pid for st in stats if st.session == root_pid]
    if root_pid in present:
        stack.append(root_pid)
    while stack:
        pid = stack.pop()
        if pid in found:
            continue
        found.add(pid)
        stack.extend(children.get(pid, ()))
    return sorted(found)


RUNNING_STATES = ("R", "D", "W")  # on a CPU, or about to be (runnable, uninterruptible I/O, paging)


def tree_waiting(root_pid: int) -> bool:
    """Whether no thread of the process tree of ``root_pid`` is running: each one sleeps (waits in recv, accept,
    poll...), is stopped, or has exited. A program seen waiting has done all it could without more input."""
    for pid in process_tree(root_pid):
        task_dir = os.path.join(PROC, str(pid), "task")
        try:
            tids = os.listdir(task_dir)
        except OSError:
            continue  # gone
        for tid in tids:
            text = _read_text(os.path.join(task_dir, tid, "stat"))
            if text is None:
                continue
            try:
                if parse_stat(text).state in RUNNING_STATES:
                    return False
            except ValueError:
                continue
    return True


def _fd_dir(pid: int) -> str:
    return os.path.join(PROC, str(pid), "fd")


def socket_inodes(pids: Iterable[int]) -> dict[int, list[int]]:
    """Map socket inode -> pids holding an fd on it (``socket:[N]`` links)."""
    result: dict[int, list[int]] = {}
    for pid in sorted(set(pids)):
        fd_dir = _fd_dir(pid)
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(os.path.join(fd_dir, fd))
            except OSError:
                continue
            if not (target.startswith("socket:[") and target.endswith("]")):
                continue
            try:
                inode = int(target[len("socket:[") : -1])
            except ValueError:
                continue
            holders = result.setdefault(inode, [])
            if pid not in holders:
                holders.append(pid)
    return result


def open_fd_count(pids: Iterable[int]) -> int:
    """Total number of open file descriptors over ``pids`` (vanished: 0)."""
    total = 0
    for pid in set(pids):
        try:
            total += len(os.listdir(_fd_dir(pid)))
        except OSError:
            continue
    return total


def netns_key(pid: int) -> str | None:
    try:
        return os.readlink(os.path.join(PROC, str(pid), "ns", "net"))
    except OSError:
        return None


def _tree_sockets(pids: list[int], protos: Iterable[str]) -> list[SockEntry]:
    """Entries of ``protos`` whose inode is held by one of ``pids``.

    The tables are read through ``/proc/<pid>/net`` once per distinct
    network namespace of the tree, so a submission running in its own
    namespace is seen as it sees itself.
    """
    protos = tuple(protos)
    inodes = socket_inodes(pids)
    if not inodes:
        return []
    seen_ns: set[str | None] = set()
    seen: set[tuple[str, int]] = set()
    entries: list[SockEntry] = []
    for pid in pids:
        key = netns_key(pid)
        if key in seen_ns:
            continue
        table = _read_tables(protos, pid, inodes=inodes)
        if table is None:
            continue  # process vanished before we could read its tables
        seen_ns.add(key)
        for entry in table:
            ident = (entry.proto, entry.inode)
            if entry.inode in inodes and ident not in seen:
                seen.add(ident)
                entries.append(entry)
    return entries


def listening_ports(root_pid: int, proto: str = "tcp") -> list[SockEntry]:
    """Sockets the process tree of ``root_pid`` accepts traffic on.

    For ``"tcp"``: LISTEN sockets from the tcp and tcp6 tables.  For
    ``"udp"``: udp and udp6 sockets bound to a port (connected or not).
    """
    pids = process_tree(root_pid)
    if proto == "tcp":
        return [e for e in _tree_sockets(pids, ("tcp", "tcp6")) if e.state == TcpState.LISTEN]
    if proto == "udp":
        return [e for e in _tree_sockets(pids, ("udp", "udp6")) if e.local[1] != 0]
    raise ValueError(f"proto must be 'tcp' or 'udp', not {proto!r}")


def owned_sockets(root_pid: int, protos: Iterable[str] = NET_PROTOS) -> list[SockEntry]:
    """All tcp/tcp6/udp/udp6 entries (or those of ``protos``) whose inode is held by the process tree."""
    return _tree_sockets(process_tree(root_pid), protos)


def find_tcp(local: tuple[str, int], remote: tuple[str, int]) -> SockEntry | None:
    """The tcp/tcp6 entry with exactly this (local, remote) 4-tuple.

    IPv4 addresses also match their IPv4-mapped form (``::ffff:a.b.c.d``)
    in the tcp6 table.  If several entries match (a lingering TIME_WAIT
    next to a live connection), a live one is preferred.
    """
    want = (_canon_endpoint(local), _canon_endpoint(remote))
    fallback: SockEntry | None = None
    for entry in read_sockets(("tcp", "tcp6"), ports=(local[1],)):
        if (_canon_endpoint(entry.local), _canon_endpoint(entry.remote)) != want:
            continue
        if entry.state != TcpState.TIME_WAIT:
            return entry
        if fallback is None:
            fallback = entry
    return fallback
