"""Tests for grader.driver.sockdiag against real loopback TCP connections."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

from grader.driver import sockdiag
from grader.driver.sockdiag import SockDiagError, TcpProgress, available, tcp_progress

T = TypeVar("T")

DEADLINE = 10.0  # seconds allowed for kernel state to settle

ESTABLISHED, FIN_WAIT1, FIN_WAIT2, TIME_WAIT, CLOSE_WAIT, LISTEN = 1, 4, 5, 6, 8, 10

Endpoint = tuple[str, int]


def poll(probe: Callable[[], T | None], what: str, timeout: float = DEADLINE) -> T:
    """Call ``probe`` until it returns something other than None/False; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result is not None and result is not False:
            return result
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.001)


def endpoint(addr: tuple[object, ...]) -> Endpoint:
    """(host, port) of a getsockname()/getpeername() result (IPv6 ones have four fields)."""
    host, port = addr[0], addr[1]
    assert isinstance(host, str) and isinstance(port, int)
    return host, port


class Conn:
    """A listener, a client connected to it and the accepted server-side socket."""

    def __init__(self, family: socket.AddressFamily, host: str, connect_host: str | None = None) -> None:
        self.listener = socket.socket(family, socket.SOCK_STREAM)
        if family == socket.AF_INET6 and connect_host is not None:
            self.listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        self.listener.bind((host, 0))
        self.listener.listen(4)
        port = self.listener.getsockname()[1]
        self.client = socket.create_connection((connect_host or host, port), timeout=DEADLINE)
        self.listener.settimeout(DEADLINE)
        self.server, _ = self.listener.accept()
        self.server.settimeout(DEADLINE)
        self.server_local = endpoint(self.server.getsockname())
        self.server_remote = endpoint(self.server.getpeername())
        self.client_local = endpoint(self.client.getsockname())
        self.client_remote = endpoint(self.client.getpeername())

    def server_progress(self) -> TcpProgress | None:
        return tcp_progress(self.server_local, self.server_remote)

    def client_progress(self) -> TcpProgress | None:
        return tcp_progress(self.client_local, self.client_remote)

    def close(self) -> None:
        for s in (self.client, self.server, self.listener):
            s.close()


def require_ipv6_loopback() -> None:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError as exc:
        pytest.fail(f"IPv6 loopback ::1 is unavailable on this machine ({exc}); these tests need it")


@pytest.fixture(params=["ipv4", "ipv6"])
def conn(request: pytest.FixtureRequest) -> Iterator[Conn]:
    if request.param == "ipv6":
        require_ipv6_loopback()
        c = Conn(socket.AF_INET6, "::1")
    else:
        c = Conn(socket.AF_INET, "127.0.0.1")
    try:
        yield c
    finally:
        c.close()


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    for _ in range(n):  # bounded: every successful recv returns at least one byte
        if len(data) == n:
            break
        chunk = sock.recv(n - len(data))
        assert chunk, "unexpected EOF"
        data += chunk
    assert len(data) == n
    return data


def unused_port(family: socket.AddressFamily, host: str) -> int:
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


# --------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------


def test_available() -> None:
    assert available() is True
    assert available() is True  # cached


def test_received_then_read(conn: Conn) -> None:
    """bytes_received counts what arrived; rqueue drops to 0 once the application has read it."""
    first = conn.server_progress()
    assert first is not None
    assert first.state == ESTABLISHED
    assert first.bytes_received == 0
    assert first.rqueue == 0
    assert first.inode == os.fstat(conn.server.fileno()).st_ino

    conn.client.sendall(b"0123456789")
    got = poll(
        lambda: p if (p := conn.server_progress()) is not None and p.bytes_received == 10 else None,
        "server side to receive 10 bytes",
    )
    assert got.rqueue == 10
    assert got.state == ESTABLISHED

    assert recv_exactly(conn.server, 10) == b"0123456789"
    after = poll(
        lambda: p if (p := conn.server_progress()) is not None and p.rqueue == 0 else None,
        "server side receive queue to drain",
    )
    assert after.bytes_received == 10
    assert after.state == ESTABLISHED

    # the sending side: nothing received, everything it wrote eventually acknowledged
    # (tcpi_bytes_acked of the connecting side also counts the SYN, hence >= 10)
    client = poll(
        lambda: p if (p := conn.client_progress()) is not None and p.wqueue == 0 else None,
        "client side write queue to be acknowledged",
    )
    assert client.bytes_received == 0
    assert client.bytes_acked >= 10
    assert client.inode == os.fstat(conn.client.fileno()).st_ino


def test_partial_read_keeps_rest_queued(conn: Conn) -> None:
    conn.client.sendall(b"x" * 100)
    poll(
        lambda: (p := conn.server_progress()) is not None and p.bytes_received == 100,
        "server side to receive 100 bytes",
    )
    recv_exactly(conn.server, 30)
    progress = conn.server_progress()
    assert progress is not None
    assert (progress.bytes_received, progress.rqueue) == (100, 70)


