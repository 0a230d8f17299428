"""Ask the kernel, via ``NETLINK_SOCK_DIAG``, how far a TCP peer has read.

The harness sends a message to a submission in fragments and must send
fragment *k+1* only once the submission has *read* fragment *k*.  Waiting for
our bytes to be ACKed (``SIOCOUTQ`` reaching 0) costs up to ~40 ms per
fragment because of delayed ACKs when the reader sends nothing back.  The
kernel knows the answer without any ACK: the *peer* socket (the submission's
end of the connection) has

* ``tcpi_bytes_received`` (``struct tcp_info``, Linux >= 4.1): payload bytes it
  has received in order, and
* ``idiag_rqueue`` (``struct inet_diag_msg``): bytes received but not yet read
  by the application (``rcv_nxt - copied_seq``).

So "the peer has read everything we wrote" is
``p.bytes_received >= written and p.rqueue == 0`` for
``p = tcp_progress(peer_local, peer_remote)``, where ``peer_local`` is our
socket's remote address and ``peer_remote`` our socket's local address.

The query is one exact-match ``SOCK_DIAG_BY_FAMILY`` request
(``struct inet_diag_req_v2`` with the four-tuple filled in and
``INET_DIAG_NOCOOKIE``) asking for the ``INET_DIAG_INFO`` extension; the reply
(``nlmsghdr`` + ``inet_diag_msg`` + ``rtattr``\\ s) is parsed here with
:mod:`struct`.  Only the standard library is used.

Kernel facts worth knowing when reading the numbers (checked on Linux 6.x by
``tests/test_sockdiag.py``):

* A FIN counts as one byte in ``bytes_received`` and in ``rqueue``: after
  the sender shuts down its write side, ``bytes_received`` is ``written + 1``.
  The FIN leaves ``rqueue`` when a read reaches it: a FIN arriving after all
  data was read keeps ``rqueue`` at 1 until ``recv`` returns ``b""``, while a
  read taking the last data byte of the segment carrying the FIN consumes
  the FIN too.  Use ``>=`` when comparing ``bytes_received``.
* ``bytes_acked`` of the connecting side counts its SYN (it is ``1 + data``).
* Sockets without ``tcp_info`` -- TIME_WAIT entries (also an orphaned,
  closed socket waiting in FIN_WAIT2, reported with state 5) and SYN_RECV
  request sockets -- report ``bytes_received`` and ``bytes_acked`` as 0 and
  ``inode`` as 0.  Look at ``state`` before trusting those fields.
* The kernel's exact lookup falls back to a *listening* socket on the local
  port when no connection matches (it is the same lookup that incoming
  packets use).  Such an answer is recognised (its addresses differ from the
  ones asked for) and reported as ``None``.
* Netlink sockets see the network namespace of the process that opens them:
  the harness and the submission must share it (as they do for procfs).

One netlink socket is kept per thread (and re-opened after ``fork``); a query
is two system calls and takes a few microseconds.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

__all__ = [
    "SockDiagError",
    "TcpProgress",
    "available",
    "tcp_progress",
]

# --------------------------------------------------------------------------
# Kernel ABI (include/uapi/linux/{netlink,sock_diag,inet_diag,tcp}.h)
# --------------------------------------------------------------------------

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20

NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_DUMP = 0x300  # NLM_F_ROOT | NLM_F_MATCH: every socket the request's states select

INET_DIAG_INFO = 2
INET_DIAG_NOCOOKIE = 0xFFFFFFFF
ALL_STATES = 0xFFFFFFFF

TCP_TIME_WAIT = 6
TCP_LISTEN = 10

#: struct nlmsghdr: len, type, flags, seq, pid (host byte order).
_NLMSGHDR = struct.Struct("=IHHII")
#: struct inet_diag_req_v2: family, protocol, ext, pad, states, then
#: struct inet_diag_sockid: sport, dport (big-endian), src[16], dst[16] (raw),
#: if, cookie[2] (host byte order).
_REQ_V2 = struct.Struct("=BBBxI2s2s16s16sIII")
#: struct inet_diag_msg: family, state, timer, retrans, sockid (as above),
#: expires, rqueue, wqueue, uid, inode.
_DIAG_MSG = struct.Struct("=BBBB2s2s16s16sIIIIIIII")
#: struct rtattr: len, type.
_RTATTR = struct.Struct("=HH")
#: struct nlmsgerr starts with a signed errno.
_NLMSGERR = struct.Struct("=i")
#: __u64 tcpi_bytes_acked at offset 120, tcpi_bytes_received at 128 (Linux >= 4.1).
_TCPI_BYTES = struct.Struct("=QQ")
_TCPI_BYTES_ACKED_OFFSET = 120
_TCPI_MIN_LEN = _TCPI_BYTES_ACKED_OFFSET + _TCPI_BYTES.size  # 136
#: __u32 tcpi_unacked (segments in flight) at offset 24, tcpi_notsent_bytes at 144 (Linux >= 4.6) and
#: tcpi_snd_wnd (the peer's advertised window, bytes) at 228 (Linux >= 5.4).
_TCPI_U32 = struct.Struct("=I")
_TCPI_UNACKED_OFFSET, _TCPI_NOTSENT_OFFSET, _TCPI_SND_WND_OFFSET = 24, 144, 228

assert _NLMSGHDR.size == 16
assert _REQ_V2.size == 56
assert _DIAG_MSG.size == 72

_RECV_BUFSIZE = 65536
_REPLY_TIMEOUT = 2.0  # seconds; replies are queued synchronously, this only guards against a hang

_Addr = ipaddress.IPv4Address | ipaddress.IPv6Address


class SockDiagError(OSError):
    """A sock_diag query failed for a reason other than "no such socket"."""


@dataclass(frozen=True)
class TcpProgress:
    """What the kernel reports about one TCP socket.

    ``bytes_received`` / ``bytes_acked`` are 0 (and ``inode`` is 0) for
    sockets without ``tcp_info`` (TIME_WAIT and orphaned FIN_WAIT2 entries,
    SYN_RECV request sockets).
    """

    state: int  # TCP state (1 = ESTABLISHED, 6 = TIME_WAIT, 8 = CLOSE_WAIT, 10 = LISTEN, ...)
    rqueue: int  # bytes received but not yet read by the application (idiag_rqueue; an unread FIN counts 1)
    wqueue: int  # bytes written but not yet acknowledged (idiag_wqueue)
    bytes_received: int  # tcpi_bytes_received (a received FIN counts 1)
    bytes_acked: int  # tcpi_bytes_acked (the connecting side's SYN counts 1)
    inode: int
    in_flight: int = 0  # tcpi_unacked: segments sent and not yet acknowledged
    notsent: int = 0  # tcpi_notsent_bytes: bytes written that wait for the peer's window (or congestion window)
    peer_window: int | None = None  # tcpi_snd_wnd: the window the peer advertises (None: Linux < 5.4)

    @property
    def window_shut(self) -> bool:
        """Whether this socket holds bytes it cannot send until its peer reads: the peer advertises a zero window
        and nothing is in flight, so no acknowledgement will free room (a program's send() on it stays blocked)."""
        return self.peer_window == 0 and self.in_flight == 0 and self.notsent > 0


# --------------------------------------------------------------------------
# Addresses
# --------------------------------------------------------------------------


def _parse_ip(text: str) -> _Addr:
    """Parse address text; a v4-mapped IPv6 address becomes its IPv4 address."""
    addr = ipaddress.ip_address(text)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _check_port(port: int) -> int:
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"port out of range: {port}")
    return port


