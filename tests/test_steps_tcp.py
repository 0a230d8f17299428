"""The TCP client steps against small real server programs: one that obeys the rule, one that breaks it."""

from __future__ import annotations

from pathlib import Path

import pytest
from progs import c_prog, py_prog, run_grade, write_spec

pytestmark = pytest.mark.usefixtures("no_leftover_processes", "direct_python")

ECHO_THREADED = "serve_threaded(echo)\n"


# -- connect -------------------------------------------------------------------------------------------------

ONE_CLIENT_THEN_DEAF = """
s = listener()
conn, _ = s.accept()
s.close()                     # the bug: stops listening after the first client
echo(conn)
while True:
    time.sleep(60)            # still running, but nobody can connect any more
"""

CONNECT_TWICE = """
- id: first
  steps:
    - connect: {}
    - send: {text: "one\\n"}
    - expect_bytes: {echo: true, timeout: 3}
- id: second
  steps:
    - connect: {timeout: 3}
    - send: {text: "two\\n"}
    - expect_bytes: {echo: true, timeout: 3}
"""


def test_connect_refused_when_the_server_stops_listening(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, CONNECT_TWICE)
    g = run_grade(spec, py_prog(tmp_path / "sub", ONE_CLIENT_THEN_DEAF))
    assert g.outcomes == {"first": "passed", "second": "failed"}, g.explain()
    assert "refused" in g.messages["second"]
    assert "nothing is listening" in g.messages["second"]


def test_connect_succeeds_for_every_client(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, CONNECT_TWICE)
    g = run_grade(spec, py_prog(tmp_path / "sub", ECHO_THREADED))
    assert g.outcomes == {"first": "passed", "second": "passed"}, g.explain()


# -- send with split points ----------------------------------------------------------------------------------

ONE_RECV = """
def handler(conn):
    with conn:
        data = conn.recv(4096)    # the bug: one recv() is assumed to return the whole line
        conn.sendall(data)

serve_iterative(handler)
"""

LOOPING = """
def handler(conn):
    with conn:
        conn.sendall(recv_line(conn))

serve_iterative(handler)
"""

SPLIT = """
- id: fragmented
  steps:
    - connect: {}
    - send: {text: "abcdefghijklmnopqrstuvwxyz\\n", split: [1, 5, middle, end-1], timeout: 3}
    - expect_bytes: {echo: true, timeout: 3}
"""


def test_split_send_fails_a_single_recv_server_every_time(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, SPLIT)
    sub = py_prog(tmp_path / "sub", ONE_RECV)
    for seed in range(1, 6):
        g = run_grade(spec, sub, seed=seed)
        assert g.outcomes == {"fragmented": "failed"}, g.explain()
        msg = g.messages["fragmented"]
        assert "expected 27 bytes, got 1" in msg, msg
        assert msg.endswith("; received a"), msg


def test_split_send_passes_a_looping_server(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, SPLIT)
    g = run_grade(spec, py_prog(tmp_path / "sub", LOOPING))
    assert g.outcomes == {"fragmented": "passed"}, g.explain()


def test_every_byte_split_sends_one_byte_at_a_time(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, """
        - id: every-byte
          steps:
            - connect: {}
            - send: {text: "GET / HTTP/1.0\\r\\n\\r\\n", split: [every-byte], timeout: 3}
            - expect_bytes: {echo: true, timeout: 3}
        - id: at-inside-crlf
          steps:
            - connect: {}
            - send: {text: "Host: x\\r\\nAccept: y\\r\\n\\r\\n", split: [crlf, blank-line, {at: "Accept"},
                                                                        {inside: "Host"}], timeout: 3}
            - expect_bytes: {echo: true, timeout: 3}
        """)
    # Reads until a blank line: correct for every split.
    good = py_prog(tmp_path / "good", """
        def handler(conn):
            with conn:
                data = b""
                while not data.endswith(b"\\r\\n\\r\\n"):
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                conn.sendall(data)

        serve_iterative(handler)
        """)
    g = run_grade(spec, good)
    assert g.outcomes == {"every-byte": "passed", "at-inside-crlf": "passed"}, g.explain()
    # A server that reads one line per recv() is caught by every one of these split points.
    bad = py_prog(tmp_path / "bad", ONE_RECV)
    g = run_grade(spec, bad)
    assert g.outcomes == {"every-byte": "failed", "at-inside-crlf": "failed"}, g.explain()
    assert "expected 18 bytes, got 1" in g.messages["every-byte"]
    assert g.messages["at-inside-crlf"].startswith("expected 22 bytes, got 2: ")  # cut inside "Host"
    assert g.messages["at-inside-crlf"].endswith("; received Ho")