def test_fin_counts_as_one_byte(conn: Conn) -> None:
    """A received FIN adds 1 to bytes_received, and to rqueue until a read consumes it."""
    conn.client.sendall(b"abc")
    conn.client.shutdown(socket.SHUT_WR)
    got = poll(
        lambda: p if (p := conn.server_progress()) is not None and p.state == CLOSE_WAIT else None,
        "server side to see the FIN",
    )
    assert (got.bytes_received, got.rqueue) == (4, 4)
    assert recv_exactly(conn.server, 3) == b"abc"
    progress = conn.server_progress()
    assert progress is not None
    # a read that takes the last data byte of the FIN-carrying segment consumes the FIN as well
    assert progress.bytes_received == 4
    assert progress.rqueue in (0, 1)
    assert conn.server.recv(1) == b""
    progress = conn.server_progress()
    assert progress is not None
    assert (progress.bytes_received, progress.rqueue) == (4, 0)


def test_fin_after_data_was_read(conn: Conn) -> None:
    """A FIN arriving after everything was read leaves rqueue at 1 until the EOF is read."""
    conn.client.sendall(b"abc")
    poll(lambda: (p := conn.server_progress()) is not None and p.bytes_received == 3, "3 bytes received")
    assert recv_exactly(conn.server, 3) == b"abc"
    conn.client.shutdown(socket.SHUT_WR)
    got = poll(
        lambda: p if (p := conn.server_progress()) is not None and p.state == CLOSE_WAIT else None,
        "server side to see the FIN",
    )
    assert (got.bytes_received, got.rqueue) == (4, 1)
    assert conn.server.recv(1) == b""
    progress = conn.server_progress()
    assert progress is not None
    assert (progress.bytes_received, progress.rqueue) == (4, 0)


def test_nonexistent_socket_is_none() -> None:
    a = unused_port(socket.AF_INET, "127.0.0.1")
    b = unused_port(socket.AF_INET, "127.0.0.1")
    assert tcp_progress(("127.0.0.1", a), ("127.0.0.1", b)) is None
    require_ipv6_loopback()
    c = unused_port(socket.AF_INET6, "::1")
    d = unused_port(socket.AF_INET6, "::1")
    assert tcp_progress(("::1", c), ("::1", d)) is None


def test_unmatched_pair_on_listening_port_is_none(conn: Conn) -> None:
    """The kernel answers with the listener for an unknown pair on its port; that must not be reported."""
    stranger = unused_port(socket.AF_INET6 if ":" in conn.server_local[0] else socket.AF_INET, conn.server_local[0])
    assert tcp_progress(conn.server_local, (conn.server_remote[0], stranger)) is None


def test_listening_socket(conn: Conn) -> None:
    host, port = endpoint(conn.listener.getsockname())
    unspecified = "::" if ":" in host else "0.0.0.0"
    progress = tcp_progress((host, port), (unspecified, 0))
    assert progress is not None
    assert progress.state == LISTEN
    assert progress.inode == os.fstat(conn.listener.fileno()).st_ino


def test_closed_connection(conn: Conn) -> None:
    """After the server side closes and then the client closes:

    * the server side (the active closer) is left as a TIME_WAIT entry (state 6, inode 0, no tcp_info so
      bytes_received == bytes_acked == 0, rqueue 0) for the TIME_WAIT period; None is accepted too;
    * the client side (the passive closer: CLOSE_WAIT -> LAST_ACK -> gone) becomes None.
    """
    conn.client.sendall(b"hello")
    recv_exactly(conn.server, 5)
    conn.server.close()
    poll(
        lambda: (p := conn.client_progress()) is not None and p.state == CLOSE_WAIT,
        "client side to reach CLOSE_WAIT",
    )
    # the server side, now orphaned, is in FIN_WAIT1 until its FIN is acknowledged, then a FIN_WAIT2
    # timewait-style entry without tcp_info
    interim = conn.server_progress()
    assert interim is None or interim.state in (FIN_WAIT1, FIN_WAIT2, TIME_WAIT)
    conn.client.close()

    poll(lambda: conn.client_progress() is None, "client side to disappear")

    def server_settled() -> TcpProgress | bool:
        p = conn.server_progress()
        if p is None:
            return True
        return p if p.state == TIME_WAIT else False

    settled = poll(server_settled, "server side to reach TIME_WAIT or vanish")
    if isinstance(settled, TcpProgress):
        assert (settled.rqueue, settled.inode, settled.bytes_received, settled.bytes_acked) == (0, 0, 0, 0)