def _mapped(addr: ipaddress.IPv4Address) -> bytes:
    return b"\0" * 10 + b"\xff\xff" + addr.packed


def _reply_ip(family: int, raw: bytes) -> _Addr:
    if family == socket.AF_INET:
        return ipaddress.IPv4Address(raw[:4])
    addr = ipaddress.IPv6Address(raw)
    return addr.ipv4_mapped if addr.ipv4_mapped is not None else addr


# --------------------------------------------------------------------------
# Netlink plumbing
# --------------------------------------------------------------------------


class DiagSocket(NamedTuple):
    """One parsed inet_diag_msg."""

    sport: int
    dport: int
    src: _Addr
    dst: _Addr
    progress: TcpProgress
    has_info: bool


class _Conn(threading.local):
    """This thread's netlink socket (re-opened in a forked child)."""

    sock: socket.socket | None = None
    pid: int = 0
    seq: int = 0


_conn = _Conn()


def _netlink() -> socket.socket:
    pid = os.getpid()
    if _conn.sock is not None and _conn.pid != pid:
        # inherited across fork: the parent still reads from it, leave it alone
        _conn.sock = None
    if _conn.sock is None:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
        sock.settimeout(_REPLY_TIMEOUT)
        _conn.sock, _conn.pid = sock, pid
    return _conn.sock


def _drop_netlink() -> None:
    sock, _conn.sock = _conn.sock, None
    if sock is not None:
        sock.close()