# -- shutdown_write and expect_bytes eof ---------------------------------------------------------------------

HALF_CLOSE = """
- id: half-close
  category: close
  steps:
    - connect: {}
    - send: {text: "last words"}
    - shutdown_write: {}
    - expect_bytes: {echo: true, eof: true, timeout: 1}
"""

ECHO_NEVER_CLOSES = """
def handler(conn):
    while True:
        data = conn.recv(65536)
        if not data:
            break
        conn.sendall(data)
    keep.append(conn)            # the bug: the client is done, but the socket is never closed

keep = []
serve_threaded(handler)
"""


def test_shutdown_write_then_echo_and_close_passes(tmp_path: Path) -> None:
    g = run_grade(write_spec(tmp_path, HALF_CLOSE), py_prog(tmp_path / "sub", ECHO_THREADED))
    assert g.outcomes == {"half-close": "passed"}, g.explain()


def test_shutdown_write_server_that_never_closes_fails(tmp_path: Path) -> None:
    g = run_grade(write_spec(tmp_path, HALF_CLOSE), py_prog(tmp_path / "sub", ECHO_NEVER_CLOSES))
    assert g.outcomes == {"half-close": "failed"}, g.explain()
    assert "expected the connection to close after the expected bytes, but it stayed open" in \
        g.messages["half-close"]


def test_shutdown_write_is_needed_by_a_server_that_echoes_at_eof(tmp_path: Path) -> None:
    # This server answers only once recv() returns 0: without shutdown_write nothing would ever come back.
    sub = py_prog(tmp_path / "sub", """
        def handler(conn):
            with conn:
                data = b""
                while True:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                conn.sendall(data[::-1])

        serve_threaded(handler)
        """)
    spec = write_spec(tmp_path, """
        - id: with-shutdown
          steps:
            - connect: {}
            - send: {text: "abc"}
            - shutdown_write: {}
            - expect_bytes: {text: "cba", eof: true, timeout: 3}
        - id: without-shutdown
          steps:
            - connect: {}
            - send: {text: "abc"}
            - expect_bytes: {text: "cba", timeout: 0.3}
        """)
    g = run_grade(spec, sub)
    assert g.outcomes == {"with-shutdown": "passed", "without-shutdown": "failed"}, g.explain()
    assert "expected 3 bytes, got 0: nothing more arrived before the deadline" in g.messages["without-shutdown"]


# -- reset ---------------------------------------------------------------------------------------------------

# The second client connects first and waits in the listen queue of the one-client-at-a-time server, so a
# server that dies of the reset resets it: the failure is seen on that connection, not by luck of timing.
RESET = """
- id: survives-reset
  category: robustness
  steps:
    - connect: {as: rude}
    - connect: {}
    - send: {conn: rude, text: "hello?\\n"}
    - expect_bytes: {conn: rude, text: "hello?\\n", timeout: 3}
    - reset: {conn: rude}
    - send: {text: "still there?\\n"}
    - expect_bytes: {echo: true, timeout: 3}
    - expect_alive: {}
"""

CRASH_ON_RESET = """
def handler(conn):
    while True:
        data = conn.recv(65536)   # the bug: ConnectionResetError is not handled and ends the server
        if not data:
            break
        conn.sendall(data)
    conn.close()

serve_iterative(handler)
"""


def test_reset_crashes_a_server_that_does_not_handle_econnreset(tmp_path: Path) -> None:
    g = run_grade(write_spec(tmp_path, RESET), py_prog(tmp_path / "sub", CRASH_ON_RESET))
    assert g.outcomes == {"survives-reset": "failed"}, g.explain()
    msg = g.messages["survives-reset"]
    # The uncaught exception is the cause: it leads the message.
    assert msg.startswith("the server exited with status 1 (uncaught ConnectionResetError: [Errno 104] Connection "
                          "reset by peer) during this check: expected 13 bytes, got 0: the connection was reset by "
                          "the peer (RST)"), msg
    assert "ConnectionResetError" in g.result.checks[0].transcript  # the server's stderr


