"""The socket side of the I/O driver: the harness's TCP connections, listeners and UDP sockets.

Everything that touches a socket lives here. OSErrors are converted where they happen: a fault of the
submission (refused, reset, closed early) becomes an outcome the steps judge, a fault of the machine becomes
:class:`~grader.errors.HarnessError`. Every wait has a deadline; nothing sleeps a fixed time to synchronise.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import select
import socket
import struct
import termios
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from grader.driver import procfs, sockdiag
from grader.driver.observe import LOCAL_OBSERVER, Observer
from grader.driver.poll import Poll
from grader.engine.transcript import Transcript
from grader.errors import CheckFailed, HarnessError

RECV_SIZE = 65536

# What ended a read: the predicate was satisfied, the peer sent FIN, the peer reset, or time ran out.
COMPLETE, FIN, RST, TIMEOUT = "complete", "fin", "rst", "timeout"
_GONE = (procfs.TcpState.TIME_WAIT, procfs.TcpState.CLOSE)
_NOT_YET_ACCEPTED = (procfs.TcpState.ESTABLISHED, procfs.TcpState.SYN_RECV, procfs.TcpState.CLOSE_WAIT)
PEER_GONE_ERRNOS = (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.ESHUTDOWN)
TCP_CLOSE = 7  # tcpi_state of a connection that was reset (or fully closed)
SMALL_RCVBUF = 32768  # a small receive window: the kernel doubles it (64 KB) for its bookkeeping
SMALL_MSS = 1460  # the segment size of an Ethernet path (loopback's is 65483)
FILL_CHUNK = 16384  # a fill's step: small beside any receive window, so a FIN still fits after it
FILL_BACKLOG = 65536  # what a fill leaves unread in the peer's socket: more than it can echo without our reading


def family_of(host: str) -> socket.AddressFamily:
    """AF_INET6 for an IPv6 literal, else AF_INET."""
    try:
        return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        return socket.AF_INET


def remaining(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def _addr(sockaddr: tuple[str, int] | tuple[str, int, int, int]) -> tuple[str, int]:
    host = sockaddr[0]
    return (str(ipaddress.ip_address(host.split("%")[0])), int(sockaddr[1]))


@dataclass
class ReadResult:
    """What a read produced and how it ended."""

    data: bytes
    end: str
    elapsed: float


_RESET_CONNECTING = ("the connection to {host} port {port} was reset as it opened: the server closed its "
                     "listening socket (or exited) with this connection still waiting to be accepted")
_RESET_HINT = "A server runs until it is stopped: accept() in a loop, and keep the listening socket open."


class TcpConn:
    """One TCP connection of the harness, with its own receive buffer and transcript label."""

    def __init__(self, sock: socket.socket, label: str, transcript: Transcript,
                 observer: Observer = LOCAL_OBSERVER) -> None:
        self.sock = sock
        self.observer = observer
        self.label = label
        self.transcript = transcript
        self.buffer = b""
        self.ended: str | None = None  # FIN or RST once seen
        self.send_failed: str | None = None
        self.reset_seen = False  # a send() already reported ECONNRESET
        self.sent_bytes = 0  # every byte written on this connection
        self.closed = False
        self.peer_inode_at_close = 0  # the peer's socket inode when we closed, if its program had accepted it
        self.sock.setblocking(False)
        self.local = _addr(sock.getsockname())
        self.peer = _addr(sock.getpeername())

    # -- opening ---------------------------------------------------------------------------------------
    @classmethod
    def connect(cls, host: str, port: int, label: str, transcript: Transcript, deadline: float,
                observer: Observer = LOCAL_OBSERVER, small_window: bool = False) -> TcpConn:
        """Connect; with ``small_window``, as a client on an Ethernet-sized path: a receive buffer of SMALL_RCVBUF
        bytes and segments of SMALL_MSS bytes, announced in the SYN, so the peer's send buffer stays under 1 MB
        (the loopback's large segments let it grow to 4 MB) and a longer response keeps it sending: its send()
        blocks, or returns short if non-blocking."""
        fam = family_of(host)
        sock = socket.socket(fam, socket.SOCK_STREAM)
        if small_window:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_RCVBUF)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, SMALL_MSS)
        sock.settimeout(max(0.05, remaining(deadline)))
        try:
            sock.connect((host, port))
        except ConnectionRefusedError:
            sock.close()
            raise CheckFailed(
                f"connection to {host} port {port} refused: nothing is listening there",
                hint="Is the server still running and listening on the port it was given?",
            ) from None
        except TimeoutError:
            sock.close()
            raise CheckFailed(
                f"connecting to {host} port {port} timed out: the server's listen backlog is full "
                "or it is not accepting"
            ) from None
        except ConnectionResetError:
            sock.close()
            raise CheckFailed(_RESET_CONNECTING.format(host=host, port=port), hint=_RESET_HINT) from None
        except OSError as exc:
            sock.close()
            raise HarnessError(f"cannot connect to {host} port {port}: {exc}") from exc
        try:
            conn = cls(sock, label, transcript, observer)
        except OSError as exc:  # reset before we could even look at it (getpeername: ENOTCONN)
            sock.close()
            if exc.errno in (errno.ENOTCONN, errno.ECONNRESET):
                raise CheckFailed(_RESET_CONNECTING.format(host=host, port=port), hint=_RESET_HINT) from None
            raise HarnessError(f"cannot use the connection to {host} port {port}: {exc}") from exc
        transcript.note(f"connected from port {conn.local[1]} to {host} port {port}", label)
        return conn

    # -- sending ---------------------------------------------------------------------------------------
    def send(self, data: bytes, deadline: float) -> bool:
        """Send all of ``data`` before the deadline. False (and noted) when the peer has gone away."""
        view = memoryview(data)
        sent_total = 0
        while sent_total < len(data):
            try:
                n = self.sock.send(view[sent_total:])
            except BlockingIOError:
                if remaining(deadline) <= 0:
                    self.transcript.sent(self.label, bytes(view[:sent_total]))
                    raise CheckFailed(
                        f"could not send: the peer stopped reading after {sent_total} of {len(data)} bytes "
                        "(its receive buffer is full and it is not calling recv)"
                    ) from None
                # Keep reading while we wait, so a peer that echoes as it reads never deadlocks with us.
                readable, _, _ = select.select([self.sock], [self.sock], [], min(0.05, remaining(deadline)))
                if readable:
                    self._recv_some(deadline)
                continue
            except OSError as exc:
                if exc.errno in PEER_GONE_ERRNOS:
                    self.transcript.sent(self.label, bytes(view[:sent_total]))
                    self.send_failed = errno.errorcode.get(exc.errno or 0, str(exc.errno))
                    if exc.errno == errno.ECONNRESET:
                        # send() consumed the reset; a later recv() would only see an end of stream.
                        self.reset_seen = True
                    self.transcript.note(
                        f"send failed ({self.send_failed}): the peer had already closed the connection",
                        self.label,
                    )
                    return False
                raise HarnessError(f"send failed: {exc}") from exc
            sent_total += n
            self.sent_bytes += n
        self.transcript.sent(self.label, data)
        return True

    def queued(self) -> int:
        """Bytes received and not yet taken: in our buffer, and waiting in our socket (FIONREAD)."""
        try:
            buf = fcntl.ioctl(self.sock.fileno(), termios.FIONREAD, struct.pack("i", 0))
        except OSError:
            return len(self.buffer)
        return len(self.buffer) + int(struct.unpack("i", buf)[0])

    def unacked(self) -> int:
        """Bytes we sent that the peer's kernel has not yet acknowledged (SIOCOUTQ)."""
        buf = fcntl.ioctl(self.sock.fileno(), termios.TIOCOUTQ, struct.pack("i", 0))
        return int(struct.unpack("i", buf)[0])

    def peer_unread(self) -> int | None:
        """Bytes waiting in the peer's receive queue (None once the peer's socket is gone)."""
        entry = self.observer.find_tcp(self.peer, self.local)
        return None if entry is None else entry.rx_queue

    def _peer(self) -> tuple[int, int, bool] | None:
        """The peer's socket as (state, inode, whether its program has read everything we sent), or None once it
        is gone (or only TIME_WAIT is left).

        Asked of the kernel with sock_diag (the peer's tcp_info and receive queue): no waiting for a delayed
        ACK. Without sock_diag, from /proc/net/tcp and our unacknowledged count. The inode is 0 while the
        connection waits in the accept queue, and once the program has closed its socket (orphaned).
        """
        if sockdiag.available():
            progress = self.observer.progress(self.peer, self.local)
            if progress is None or progress.state in _GONE:
                return None
            read_all = progress.bytes_received >= self.sent_bytes and progress.rqueue == 0
            return progress.state, progress.inode, read_all
        entry = self.observer.find_tcp(self.peer, self.local)
        if entry is None or entry.state in _GONE:
            return None
        try:
            unacked = self.unacked()
        except OSError:
            return entry.state, entry.inode, True
        return entry.state, entry.inode, unacked == 0 and entry.rx_queue == 0

    def peer_socket(self) -> tuple[int, int] | None:
        """The peer's socket for this connection as (state, inode), or None once it is gone (or TIME_WAIT)."""
        found = self._peer()
        return None if found is None else (found[0], found[1])

    def peer_has_read_all(self) -> bool:
        """Whether the peer's program has read every byte we wrote, or never will (its socket is closed).

        A peer that has only half-closed (shutdown SHUT_WR, its FIN seen here) can still read, so it is waited
        for like any other.
        """
        found = self._peer()
        if found is None:
            return True  # the peer's socket is gone: nothing more will be read
        state, inode, read_all = found
        if inode == 0 and state not in _NOT_YET_ACCEPTED:
            return True  # orphaned: the program closed it
        # (A connection still waiting in the accept queue also has inode 0; its counters are valid.)
        return read_all

    def wait_peer_read(self, deadline: float) -> bool:
        """Wait until the peer's program has read everything we sent. False if the deadline passed first."""
        poll = Poll()
        while True:
            if self.peer_has_read_all() or self.reset_by_peer():
                return True
            if remaining(deadline) <= 0:
                return False
            poll.pause(deadline)

    def wait_acked(self, deadline: float) -> bool:
        """Wait until the peer's kernel has acknowledged every byte we sent (a FIN included).

        False if the deadline passed first (the peer's receive window is full).
        """
        poll = Poll()
        while True:
            try:
                if self.unacked() == 0 or self.reset_by_peer():
                    return True
            except OSError:
                return True
            if remaining(deadline) <= 0:
                return False
            poll.pause(deadline)

    def reset_by_peer(self) -> bool:
        """True when our socket is in CLOSE state: the peer reset it, so nothing we sent will ever be read.

        (After an RST, SIOCOUTQ keeps counting the unacknowledged bytes, and a peek sees any data that
        arrived before the RST, so neither of the other tests notices.)
        """
        try:
            info = self.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
        except OSError:
            return True
        return info[0] == TCP_CLOSE

    def send_fragments(
        self,
        fragments: Sequence[bytes],
        deadline: float,
        *,
        wait_read: bool = True,
        delay: float = 0.0,
        wait_last: bool = False,
    ) -> bool:
        """Send fragments one at a time; each leaves only once the peer has read the previous one.

        With ``wait_last``, also wait until the peer has read the last one.
        """
        for i, fragment in enumerate(fragments):
            if not self.send(fragment, deadline):
                return False
            last = i == len(fragments) - 1
            if wait_read and (wait_last or not last):
                if not self.wait_peer_read(deadline):
                    unread = self.peer_unread()
                    what = f"fragment {i + 1} of {len(fragments)}" if len(fragments) > 1 else (
                        f"the {len(fragment)} bytes sent"
                    )
                    raise CheckFailed(
                        f"the peer did not read {what} ({unread} bytes still unread in its socket) before the "
                        "deadline"
                    )
                if not last:
                    self.transcript.note(f"peer has read fragment {i + 1}; sending the next", self.label)
            if last:
                break
            if delay > 0:
                time.sleep(min(delay, remaining(deadline)))  # a deliberate protocol delay (dribbling)
        return True

    def peer_window(self) -> int | None:
        """The receive window the peer advertises to us (tcpi_snd_wnd; None before Linux 5.4)."""
        try:
            info = self.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 232)
        except OSError:
            return None
        return struct.unpack_from("=I", info, 228)[0] if len(info) >= 232 else None

    def peer_blocked_sending(self) -> bool | None:
        """Whether the peer's socket holds bytes it cannot send until we read (our window is shut, nothing in
        flight): its program's send() blocks, or returns EAGAIN, until we read. None where the kernel does not
        say (no sock_diag, or Linux < 5.4)."""
        if not sockdiag.available():
            return None
        progress = self.observer.progress(self.peer, self.local)
        if progress is None or progress.peer_window is None:
            return None
        return progress.window_shut

    def fill(self, deadline: float, stopped_reading: Callable[[], bool], max_bytes: int,
             chunk: int = FILL_CHUNK) -> tuple[int, bool]:
        """Send without reading until the peer's program stops reading for good, with a backlog of at least
        FILL_BACKLOG bytes (or a full receive window) in its socket. Returns (bytes sent, whether it stopped), or
        after ``max_bytes`` (a program that buffers what it cannot send keeps reading).

        It has stopped when its socket holds bytes it cannot send (our window is shut, nothing in flight) and
        ``stopped_reading()`` (all its threads wait) while our bytes wait in its socket; and for good when one more
        piece from us changes nothing. (Each segment that reaches a socket whose writer is blocked lets Linux
        grow its send buffer, once, up to what its congestion window allows: a piece that wakes it up shows that
        the buffer could still grow.) Nothing but our reading can change that state, so where it stops, and that
        a FIN sent next (which always fits: every piece leaves once the previous one was acknowledged) finds it
        still sending, does not depend on timing.
        """
        block = bytes(range(33, 127)) * (chunk // 94 + 1)
        sent = last = 0
        probe_base: int | None = None  # its backlog when the last piece left while it was stopped
        while True:
            poll = Poll()
            while True:  # until the last piece is in the peer's socket, and read or left there
                unread = self.peer_unread()
                if unread is None or self.reset_by_peer():
                    return sent, False  # the peer's socket is gone
                if self.unacked() == 0 and (unread == 0 or (
                        self.peer_blocked_sending() is not False and stopped_reading())):
                    break
                if remaining(deadline) <= 0:
                    raise CheckFailed(
                        f"sent {sent} bytes without reading any echo; the submission neither read them nor stopped "
                        f"({unread} bytes unread in its socket) before the deadline"
                    )
                poll.pause(deadline)
            if unread:
                room = (self.peer_window() or 0) - 2 * SMALL_MSS
                unchanged = probe_base is not None and unread == probe_base + last
                if (unchanged and unread >= FILL_BACKLOG) or room <= 0 or sent >= max_bytes:
                    self.transcript.note(f"sent {sent} bytes without reading: the peer stopped reading, {unread} "
                                         "bytes left in its socket", self.label)
                    return sent, True
                probe_base, size = unread, min(chunk, room)
            else:
                probe_base = None
                if sent >= max_bytes:
                    self.transcript.note(f"sent {sent} bytes without reading: the peer read them all", self.label)
                    return sent, False
                size = min(chunk, max_bytes - sent)
            try:
                last = self.sock.send(block[:size])
            except BlockingIOError:
                last = 0
            except OSError as exc:
                if exc.errno in PEER_GONE_ERRNOS:
                    return sent, False
                raise HarnessError(f"send failed: {exc}") from exc
            self.sent_bytes += last
            sent += last

    # -- receiving -------------------------------------------------------------------------------------
    def _recv_some(self, deadline: float) -> bool:
        """Receive what is available into the buffer; False when the stream has ended or time is up."""
        if self.ended is not None:
            return False
        wait = remaining(deadline)
        readable, _, _ = select.select([self.sock], [], [], min(wait, 0.25))
        if not readable:
            return remaining(deadline) > 0
        try:
            data = self.sock.recv(RECV_SIZE)
        except BlockingIOError:
            return True
        except ConnectionResetError:
            self.ended = RST
            self.transcript.note("connection reset by the peer (RST)", self.label)
            return False
        except OSError as exc:
            raise HarnessError(f"recv failed: {exc}") from exc
        if not data:
            if self.reset_seen:
                self.ended = RST
                self.transcript.note("connection reset by the peer (RST)", self.label)
                return False
            self.ended = FIN
            self.transcript.note("peer closed the connection (FIN)", self.label)
            return False
        self.transcript.received(self.label, data)
        self.buffer += data
        return True

    def read_until(
        self, done: Callable[[bytes], bool] | None, deadline: float, max_bytes: int = 64 * 1024 * 1024
    ) -> ReadResult:
        """Read into the buffer until ``done(buffer)``, end of stream, or the deadline (``done=None``: EOF)."""
        t0 = time.monotonic()
        while True:
            if done is not None and done(self.buffer):
                return ReadResult(self.buffer, COMPLETE, time.monotonic() - t0)
            if len(self.buffer) > max_bytes:
                return ReadResult(self.buffer, COMPLETE, time.monotonic() - t0)
            if self.ended is not None:
                return ReadResult(self.buffer, self.ended, time.monotonic() - t0)
            if remaining(deadline) <= 0:
                return ReadResult(self.buffer, TIMEOUT, time.monotonic() - t0)
            self._recv_some(deadline)

    def read_exactly(self, n: int, deadline: float) -> ReadResult:
        return self.read_until(lambda b: len(b) >= n, deadline)

    def take(self, n: int | None = None) -> bytes:
        """Consume ``n`` bytes (all when None) from the front of the buffer."""
        if n is None:
            data, self.buffer = self.buffer, b""
        else:
            data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    # -- closing ---------------------------------------------------------------------------------------
    def shutdown_write(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            if exc.errno not in PEER_GONE_ERRNOS:
                raise HarnessError(f"shutdown failed: {exc}") from exc
        self.transcript.note("half-closed: shut down our writing side (FIN sent)", self.label)

    def reset(self, deadline: float) -> None:
        """Close abruptly: SO_LINGER with a zero timeout makes close() send RST.

        First wait (until the deadline) for the peer's kernel to acknowledge what we sent, FIN included, so
        the RST never overtakes our own data: which error the submission then sees (EPIPE after a FIN,
        ECONNRESET without) does not depend on timing.
        """
        if not self.closed and not self.wait_acked(deadline):
            self.transcript.note(f"{self.unacked()} bytes still unacknowledged when resetting", self.label)
        if not self.closed:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close(note="closed abruptly with RST (SO_LINGER 0)")

    def close(self, note: str = "closed the connection") -> None:
        if not self.closed:
            self.closed = True
            try:
                found = self.peer_socket()
            except (OSError, ValueError):
                found = None
            self.peer_inode_at_close = 0 if found is None else found[1]
            self.sock.close()
            self.transcript.note(note, self.label)


class Listener:
    """A listening TCP socket of the harness, for client submissions to connect to."""

    def __init__(self, host: str, label: str, transcript: Transcript, observer: Observer = LOCAL_OBSERVER) -> None:
        self.label = label
        self.transcript = transcript
        self.observer = observer
        self.sock = socket.socket(family_of(host), socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((host, 0))
            self.sock.listen(16)
        except OSError as exc:
            self.sock.close()
            raise HarnessError(f"cannot listen on {host}: {exc}") from exc
        self.sock.setblocking(False)
        self.host = host
        self.port = int(self.sock.getsockname()[1])
        transcript.port(label, self.port)

    def accept(self, deadline: float, gave_up: Callable[[], str | None]) -> TcpConn | None:
        """Wait for a connection; None on timeout. ``gave_up`` returns a reason to stop early (it died)."""
        while True:
            readable, _, _ = select.select([self.sock], [], [], min(0.02, remaining(deadline)))
            if readable:
                try:
                    sock, _ = self.sock.accept()
                except BlockingIOError:
                    continue
                conn = TcpConn(sock, self.label, self.transcript, self.observer)
                self.transcript.note(f"accepted a connection from port {conn.peer[1]}", self.label)
                return conn
            reason = gave_up()
            if reason is not None:
                raise CheckFailed(f"the program never connected: it {reason}")
            if remaining(deadline) <= 0:
                return None

    def close(self) -> None:
        self.sock.close()


class UdpSock:
    """A UDP socket of the harness."""

    def __init__(self, host: str, label: str, transcript: Transcript) -> None:
        self.label = label
        self.transcript = transcript
        self.sock = socket.socket(family_of(host), socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.setblocking(False)
        self.local = _addr(self.sock.getsockname())

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            self.sock.sendto(data, addr)
        except OSError as exc:
            raise HarnessError(f"sendto {addr} failed: {exc}") from exc
        self.transcript.sent(self.label, data)

    def recvfrom(
        self, deadline: float, gave_up: Callable[[], bool] | None = None
    ) -> tuple[bytes, tuple[str, int]] | None:
        """The next datagram and its source; None when the deadline passes or ``gave_up()`` (it died) first."""
        while True:
            readable, _, _ = select.select([self.sock], [], [], min(0.05, remaining(deadline)))
            if readable:
                try:
                    data, src = self.sock.recvfrom(65536)
                except BlockingIOError:
                    continue
                except ConnectionRefusedError:
                    self.transcript.note("ICMP port unreachable: nothing listens on that UDP port", self.label)
                    continue
                self.transcript.received(self.label, data)
                return data, _addr(src)
            if remaining(deadline) <= 0 or (gave_up is not None and gave_up()):
                return None

    def close(self) -> None:
        self.sock.close()