def _parse_diag_msg(payload: bytes) -> DiagSocket:
    """Parse an inet_diag_msg and its attributes."""
    if len(payload) < _DIAG_MSG.size:
        raise SockDiagError(errno.EPROTO, f"short inet_diag_msg ({len(payload)} bytes)")
    (family, state, _timer, _retrans, sport, dport, src, dst, _if, _c0, _c1, _expires, rqueue, wqueue, _uid, inode) = (
        _DIAG_MSG.unpack_from(payload)
    )
    bytes_acked = bytes_received = in_flight = notsent = 0
    peer_window: int | None = None
    has_info = False
    off = _DIAG_MSG.size
    while off + _RTATTR.size <= len(payload):
        rta_len, rta_type = _RTATTR.unpack_from(payload, off)
        if rta_len < _RTATTR.size or off + rta_len > len(payload):
            raise SockDiagError(errno.EPROTO, "malformed rtattr in sock_diag reply")
        if rta_type & 0x3FFF == INET_DIAG_INFO:
            info = payload[off + _RTATTR.size : off + rta_len]
            if len(info) < _TCPI_MIN_LEN:
                raise SockDiagError(
                    errno.EOPNOTSUPP, f"tcp_info has {len(info)} bytes, need {_TCPI_MIN_LEN} (Linux >= 4.1)"
                )
            bytes_acked, bytes_received = _TCPI_BYTES.unpack_from(info, _TCPI_BYTES_ACKED_OFFSET)
            (in_flight,) = _TCPI_U32.unpack_from(info, _TCPI_UNACKED_OFFSET)
            if len(info) >= _TCPI_NOTSENT_OFFSET + 4:
                (notsent,) = _TCPI_U32.unpack_from(info, _TCPI_NOTSENT_OFFSET)
            if len(info) >= _TCPI_SND_WND_OFFSET + 4:
                (peer_window,) = _TCPI_U32.unpack_from(info, _TCPI_SND_WND_OFFSET)
            has_info = True
        off += (rta_len + 3) & ~3
    progress = TcpProgress(
        state=state,
        rqueue=rqueue,
        wqueue=wqueue,
        bytes_received=bytes_received,
        bytes_acked=bytes_acked,
        inode=inode,
        in_flight=in_flight,
        notsent=notsent,
        peer_window=peer_window,
    )
    return DiagSocket(
        int.from_bytes(sport, "big"),
        int.from_bytes(dport, "big"),
        _reply_ip(family, src),
        _reply_ip(family, dst),
        progress,
        has_info,
    )


def _query(family: int, src: bytes, sport: int, dst: bytes, dport: int, *, states: int = ALL_STATES,
           dump: bool = False) -> list[DiagSocket]:
    """Send one exact-match request (or, with ``dump``, ask for every socket in ``states``, a bit mask of
    1 << state); return the parsed replies ([] for ENOENT)."""
    sock = _netlink()
    _conn.seq = seq = (_conn.seq + 1) & 0xFFFFFFFF
    body = _REQ_V2.pack(
        family,
        socket.IPPROTO_TCP,
        0 if dump else 1 << (INET_DIAG_INFO - 1),
        states,
        sport.to_bytes(2, "big"),
        dport.to_bytes(2, "big"),
        src.ljust(16, b"\0"),
        dst.ljust(16, b"\0"),
        0,
        INET_DIAG_NOCOOKIE,
        INET_DIAG_NOCOOKIE,
    )
    flags = NLM_F_REQUEST | (NLM_F_DUMP if dump else 0)
    request = _NLMSGHDR.pack(_NLMSGHDR.size + len(body), SOCK_DIAG_BY_FAMILY, flags, seq, 0) + body
    results: list[DiagSocket] = []
    try:
        sock.sendto(request, (0, 0))
        while True:
            data = sock.recv(_RECV_BUFSIZE)
            off = 0
            finished = False
            while off + _NLMSGHDR.size <= len(data):
                msg_len, msg_type, msg_flags, msg_seq, _pid = _NLMSGHDR.unpack_from(data, off)
                if msg_len < _NLMSGHDR.size or off + msg_len > len(data):
                    raise SockDiagError(errno.EPROTO, "malformed nlmsghdr in sock_diag reply")
                payload = data[off + _NLMSGHDR.size : off + msg_len]
                off += (msg_len + 3) & ~3
                if msg_seq != seq:
                    continue  # left over from an interrupted earlier query
                if msg_type == NLMSG_ERROR:
                    if len(payload) < _NLMSGERR.size:
                        raise SockDiagError(errno.EPROTO, "short nlmsgerr in sock_diag reply")
                    (err,) = _NLMSGERR.unpack_from(payload)
                    if err == -errno.ENOENT:
                        return []
                    if err != 0:
                        raise SockDiagError(-err, f"sock_diag: {os.strerror(-err)}")
                    finished = True
                elif msg_type == NLMSG_DONE:
                    finished = True
                elif msg_type == SOCK_DIAG_BY_FAMILY:
                    results.append(_parse_diag_msg(payload))
                    if not msg_flags & NLM_F_MULTI and not dump:
                        finished = True
            if finished:
                return results
    except BaseException:
        # a half-read reply must not confuse the next query: start afresh
        _drop_netlink()
        raise