def test_v4_mapped_dual_stack_socket() -> None:
    """An IPv6 dual-stack socket connected over IPv4 is found with plain IPv4 text and with ::ffff: text."""
    require_ipv6_loopback()
    c = Conn(socket.AF_INET6, "::", connect_host="127.0.0.1")
    try:
        assert c.server_local[0] == "::ffff:127.0.0.1"  # the accepted socket is AF_INET6
        c.client.sendall(b"12345")
        poll(lambda: (p := c.server_progress()) is not None and p.bytes_received == 5, "5 bytes received")
        inode = os.fstat(c.server.fileno()).st_ino
        for local, remote in [
            (c.server_local, c.server_remote),
            (("127.0.0.1", c.server_local[1]), ("127.0.0.1", c.server_remote[1])),
        ]:
            progress = tcp_progress(local, remote)
            assert progress is not None
            assert (progress.inode, progress.bytes_received, progress.rqueue) == (inode, 5, 5)
    finally:
        c.close()


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        tcp_progress(("127.0.0.1", 1), ("::1", 2))
    with pytest.raises(ValueError):
        tcp_progress(("127.0.0.1", 70000), ("127.0.0.1", 2))
    with pytest.raises(ValueError):
        tcp_progress(("localhost", 1), ("127.0.0.1", 2))


def test_short_tcp_info_is_an_error() -> None:
    """A kernel older than 4.1 (tcp_info without tcpi_bytes_received) is reported, not misread."""
    msg = struct.pack("=BBBB2s2s16s16sIIIIIIII", 2, 1, 0, 0, b"\0\1", b"\0\2", b"\0" * 16, b"\0" * 16, *[0] * 8)
    info = b"\0" * 104
    attr = struct.pack("=HH", 4 + len(info), 2) + info
    with pytest.raises(SockDiagError):
        sockdiag._parse_diag_msg(msg + attr)


def test_threads_and_fork(conn: Conn) -> None:
    conn.client.sendall(b"abcdef")
    poll(lambda: (p := conn.server_progress()) is not None and p.bytes_received == 6, "6 bytes received")
    results: list[TcpProgress | None] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(200):
            p = conn.server_progress()
            with lock:
                results.append(p)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(DEADLINE)
    assert len(results) == 800
    assert all(p is not None and p.bytes_received == 6 and p.rqueue == 6 for p in results)

    # a forked child must not share this process's netlink socket
    assert conn.server_progress() is not None
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        with contextlib.suppress(BaseException):
            p = conn.server_progress()
            code = 0 if p is not None and p.bytes_received == 6 else 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert conn.server_progress() is not None


def test_timing(conn: Conn) -> None:
    n = 1000
    start = time.perf_counter()
    for _ in range(n):
        assert conn.server_progress() is not None
    hit = time.perf_counter() - start
    a = unused_port(socket.AF_INET, "127.0.0.1")
    b = unused_port(socket.AF_INET, "127.0.0.1")
    start = time.perf_counter()
    for _ in range(n):
        assert tcp_progress(("127.0.0.1", a), ("127.0.0.1", b)) is None
    miss = time.perf_counter() - start
    print(
        f"\nsockdiag.tcp_progress: {hit / n * 1e6:.1f} us/call for an existing socket, "
        f"{miss / n * 1e6:.1f} us/call for a missing IPv4 pair (two queries)"
    )
    assert hit < 2.0
    assert miss < 2.0


def test_dump_by_state_and_port(conn: Conn) -> None:
    port = conn.server_local[1]
    listening = sockdiag.tcp_sockets((LISTEN,), port)
    assert [(r.sport, r.progress.state) for r, _ in listening] == [(port, LISTEN)]
    established = {(r.sport, r.dport) for r, _ in sockdiag.tcp_sockets((ESTABLISHED,), port)}
    assert established == {(port, conn.client_local[1]), (conn.client_local[1], port)}
    assert sockdiag.tcp_sockets((TIME_WAIT, CLOSE_WAIT), port) == []
    conn.client.shutdown(socket.SHUT_WR)
    server_side = poll(lambda: [r for r, _ in sockdiag.tcp_sockets((CLOSE_WAIT,), port)] or None,
                       "the server's socket in CLOSE_WAIT")
    assert [(r.sport, r.progress.inode != 0) for r in server_side] == [(port, True)]


def test_window_shut_when_the_peer_stops_reading(conn: Conn) -> None:
    # The client never reads: the server's socket ends up holding bytes it cannot send, nothing in flight.
    conn.server.setblocking(False)
    block = b"x" * 65536
    with contextlib.suppress(BlockingIOError):
        for _ in range(1000):  # bounded: at most 64 MB, far more than any socket buffer
            conn.server.send(block)
    progress = poll(lambda: (p := conn.server_progress()) is not None and p.window_shut and p,
                    "a shut window on the server's socket")
    assert progress.peer_window == 0 and progress.in_flight == 0 and progress.notsent > 0
    assert conn.client_progress() is not None and not conn.client_progress().window_shut  # type: ignore[union-attr]
