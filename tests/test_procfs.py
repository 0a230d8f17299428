"""Tests for grader.driver.procfs: hand-written /proc samples and live loopback sockets."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

from grader.driver.procfs import (
    ProcStat,
    SockEntry,
    TcpState,
    byteswap16,
    find_tcp,
    listening_ports,
    open_fd_count,
    owned_sockets,
    parse_net_table,
    parse_stat,
    process_tree,
    read_sockets,
    socket_inodes,
)

T = TypeVar("T")

DEADLINE = 10.0  # seconds allowed for any kernel state / child process to settle


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def poll(probe: Callable[[], T | None], what: str, timeout: float = DEADLINE) -> T:
    """Call ``probe`` until it returns something other than None/False; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result is not None and result is not False:
            return result
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def nonexistent_pid() -> int:
    with open("/proc/sys/kernel/pid_max") as fh:
        return int(fh.read()) + 1


def require_ipv6_loopback() -> None:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError as exc:
        pytest.fail(f"IPv6 loopback ::1 is unavailable on this machine ({exc}); these tests need it")


class Child:
    """A python -c child with piped stdin/stdout; stdout is read line by line with deadlines."""

    def __init__(self, code: str, *args: str, new_session: bool = False) -> None:
        self.new_session = new_session
        self.proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
            start_new_session=new_session,
        )
        self._buf = b""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def readline(self, timeout: float = DEADLINE) -> str:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"child {self.pid} printed no line within {timeout}s")
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                pytest.fail(f"child {self.pid} closed stdout (exit code {self.proc.poll()})")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode()

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()

    def stop(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()  # children exit on stdin EOF
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        if self.new_session:
            # the session leader's pid is also the process group of any orphans it left
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def spawn() -> Iterator[Callable[..., Child]]:
    children: list[Child] = []

    def _spawn(code: str, *args: str, new_session: bool = False) -> Child:
        child = Child(code, *args, new_session=new_session)
        children.append(child)
        return child

    yield _spawn
    for child in children:
        child.stop()


# A child that binds on argv[1] (address) with argv[2] in {"tcp", "udp"}, prints the port,
# then blocks until stdin reaches EOF.
LISTENER = """
    import socket, sys
    host, kind = sys.argv[1], sys.argv[2]
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM)
    s.bind((host, 0))
    if kind == "tcp":
        s.listen()
    print(s.getsockname()[1], flush=True)
    sys.stdin.read()
"""

# Spawns a LISTENER grandchild (sharing our stdin) and prints "<grandchild pid> <port>".
SPAWNS_GRANDCHILD = """
    import subprocess, sys
    gc = subprocess.Popen([sys.executable, "-c", sys.argv[1], "127.0.0.1", "tcp"],
                          stdout=subprocess.PIPE, text=True)
    port = gc.stdout.readline().strip()
    print(gc.pid, port, flush=True)
    sys.stdin.read()
    gc.wait()
"""

# Double-forks a listening grandchild, then exits: only the session id links it to us.
DOUBLE_FORKS = """
    import os, socket, sys
    if os.fork() == 0:
        if os.fork() == 0:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            s.listen()
            sys.stdout.write(f"{os.getpid()} {s.getsockname()[1]}\\n")
            sys.stdout.flush()
            sys.stdin.read()
        os._exit(0)
    os.wait()
"""

# Accepts every connection and keeps it open forever (never closes).
HOARDER = """
    import socket, sys, threading
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    kept = []
    def loop():
        while True:
            conn, _ = s.accept()
            kept.append(conn)
    threading.Thread(target=loop, daemon=True).start()
    print(s.getsockname()[1], flush=True)
    sys.stdin.read()
"""

# Opens one socket per stdin line and prints its inode.
FD_OPENER = """
    import os, socket, sys
    socks = []
    print("ready", flush=True)
    for line in sys.stdin:
        s = socket.socket()
        socks.append(s)
        print(os.fstat(s.fileno()).st_ino, flush=True)
"""


def ppid_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as fh:
        return parse_stat(fh.read()).ppid


# --------------------------------------------------------------------------
# pure parsing
# --------------------------------------------------------------------------

TCP_SAMPLE = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000003 00:00000000 00000000  1000        0 12345 1 0000000000000000 100 0 0 10 0
   1: 0302010A:1F90 0100007F:C350 01 0000000A:00000014 00:00000000 00000000  1000        0 12346 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:C350 0100007F:1F90 06 00000000:00000000 03:00001770 00000000     0        0 0 3 0000000000000000
   3: 0100007F:C351 0100007F:1F90 08 0000FFFF:00010000 00:00000000 00000000  1000        0 12347 1 0000000000000000 20 4 30 10 -1
"""  # noqa: E501

TCP6_SAMPLE = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2001 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000005 00:00000000 00000000  1000        0 2002 1 0000000000000000 100 0 0 10 0
   2: 0000000000000000FFFF00000100007F:1F90 0000000000000000FFFF00000100007F:D431 01 00000000:00000000 00:00000000 00000000  1000        0 2003 1 0000000000000000 20 4 30 10 -1
   3: B80D0120000000000000000001000000:0050 B80D01200000000000000000020000FE:01BB 08 00000001:00000000 00:00000000 00000000  1000        0 2004 1 0000000000000000 20 4 30 10 -1
"""  # noqa: E501

UDP_SAMPLE = """\
   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  221: 00000000:0044 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 3001 2 0000000000000000 0
  300: 0100007F:0035 0100007F:D431 01 00000000:00000200 00:00000000 00000000   101        0 3002 2 0000000000000000 5
"""


def test_parse_tcp_sample() -> None:
    assert parse_net_table(TCP_SAMPLE, "tcp", byteorder="little") == [
        SockEntry("tcp", ("127.0.0.1", 8080), ("0.0.0.0", 0), TcpState.LISTEN, 0, 3, 12345),
        SockEntry("tcp", ("10.1.2.3", 8080), ("127.0.0.1", 50000), TcpState.ESTABLISHED, 10, 20, 12346),
        SockEntry("tcp", ("127.0.0.1", 50000), ("127.0.0.1", 8080), TcpState.TIME_WAIT, 0, 0, 0),
        SockEntry("tcp", ("127.0.0.1", 50001), ("127.0.0.1", 8080), TcpState.CLOSE_WAIT, 65535, 65536, 12347),
    ]


def test_parse_tcp_states_are_tcpstate_members() -> None:
    states = [e.state for e in parse_net_table(TCP_SAMPLE, "tcp", byteorder="little")]
    assert all(isinstance(s, TcpState) for s in states)
    assert states[0] is TcpState.LISTEN


def test_parse_tcp6_sample() -> None:
    assert parse_net_table(TCP6_SAMPLE, "tcp6", byteorder="little") == [
        SockEntry("tcp6", ("::", 22), ("::", 0), TcpState.LISTEN, 0, 0, 2001),
        SockEntry("tcp6", ("::1", 8080), ("::", 0), TcpState.LISTEN, 0, 5, 2002),
        SockEntry(
            "tcp6",
            ("::ffff:127.0.0.1", 8080),
            ("::ffff:127.0.0.1", 54321),
            TcpState.ESTABLISHED,
            0,
            0,
            2003,
        ),
        SockEntry("tcp6", ("2001:db8::1", 80), ("2001:db8::fe00:2", 443), TcpState.CLOSE_WAIT, 1, 0, 2004),
    ]


def test_parse_udp_sample() -> None:
    assert parse_net_table(UDP_SAMPLE, "udp", byteorder="little") == [
        SockEntry("udp", ("0.0.0.0", 68), ("0.0.0.0", 0), 7, 0, 0, 3001),
        SockEntry("udp", ("127.0.0.1", 53), ("127.0.0.1", 54321), 1, 0, 512, 3002),
    ]


def test_parse_big_endian_host() -> None:
    line = "   0: 7F000001:0050 0A010203:D431 01 00000000:00000000 00:00000000 00000000 0 0 7 1 0\n"
    v6 = "   0: 00000000000000000000FFFF7F000001:0050 00000000000000000000000000000001:0051 0A 00000000:00000000 00:00000000 00000000 0 0 8 1 0\n"  # noqa: E501
    assert parse_net_table(line, "tcp", byteorder="big") == [
        SockEntry("tcp", ("127.0.0.1", 80), ("10.1.2.3", 54321), TcpState.ESTABLISHED, 0, 0, 7)
    ]
    assert parse_net_table(v6, "tcp6", byteorder="big") == [
        SockEntry("tcp6", ("::ffff:127.0.0.1", 80), ("::1", 81), TcpState.LISTEN, 0, 0, 8)
    ]


def test_parse_skips_blank_and_malformed_lines() -> None:
    text = TCP_SAMPLE.splitlines()[0] + "\n\n   9: 0100007F:1F90 000\ngarbage\n" + TCP_SAMPLE.splitlines()[1]
    assert [e.inode for e in parse_net_table(text, "tcp", byteorder="little")] == [12345]
    assert parse_net_table("", "tcp") == []


def test_parse_rejects_unknown_proto() -> None:
    with pytest.raises(ValueError):
        parse_net_table(TCP_SAMPLE, "sctp")


def test_parse_stat_with_awkward_comm() -> None:
    text = "4242 (a) (b c) S 17 4242 4240 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 99 1000 10\n"
    assert parse_stat(text) == ProcStat(pid=4242, comm="a) (b c", state="S", ppid=17, pgrp=4242, session=4240)
    with pytest.raises(ValueError):
        parse_stat("garbage")


def test_byteswap16() -> None:
    assert byteswap16(8080) == 36895
    assert byteswap16(36895) == 8080
    assert byteswap16(0x1234) == 0x3412
    assert byteswap16(0x00FF) == 0xFF00
    assert byteswap16(0) == 0
    assert byteswap16(0xFFFF) == 0xFFFF
    with pytest.raises(ValueError):
        byteswap16(0x10000)
    with pytest.raises(ValueError):
        byteswap16(-1)


# --------------------------------------------------------------------------
# live sockets: the test process itself
# --------------------------------------------------------------------------


def test_own_listener_in_read_sockets() -> None:
    with socket.create_server(("127.0.0.1", 0)) as srv:
        port = srv.getsockname()[1]
        inode = os.fstat(srv.fileno()).st_ino

        for entries in (read_sockets(), read_sockets(("tcp",), pid=os.getpid())):
            match = [e for e in entries if e.local == ("127.0.0.1", port)]
            assert len(match) == 1, match
            assert match[0].proto == "tcp"
            assert match[0].state == TcpState.LISTEN
            assert match[0].remote == ("0.0.0.0", 0)
            assert match[0].inode == inode

        assert socket_inodes([os.getpid()])[inode] == [os.getpid()]
        assert inode in {e.inode for e in listening_ports(os.getpid())}


def test_listen_backlog_shows_as_rx_queue() -> None:
    with socket.create_server(("127.0.0.1", 0), backlog=8) as srv:
        addr = srv.getsockname()
        clients = [socket.create_connection(addr, timeout=DEADLINE) for _ in range(2)]
        try:
            entry = poll(
                lambda: next(
                    (
                        e
                        for e in read_sockets(("tcp",))
                        if e.local == addr and e.state == TcpState.LISTEN and e.rx_queue == 2
                    ),
                    None,
                ),
                "accept backlog of 2",
            )
            assert entry.inode == os.fstat(srv.fileno()).st_ino
        finally:
            for c in clients:
                c.close()


def test_read_sockets_of_vanished_process_is_empty() -> None:
    assert read_sockets(pid=nonexistent_pid()) == []
    assert process_tree(nonexistent_pid()) == []
    assert owned_sockets(nonexistent_pid()) == []
    assert listening_ports(nonexistent_pid()) == []
    assert open_fd_count([nonexistent_pid()]) == 0
    assert socket_inodes([nonexistent_pid()]) == {}


def test_find_tcp_tracks_unread_bytes() -> None:
    with socket.create_server(("127.0.0.1", 0)) as srv:
        srv_addr = srv.getsockname()
        with socket.create_connection(srv_addr, timeout=DEADLINE) as client:
            conn, _ = srv.accept()
            with conn:
                conn.settimeout(DEADLINE)
                cli_addr = client.getsockname()
                client.sendall(b"0123456789")

                def server_side(rx: int) -> SockEntry | None:
                    e = find_tcp(conn.getsockname(), cli_addr)
                    return e if e is not None and e.rx_queue == rx else None

                entry = poll(lambda: server_side(10), "10 unread bytes in the server's receive queue")
                assert entry.proto == "tcp"
                assert entry.local == srv_addr
                assert entry.remote == cli_addr
                assert entry.state == TcpState.ESTABLISHED
                assert entry.inode == os.fstat(conn.fileno()).st_ino

                got = b""
                for _ in range(10):  # at most one byte per recv in the worst case
                    got += conn.recv(10 - len(got))
                    if len(got) == 10:
                        break
                assert got == b"0123456789"
                poll(lambda: server_side(0), "empty receive queue after reading")

                client_side = find_tcp(cli_addr, srv_addr)
                assert client_side is not None
                assert client_side.inode == os.fstat(client.fileno()).st_ino
                assert client_side.state == TcpState.ESTABLISHED

    assert find_tcp(("127.0.0.1", 1), ("127.0.0.1", 2)) is None


def test_find_tcp_matches_v4_mapped_in_tcp6() -> None:
    require_ipv6_loopback()
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as srv:
        srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        srv.bind(("::ffff:127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as client:
            conn, _ = srv.accept()
            with conn:
                cli_addr = client.getsockname()
                entry = find_tcp(("127.0.0.1", port), cli_addr)
                assert entry is not None
                assert entry.proto == "tcp6"
                assert entry.local == ("::ffff:127.0.0.1", port)
                assert entry.remote == ("::ffff:" + cli_addr[0], cli_addr[1])
                assert entry.inode == os.fstat(conn.fileno()).st_ino
                assert find_tcp(("::ffff:127.0.0.1", port), cli_addr) == entry

                # the IPv4 client side lives in the plain tcp table
                client_side = find_tcp(cli_addr, ("::ffff:127.0.0.1", port))
                assert client_side is not None
                assert client_side.proto == "tcp"


def test_own_ipv6_listener() -> None:
    require_ipv6_loopback()
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as srv:
        srv.bind(("::1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        match = [e for e in read_sockets(("tcp6",)) if e.local == ("::1", port)]
        assert len(match) == 1, match
        assert match[0].state == TcpState.LISTEN
        assert match[0].remote == ("::", 0)
        assert match[0].inode == os.fstat(srv.fileno()).st_ino


# --------------------------------------------------------------------------
# live sockets: child processes
# --------------------------------------------------------------------------


def test_child_listener_found(spawn: Callable[..., Child]) -> None:
    child = spawn(LISTENER, "127.0.0.1", "tcp")
    port = int(child.readline())
    entries = listening_ports(child.pid)
    assert [(e.proto, e.local, e.state) for e in entries] == [("tcp", ("127.0.0.1", port), TcpState.LISTEN)]
    assert listening_ports(child.pid, "udp") == []
    assert process_tree(child.pid) == [child.pid]
    assert child.pid in process_tree(os.getpid())
    # our own listeners are not attributed to the child
    with socket.create_server(("127.0.0.1", 0)) as srv:
        assert srv.getsockname()[1] not in {e.local[1] for e in listening_ports(child.pid)}


def test_child_udp_sockets(spawn: Callable[..., Child]) -> None:
    require_ipv6_loopback()
    v4 = spawn(LISTENER, "127.0.0.1", "udp")
    v6 = spawn(LISTENER, "::1", "udp")
    port4, port6 = int(v4.readline()), int(v6.readline())
    assert [(e.proto, e.local, e.state) for e in listening_ports(v4.pid, "udp")] == [
        ("udp", ("127.0.0.1", port4), 7)
    ]
    assert [(e.proto, e.local, e.state) for e in listening_ports(v6.pid, "udp")] == [
        ("udp6", ("::1", port6), 7)
    ]
    assert listening_ports(v4.pid, "tcp") == []
    with pytest.raises(ValueError):
        listening_ports(v4.pid, "sctp")


def test_child_ipv6_listener_found(spawn: Callable[..., Child]) -> None:
    require_ipv6_loopback()
    child = spawn(LISTENER, "::1", "tcp")
    port = int(child.readline())
    entries = listening_ports(child.pid)
    assert [(e.proto, e.local, e.remote, e.state) for e in entries] == [
        ("tcp6", ("::1", port), ("::", 0), TcpState.LISTEN)
    ]


def test_grandchild_found_via_process_tree(spawn: Callable[..., Child]) -> None:
    child = spawn(SPAWNS_GRANDCHILD, textwrap.dedent(LISTENER), new_session=True)
    gpid_text, port_text = child.readline().split()
    gpid, port = int(gpid_text), int(port_text)
    assert ppid_of(gpid) == child.pid
    assert process_tree(child.pid) == sorted([child.pid, gpid])
    entries = listening_ports(child.pid)
    assert [(e.local, e.state) for e in entries] == [(("127.0.0.1", port), TcpState.LISTEN)]
    holders = socket_inodes(process_tree(child.pid))
    assert holders[entries[0].inode] == [gpid]


def test_double_forked_grandchild_found_via_session(spawn: Callable[..., Child]) -> None:
    child = spawn(DOUBLE_FORKS, new_session=True)
    gpid_text, port_text = child.readline().split()
    gpid, port = int(gpid_text), int(port_text)
    assert child.proc.wait(timeout=DEADLINE) == 0  # the process we started is gone
    # the grandchild was reparented away: only its session id ties it to child.pid
    assert ppid_of(gpid) != child.pid
    assert process_tree(child.pid) == [gpid]
    entries = listening_ports(child.pid)
    assert [(e.local, e.state) for e in entries] == [(("127.0.0.1", port), TcpState.LISTEN)]


def test_close_wait_connections_counted(spawn: Callable[..., Child]) -> None:
    child = spawn(HOARDER)
    port = int(child.readline())
    client_ports = set()
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as c:
            client_ports.add(c.getsockname()[1])

    def close_wait() -> list[SockEntry] | None:
        found = [e for e in owned_sockets(child.pid) if e.state == TcpState.CLOSE_WAIT]
        return found if len(found) == 3 else None

    entries = poll(close_wait, "3 CLOSE_WAIT sockets owned by the child")
    assert {e.remote for e in entries} == {("127.0.0.1", p) for p in client_ports}
    assert all(e.local == ("127.0.0.1", port) and e.inode != 0 for e in entries)
    assert [e.state for e in owned_sockets(child.pid) if e.local == ("127.0.0.1", port)].count(
        TcpState.LISTEN
    ) == 1


def test_open_fd_count_grows(spawn: Callable[..., Child]) -> None:
    child = spawn(FD_OPENER)
    assert child.readline() == "ready"
    baseline = open_fd_count([child.pid])
    assert baseline >= 3  # stdin, stdout, stderr at least
    inodes = []
    for n in range(1, 4):
        child.send("open\n")
        inodes.append(int(child.readline()))
        assert open_fd_count([child.pid]) == baseline + n
    assert open_fd_count([child.pid, child.pid]) == baseline + 3
    held = socket_inodes([child.pid])
    for inode in inodes:
        assert held[inode] == [child.pid]