# --------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------


def _lookup(local: tuple[str, int], remote: tuple[str, int]) -> DiagSocket | None:
    lip, lport = _parse_ip(local[0]), _check_port(local[1])
    rip, rport = _parse_ip(remote[0]), _check_port(remote[1])
    if lip.version != rip.version:
        raise ValueError(f"address family mismatch: {local!r} / {remote!r}")
    attempts: list[tuple[int, bytes, bytes]]
    if isinstance(lip, ipaddress.IPv4Address) and isinstance(rip, ipaddress.IPv4Address):
        attempts = [(socket.AF_INET, lip.packed, rip.packed), (socket.AF_INET6, _mapped(lip), _mapped(rip))]
    else:
        attempts = [(socket.AF_INET6, lip.packed, rip.packed)]
    for index, (family, src, dst) in enumerate(attempts):
        try:
            replies = _query(family, src, lport, dst, rport)
        except SockDiagError as exc:
            if index > 0 and exc.errno in (errno.EINVAL, errno.EAFNOSUPPORT, errno.EOPNOTSUPP):
                break  # no IPv6 in this kernel: the v4-mapped fallback cannot find anything
            raise
        # The kernel's lookup falls back to a listener on the local port: keep exact matches only.
        matches = [r for r in replies if (r.sport, r.dport, r.src, r.dst) == (lport, rport, lip, rip)]
        if matches:
            live = [r for r in matches if r.progress.state != TCP_TIME_WAIT]
            return (live or matches)[0]
    return None


def tcp_progress(local: tuple[str, int], remote: tuple[str, int]) -> TcpProgress | None:
    """The socket whose local address is `local` and remote address is `remote` (IPv4 or IPv6 text, e.g.
    "127.0.0.1" or "::1"; an IPv4 pair is also looked up as v4-mapped in AF_INET6 if not found in AF_INET),
    or None when no such socket exists (closed).

    v4-mapped IPv6 text ("::ffff:127.0.0.1") is treated as IPv4.  A listening socket is found with the
    unspecified remote address (("0.0.0.0", 0) or ("::", 0)).  If several sockets come back, a
    non-TIME_WAIT one is preferred.  Raises ValueError for malformed addresses/ports or an IPv4/IPv6 mix,
    and an OSError (usually :class:`SockDiagError`) when the kernel query itself fails.
    """
    reply = _lookup(local, remote)
    return None if reply is None else reply.progress


def tcp_sockets(states: Iterable[int], port: int | None = None) -> list[tuple[DiagSocket, str]]:
    """Every TCP socket of this network namespace in one of ``states`` (TCP state numbers), IPv4 and IPv6, as
    (reply, "tcp" or "tcp6"); with ``port``, those whose local or remote port it is. The kernel selects by state,
    so the TIME_WAIT sockets a busy grading leaves by the thousand cost nothing (unlike /proc/net/tcp, which
    formats every one)."""
    mask = 0
    for state in states:
        mask |= 1 << state
    found: list[tuple[DiagSocket, str]] = []
    for family, proto in ((socket.AF_INET, "tcp"), (socket.AF_INET6, "tcp6")):
        zero = bytes(16)
        for reply in _query(family, zero, 0, zero, 0, states=mask, dump=True):
            if port is None or port in (reply.sport, reply.dport):
                found.append((reply, proto))
    return found


_available: bool | None = None
_available_lock = threading.Lock()


def _probe() -> bool:
    """Find a listening socket of our own through sock_diag, tcp_info included."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)
            host, port = listener.getsockname()
            found = _lookup((host, port), ("0.0.0.0", 0))
            expected_inode = os.fstat(listener.fileno()).st_ino
    except (OSError, ValueError):
        return False
    return (
        found is not None
        and found.has_info
        and found.progress.state == TCP_LISTEN
        and found.progress.inode == expected_inode
    )


def available() -> bool:
    """True if a sock_diag query works on this machine (the answer is cached)."""
    global _available
    if _available is None:
        with _available_lock:
            if _available is None:
                _available = _probe()
    return _available