def test_reset_is_survived_by_a_server_that_handles_errors(tmp_path: Path) -> None:
    g = run_grade(write_spec(tmp_path, RESET), py_prog(tmp_path / "sub", "serve_iterative(echo)\n"))
    assert g.outcomes == {"survives-reset": "passed"}, g.explain()


def test_reset_reaches_the_server_as_econnreset_not_eof(tmp_path: Path) -> None:
    # The server reports how its recv() ended on the next connection: reset (RST) vs close (FIN).
    sub = py_prog(tmp_path / "sub", """
        def handler(conn):
            global last
            with conn:
                try:
                    while True:
                        data = conn.recv(4096)
                        if data == b"how?\\n":
                            conn.sendall(last.encode() + b"\\n")
                        elif not data:
                            last = "eof"
                            return
                except ConnectionResetError:
                    last = "reset"

        last = "none"
        serve_iterative(handler)
        """)
    spec = write_spec(tmp_path, """
        - id: reset
          steps:
            - connect: {as: a}
            - reset: {conn: a}
            - connect: {}
            - send: {text: "how?\\n"}
            - expect_bytes: {text: "reset\\n", timeout: 3}
        - id: close
          steps:
            - connect: {as: a}
            - close: {conn: a}
            - connect: {}
            - send: {text: "how?\\n"}
            - expect_bytes: {text: "eof\\n", timeout: 3}
        """)
    g = run_grade(spec, sub)
    assert g.outcomes == {"reset": "passed", "close": "passed"}, g.explain()


# -- close ---------------------------------------------------------------------------------------------------

CLOSE_THEN_COUNT = """
- id: closes
  category: close
  steps:
    - connect: {}
    - send: {text: "bye"}
    - expect_bytes: {echo: true, timeout: 3}
    - close: {}
    - expect_sockets: {max_close_wait: 0, timeout: 1.5}
"""


def test_close_lets_a_correct_server_close_its_side(tmp_path: Path) -> None:
    g = run_grade(write_spec(tmp_path, CLOSE_THEN_COUNT), py_prog(tmp_path / "sub", ECHO_THREADED))
    assert g.outcomes == {"closes": "passed"}, g.explain()


def test_close_leaves_a_leaky_server_in_close_wait(tmp_path: Path) -> None:
    g = run_grade(write_spec(tmp_path, CLOSE_THEN_COUNT), py_prog(tmp_path / "sub", ECHO_NEVER_CLOSES))
    assert g.outcomes == {"closes": "failed"}, g.explain()
    assert "expected at most 0 sockets in CLOSE_WAIT, found 1" in g.messages["closes"]


# -- expect_bytes: text, hex, echo, length, regex, eof -------------------------------------------------------

TALKER = """
def handler(conn):
    with conn:
        conn.sendall(GREETING)
        conn.sendall(recv_line(conn))
        conn.sendall(b"id=4711\\r\\n" + TAIL)

serve_threaded(handler)
"""

EXPECT_BYTES = """
- id: all-kinds
  steps:
    - connect: {}
    - expect_bytes: {text: "hello\\n", timeout: 3}
    - expect_bytes: {hex: "00 01 ff", timeout: 3}
    - send: {text: "ping\\n"}
    - expect_bytes: {echo: true, timeout: 3}
    - expect_bytes: {regex: "id=[0-9]+\\r\\n", timeout: 3}
    - expect_bytes: {length: 5, eof: true, timeout: 3}
"""


def talker(folder: Path, greeting: bytes, tail: bytes, extra: str = "") -> Path:
    return py_prog(folder, f"GREETING = {greeting!r}\nTAIL = {tail!r}\n{extra}" + TALKER)


def test_expect_bytes_all_kinds_pass(tmp_path: Path) -> None:
    g = run_grade(write_spec(tmp_path, EXPECT_BYTES), talker(tmp_path / "sub", b"hello\n\x00\x01\xff", b"12345"))
    assert g.outcomes == {"all-kinds": "passed"}, g.explain()


