"""udp_send and udp_expect against small real UDP servers: one that obeys the rule, one that breaks it."""

from __future__ import annotations

from pathlib import Path

import pytest
from progs import py_prog, run_grade, write_spec

pytestmark = pytest.mark.usefixtures("no_leftover_processes", "direct_python")

# REPLY(data) -> bytes; OTHER_SOCKET: reply from a fresh socket (another port) instead of the bound one.
UDP_SERVER = """
s = listener(kind=socket.SOCK_DGRAM)
other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
while True:
    data, addr = s.recvfrom(65536)
    (other if OTHER_SOCKET else s).sendto(REPLY(data), addr)
"""


def udp_server(folder: Path, reply: str, *, other_socket: bool = False) -> Path:
    return py_prog(folder, f"REPLY = {reply}\nOTHER_SOCKET = {other_socket}\n" + UDP_SERVER)


ECHO_SPEC = """
- id: echo
  steps:
    - udp_send: {text: "ping"}
    - udp_expect: {echo: true, timeout: 3}
- id: echo-two
  steps:
    - udp_send: {sock: a, hex: "00 01 02 ff"}
    - udp_send: {sock: a, text: "second"}
    - udp_expect: {sock: a, echo: true, timeout: 3}
    - udp_expect: {sock: a, echo: true, timeout: 3}
- id: text
  steps:
    - udp_send: {text: "ping"}
    - udp_expect: {text: "ping", timeout: 3}
- id: length
  steps:
    - udp_send: {size: 1000}
    - udp_expect: {length: 1000, timeout: 3}
"""


def test_udp_echo_server_passes(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, ECHO_SPEC, ready="udp")
    g = run_grade(spec, udp_server(tmp_path / "sub", "lambda d: d"))
    assert set(g.outcomes.values()) == {"passed"}, g.explain()


def test_udp_truncating_server_fails(tmp_path: Path) -> None:
    # The bug: replies with at most 512 bytes and adds a newline (a C string mindset).
    spec = write_spec(tmp_path, ECHO_SPEC, ready="udp")
    g = run_grade(spec, udp_server(tmp_path / "sub", "lambda d: d[:512] + b'\\n'"))
    assert g.outcomes == {"echo": "failed", "echo-two": "failed", "text": "failed", "length": "failed"}, \
        g.explain()
    assert g.messages["echo"].startswith("the reply datagram differs: lengths 4 vs 5; first difference at byte 4")
    assert "(got has extra bytes there)" in g.messages["echo"]
    assert g.messages["length"].startswith("expected a datagram of 1000 bytes, got 513: ")


def test_udp_reply_from_another_port_fails(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, ECHO_SPEC, ready="udp")
    g = run_grade(spec, udp_server(tmp_path / "sub", "lambda d: d", other_socket=True))
    assert set(g.outcomes.values()) == {"failed"}, g.explain()
    msg = g.messages["echo"]
    assert msg.startswith("expected the reply to come from port "), msg
    assert "(where the request was sent), got it from port " in msg
    assert "sendto() on the same socket" in g.hints["echo"]


def test_udp_silent_server_fails(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, """
        - id: echo
          steps:
            - udp_send: {text: "ping"}
            - udp_expect: {echo: true, timeout: 0.3}
        """, ready="udp")
    sub = py_prog(tmp_path / "sub", """
        s = listener(kind=socket.SOCK_DGRAM)
        while True:
            s.recvfrom(65536)          # the bug: never answers
        """)
    g = run_grade(spec, sub)
    assert g.outcomes == {"echo": "failed"}, g.explain()
    assert g.messages["echo"] == "expected a reply datagram, got none before the deadline"


UINT_SPEC = """
- id: time
  category: byte-order
  steps:
    - udp_send: {text: ""}
    - udp_expect: {uint: {size: 4, min: now_1900 - 5, max: now_1900 + 5}, timeout: 3}
"""


@pytest.mark.parametrize(
    ("reply", "outcome", "expected"),
    [
        ("lambda d: struct.pack('!I', int(time.time()) + 2208988800)", "passed", ""),
        ("lambda d: struct.pack('<I', int(time.time()) + 2208988800)", "failed", "missing htonl/ntohl"),
        ("lambda d: struct.pack('!Q', int(time.time()) + 2208988800)", "failed",
         "expected 4 bytes (a 32-bit unsigned integer in network byte order), got 8 bytes"),
        ("lambda d: struct.pack('!I', int(time.time()))", "failed", "which is out of range"),
    ],
    ids=["big-endian", "little-endian", "eight-bytes", "unix-time"],
)
def test_udp_uint(tmp_path: Path, reply: str, outcome: str, expected: str) -> None:
    g = run_grade(write_spec(tmp_path, UINT_SPEC, ready="udp"), udp_server(tmp_path / "sub", reply))
    assert g.outcomes == {"time": outcome}, g.explain()
    assert expected in g.messages["time"]


def test_udp_expect_port(tmp_path: Path) -> None:
    # Python can make the classic C mistake too: bind to the byte-swapped port.
    spec = write_spec(tmp_path, """
        - id: port
          category: byte-order
          steps:
            - expect_port: {proto: udp}
        - id: echo
          steps:
            - udp_send: {text: "ping"}
            - udp_expect: {echo: true, timeout: 3}
        """, ready="udp")
    good = udp_server(tmp_path / "good", "lambda d: d")
    g = run_grade(spec, good)
    assert g.outcomes == {"port": "passed", "echo": "passed"}, g.explain()
    bad = py_prog(tmp_path / "bad", """
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", socket.htons(PORT)))     # the bug: the port in network byte order
        while True:
            data, addr = s.recvfrom(65536)
            s.sendto(data, addr)
        """)
    g = run_grade(spec, bad)
    assert g.outcomes == {"port": "failed", "echo": "passed"}, g.explain()
    assert "expected the server to listen on UDP port" in g.messages["port"]
    assert "missing htons() on the port" in g.messages["port"]