@pytest.mark.parametrize(
    ("greeting", "tail", "expected"),
    [
        (b"Hello\n\x00\x01\xff", b"12345", "received bytes differ from those expected"),
        (b"hello\n\x00\x02\xff", b"12345", "received bytes differ from those expected"),
        (b"hello\n\x00\x01\xff", b"123", "expected 5 bytes, got 3: the connection was closed by the peer (FIN)"),
        (b"hello\n\x00\x01\xff", b"123456",
         "expected the connection to close after the expected bytes, but 1 more bytes came: 6"),
    ],
    ids=["wrong-text", "wrong-hex", "too-short", "extra-bytes"],
)
def test_expect_bytes_mismatches_fail(tmp_path: Path, greeting: bytes, tail: bytes, expected: str) -> None:
    g = run_grade(write_spec(tmp_path, EXPECT_BYTES), talker(tmp_path / "sub", greeting, tail))
    assert g.outcomes == {"all-kinds": "failed"}, g.explain()
    assert expected in g.messages["all-kinds"], g.messages["all-kinds"]


def test_expect_bytes_echo_mismatch_and_regex_miss(tmp_path: Path) -> None:
    sub = py_prog(tmp_path / "sub", """
        def handler(conn):
            with conn:
                line = recv_line(conn)
                conn.sendall(line.upper())      # the bug: not an echo
                conn.sendall(b"id=none\\r\\n")

        serve_threaded(handler)
        """)
    spec = write_spec(tmp_path, """
        - id: echo
          steps:
            - connect: {}
            - send: {text: "ping\\n"}
            - expect_bytes: {echo: true, timeout: 3}
        - id: regex
          steps:
            - connect: {}
            - send: {text: "PING\\n"}
            - expect_bytes: {echo: true, timeout: 3}
            - expect_bytes: {regex: "id=[0-9]+\\r\\n", timeout: 3}
        """)
    g = run_grade(spec, sub)
    assert g.outcomes == {"echo": "failed", "regex": "failed"}, g.explain()
    assert "received bytes differ from those expected" in g.messages["echo"]
    assert "PING" in g.messages["echo"]
    assert g.messages["regex"].startswith("expected bytes matching the regex 'id=[0-9]+"), g.messages["regex"]
    assert "', got id=none\\r\\n; " in g.messages["regex"], g.messages["regex"]
    assert "closed by the peer (FIN)" in g.messages["regex"]


# -- expect_eof ----------------------------------------------------------------------------------------------

EOF_SPEC = """
- id: eof
  category: close
  steps:
    - connect: {}
    - send: {text: "quit\\n"}
    - expect_bytes: {text: "bye\\n", timeout: 3}
    - expect_eof: {timeout: 1}
"""


@pytest.mark.parametrize(
    ("closing", "outcome", "expected"),
    [
        ("conn.close()", "passed", ""),
        # SO_LINGER with a zero timeout: close() sends RST.
        ("conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0)); conn.close()",
         "failed", "expected an orderly close (FIN), but the connection was reset (RST)"),
        ("keep.append(conn)", "failed", "expected the connection to close, but it stayed open"),
    ],
    ids=["fin", "linger0-rst", "stays-open"],
)
def test_expect_eof(tmp_path: Path, closing: str, outcome: str, expected: str) -> None:
    sub = py_prog(tmp_path / "sub", f"""
        def handler(conn):
            recv_line(conn)
            conn.sendall(b"bye\\n")
            {closing}

        keep = []
        serve_threaded(handler)
        """)
    g = run_grade(write_spec(tmp_path, EOF_SPEC), sub)
    assert g.outcomes == {"eof": outcome}, g.explain()
    assert expected in g.messages["eof"]


def test_expect_eof_close_with_unread_data_is_a_reset(tmp_path: Path) -> None:
    sub = py_prog(tmp_path / "sub", """
        def handler(conn):
            conn.recv(5)             # the bug: reads "quit" only; the rest of the request stays unread
            conn.sendall(b"bye\\n")
            conn.close()             # unread data: the kernel answers with RST, not FIN

        serve_threaded(handler)
        """)
    spec = write_spec(tmp_path, """
        - id: eof
          category: close
          steps:
            - connect: {}
            - send: {text: "quit\\nand some more that nobody reads\\n"}
            - expect_bytes: {text: "bye\\n", timeout: 3}
            - expect_eof: {timeout: 1}
        """)
    g = run_grade(spec, sub)
    assert g.outcomes == {"eof": "failed"}, g.explain()
    assert "but the connection was reset (RST)" in g.messages["eof"]
    assert "unread data" in g.hints["eof"]


def test_a_reset_first_reported_to_send_is_still_a_reset(tmp_path: Path) -> None:
    # The server resets connection a (it closes it with a byte unread), then says so on connection b. Our next
    # send on a meets the reset (ECONNRESET); the end of a must still be judged a reset, not an orderly close.
    sub = py_prog(tmp_path / "sub", """
        s = listener()
        a, _ = s.accept()
        b, _ = s.accept()
        a.recv(1)
        a.close()                  # "b" is still unread: RST
        b.sendall(b"done\\n")
        while True:
            time.sleep(60)
        """)
    spec = write_spec(tmp_path, """
        - id: reset
          category: close
          steps:
            - connect: {as: a}
            - connect: {as: b}
            - send: {conn: a, text: "ab"}
            - expect_bytes: {conn: b, text: "done\\n", timeout: 3}
            - send: {conn: a, text: "more"}
            - expect_eof: {conn: a, timeout: 1}
        """)
    g = run_grade(spec, sub)
    assert g.outcomes == {"reset": "failed"}, g.explain()
    assert g.messages["reset"] == "expected an orderly close (FIN), but the connection was reset (RST)"
    assert "send failed (ECONNRESET)" in g.result.checks[0].transcript


# -- expect_open ---------------------------------------------------------------------------------------------

OPEN_SPEC = """
- id: stays-open
  category: robustness
  steps:
    - connect: {}
    - expect_open: {for: 0.3}
"""


@pytest.mark.parametrize(
    ("body", "outcome", "expected"),
    [
        ("conns.append(conn)", "passed", ""),
        ("conn.close()", "failed", "expected the connection to stay open for 0.3s, but the connection was "
                                   "closed by the peer (FIN) after"),
        ("conn.sendall(b'welcome'); conns.append(conn)", "failed",
         "expected nothing yet, but the submission sent welcome"),
    ],
    ids=["open", "closes-at-once", "talks"],
)
def test_expect_open(tmp_path: Path, body: str, outcome: str, expected: str) -> None:
    sub = py_prog(tmp_path / "sub", f"""
        conns = []
        s = listener()
        while True:
            conn, _ = s.accept()
            {body}
        """)
    g = run_grade(write_spec(tmp_path, OPEN_SPEC), sub)
    assert g.outcomes == {"stays-open": outcome}, g.explain()
    assert expected in g.messages["stays-open"]


def test_expect_open_allow_data(tmp_path: Path) -> None:
    sub = py_prog(tmp_path / "sub", """
        conns = []
        s = listener()
        while True:
            conn, _ = s.accept()
            conn.sendall(b"welcome")
            conns.append(conn)
        """)
    spec = write_spec(tmp_path, """
        - id: open
          steps:
            - connect: {}
            - expect_open: {for: 0.3, allow_data: true}
            - expect_bytes: {text: "welcome", timeout: 1}
        """)
    g = run_grade(spec, sub)
    assert g.outcomes == {"open": "passed"}, g.explain()


# -- expect_uint ---------------------------------------------------------------------------------------------

UINT_SPEC = """
- id: time32
  category: byte-order
  steps:
    - connect: {}
    - expect_uint: {size: 4, min: now_1900 - 5, max: now_1900 + 5, timeout: 3}
- id: port16
  category: byte-order
  steps:
    - connect: {}
    - expect_uint: {size: 4, min: 0, max: 4294967295, timeout: 3}
    - expect_uint: {size: 2, min: 4660, max: 4660, timeout: 3}
"""

TIME_SERVER = """
def handler(conn):
    with conn:
        conn.sendall(struct.pack(FMT32, int(time.time()) + 2208988800))
        conn.sendall(struct.pack(FMT16, 0x1234)[:LEN16])

serve_threaded(handler)
"""


@pytest.mark.parametrize(
    ("fmt32", "fmt16", "len16", "outcomes", "expected"),
    [
        ("!I", "!H", 2, {"time32": "passed", "port16": "passed"}, {}),
        ("<I", "<H", 2, {"time32": "failed", "port16": "failed"},
         {"time32": "missing htonl/ntohl", "port16": "missing htons/ntohs"}),
        ("!I", "!H", 1, {"time32": "passed", "port16": "failed"},
         {"port16": "expected 2 bytes (a 16-bit unsigned integer in network byte order), got 1 bytes: '\\x12'"}),
    ],
    ids=["big-endian", "little-endian", "short"],
)
def test_expect_uint(tmp_path: Path, fmt32: str, fmt16: str, len16: int, outcomes: dict[str, str],
                     expected: dict[str, str]) -> None:
    sub = py_prog(tmp_path / "sub", f"FMT32 = {fmt32!r}\nFMT16 = {fmt16!r}\nLEN16 = {len16}\n" + TIME_SERVER)
    g = run_grade(write_spec(tmp_path, UINT_SPEC), sub)
    assert g.outcomes == outcomes, g.explain()
    for cid, text in expected.items():
        assert text in g.messages[cid], g.messages[cid]
    if fmt32 == "<I":
        assert "host byte order (little-endian)" in g.messages["time32"]


def test_expect_uint_out_of_range(tmp_path: Path) -> None:
    sub = py_prog(tmp_path / "sub", """
        def handler(conn):
            with conn:
                conn.sendall(struct.pack("!I", int(time.time())))   # Unix time, not RFC 868 time

        serve_threaded(handler)
        """)
    spec = write_spec(tmp_path, """
        - id: rfc868
          steps:
            - connect: {}
            - expect_uint: {size: 4, min: now_1900 - 5, max: now_1900 + 5, timeout: 3}
        - id: unix
          steps:
            - connect: {}
            - expect_uint: {size: 4, min: now - 5, max: now + 5, timeout: 3}
        """)
    g = run_grade(spec, sub)
    assert g.outcomes == {"rfc868": "failed", "unix": "passed"}, g.explain()
    assert "which is out of range" in g.messages["rfc868"]


# -- expect_port ---------------------------------------------------------------------------------------------

C_ECHO_SERVER = r"""
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    int port = atoi(argv[1]);
    int one = 1;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr;

    signal(SIGPIPE, SIG_IGN);
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
#ifdef USE_HTONS
    addr.sin_port = htons(port);
#else
    addr.sin_port = port;
#endif
    if (bind(s, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(s, 16) < 0)
        return 1;
    for (;;) {
        char buf[4096];
        ssize_t n;
        int c = accept(s, NULL, NULL);
        if (c < 0)
            continue;
        while ((n = recv(c, buf, sizeof buf, 0)) > 0) {
            ssize_t off = 0;
            while (off < n) {
                ssize_t w = send(c, buf + off, n - off, 0);
                if (w <= 0)
                    break;
                off += w;
            }
        }
        close(c);
    }
}
"""

PORT_SPEC = """
- id: port
  category: byte-order
  steps:
    - expect_port: {proto: tcp}
- id: echo
  steps:
    - connect: {}
    - send: {text: "hi\\n"}
    - expect_bytes: {echo: true, timeout: 3}
"""



def test_expect_port_missing_htons_fails_only_the_port_check(tmp_path: Path) -> None:
    g = run_grade(write_spec(tmp_path, PORT_SPEC), c_prog(tmp_path / "sub", C_ECHO_SERVER))
    assert g.outcomes == {"port": "failed", "echo": "passed"}, g.explain()
    msg = g.messages["port"]
    assert "missing htons() on the port" in msg, msg
    assert "with its two bytes swapped" in msg
    assert "htons(port)" in g.hints["port"]


def test_expect_port_with_htons_passes(tmp_path: Path) -> None:
    sub = c_prog(tmp_path / "sub", C_ECHO_SERVER, defines=("USE_HTONS",))
    g = run_grade(write_spec(tmp_path, PORT_SPEC), sub)
    assert g.outcomes == {"port": "passed", "echo": "passed"}, g.explain()
