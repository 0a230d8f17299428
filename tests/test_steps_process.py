"""Process steps (expect_alive, expect_sockets, restart) and the supervisor's handling of a dying server."""

from __future__ import annotations

from pathlib import Path

import pytest
from progs import py_prog, run_grade, write_spec

pytestmark = pytest.mark.usefixtures("no_leftover_processes", "direct_python")

# -- expect_alive and SIGPIPE --------------------------------------------------------------------------------

# Streams data to a client that asks for "chargen", one client at a time; echoes one line for any other client.
# When the streaming client goes away it says goodbye anyway: after an RST the first send() fails with
# ECONNRESET, the second one with EPIPE, which raises SIGPIPE.
CHARGEN = """
signal.signal(signal.SIGPIPE, SIGPIPE_ACTION)

def handler(conn):
    line = recv_line(conn)
    if line != b"chargen\\n":
        conn.sendall(line)
        conn.close()
        return
    try:
        while True:
            conn.sendall(b"x" * 65536)
    except OSError:
        pass
    try:
        conn.sendall(b"bye\\n")
    except OSError:
        pass
    conn.close()

serve_iterative(handler)
"""

SURVIVES_RESET = """
- id: survives-reset
  category: robustness
  steps:
    - connect: {as: rude}
    - connect: {}                  # waits in the listen queue: the server serves one client at a time
    - send: {conn: rude, text: "chargen\\n"}
    - expect_bytes: {conn: rude, length: 1000, timeout: 3}
    - reset: {conn: rude}
    - send: {text: "hello\\n"}
    - expect_bytes: {echo: true, eof: true, timeout: 3}
    - expect_alive: {}
- id: next
  steps:
    - connect: {}
    - send: {text: "hello\\n"}
    - expect_bytes: {echo: true, eof: true, timeout: 3}
"""


def test_server_that_ignores_sigpipe_stays_alive(tmp_path: Path) -> None:
    sub = py_prog(tmp_path / "sub", "SIGPIPE_ACTION = signal.SIG_IGN\n" + CHARGEN)
    g = run_grade(write_spec(tmp_path, SURVIVES_RESET), sub)
    assert g.outcomes == {"survives-reset": "passed", "next": "passed"}, g.explain()


def test_server_killed_by_sigpipe_fails_and_is_restarted_for_the_next_check(tmp_path: Path) -> None:
    sub = py_prog(tmp_path / "sub", "SIGPIPE_ACTION = signal.SIG_DFL\n" + CHARGEN)
    g = run_grade(write_spec(tmp_path, SURVIVES_RESET), sub)
    assert g.outcomes == {"survives-reset": "failed", "next": "passed"}, g.explain()
    msg = g.messages["survives-reset"]
    # The death is the cause: it leads the message.
    assert msg.startswith("the server was killed by SIGPIPE (signal 13) during this check: expected 6 bytes, got 0: "
                          "the connection was reset by the peer (RST)"), msg


def test_expect_alive_names_sigpipe(tmp_path: Path) -> None:
    # Threaded: one thread waits on an idle client, so the idle connection's FIN tells when the process is gone.
    sub = py_prog(tmp_path / "sub", """
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)    # the bug: a write to a reset socket kills the process

        def handler(conn):
            if recv_line(conn) != b"chargen\\n":
                conn.close()
                return
            try:
                while True:
                    conn.sendall(b"x" * 65536)
            except OSError:
                pass
            conn.sendall(b"bye\\n")

        serve_threaded(handler)
        """)
    spec = write_spec(tmp_path, """
        - id: alive
          category: robustness
          steps:
            - connect: {as: idle}
            - connect: {as: rude}
            - send: {conn: rude, text: "chargen\\n"}
            - expect_bytes: {conn: rude, length: 1000, timeout: 3}
            - reset: {conn: rude}
            - expect_eof: {conn: idle, timeout: 3}
            - expect_alive: {}
        """)
    g = run_grade(spec, sub)
    assert g.outcomes == {"alive": "failed"}, g.explain()
    assert g.messages["alive"] == "the server was killed by SIGPIPE (signal 13) during this check", (
        g.messages["alive"])
    assert "SIG_IGN" in g.hints["alive"]


# -- wait_closed ---------------------------------------------------------------------------------------------

# A threaded server that gets round to a reset client late: it notices the reset only after a while (say, a
# busy thread), then writes twice. With SIGPIPE at its default the second write kills it, well after the
# harness could have looked; wait_closed makes the verdict wait for the server to finish with that client.
LATE = """
signal.signal(signal.SIGPIPE, SIGPIPE_ACTION)
held = []

def handler(conn):
    if recv_line(conn) != b"late\\n":
        conn.sendall(b"hi\\n")
        conn.close()
        return
    conn.sendall(b"ok\\n")
    try:
        conn.recv(1)                 # the client's reset: ECONNRESET
    except OSError:
        pass
    time.sleep(0.4)                  # slow to get round to it
    try:
        conn.sendall(b"bye\\n")
        conn.sendall(b"bye\\n")
    except OSError:
        pass
    if KEEP:
        held.append(conn)            # the leak: never closed
    else:
        conn.close()

serve_threaded(handler)
"""

LATE_SPEC = """
- id: late
  steps:
    - connect: {as: rude}
    - send: {conn: rude, text: "late\\n"}
    - expect_bytes: {conn: rude, text: "ok\\n", timeout: 3}
    - reset: {conn: rude}
    - wait_closed: {conn: rude, timeout: WAIT}
    - expect_alive: {}
    - expect_sockets: {max_open: 0, timeout: 0.05}    # always fails: shows the transcript
"""


@pytest.mark.parametrize("keep", [False, True])
def test_wait_closed_lets_a_slow_server_die_before_expect_alive_looks(tmp_path: Path, keep: bool) -> None:
    sub = py_prog(tmp_path / "sub", f"SIGPIPE_ACTION = signal.SIG_DFL\nKEEP = {keep}\n" + LATE)
    g = run_grade(write_spec(tmp_path, LATE_SPEC.replace("WAIT", "5")), sub)
    assert g.outcomes == {"late": "failed"}, g.explain()
    assert g.messages["late"] == "the server was killed by SIGPIPE (signal 13) during this check", g.explain()


def test_wait_closed_returns_once_the_server_closes_the_socket(tmp_path: Path) -> None:
    sub = py_prog(tmp_path / "sub", "SIGPIPE_ACTION = signal.SIG_IGN\nKEEP = False\n" + LATE)
    g = run_grade(write_spec(tmp_path, LATE_SPEC.replace("WAIT", "5")), sub)
    assert g.messages["late"].startswith("expected at most 0 open TCP sockets"), g.explain()
    transcript = g.result.checks[0].transcript
    assert "the submission has closed its socket of this connection" in transcript, transcript


def test_wait_closed_judges_nothing_when_the_server_keeps_the_socket(tmp_path: Path) -> None:
    sub = py_prog(tmp_path / "sub", "SIGPIPE_ACTION = signal.SIG_IGN\nKEEP = True\n" + LATE)
    g = run_grade(write_spec(tmp_path, LATE_SPEC.replace("WAIT", "1")), sub)
    assert g.messages["late"].startswith("expected at most 0 open TCP sockets"), g.explain()
    transcript = g.result.checks[0].transcript
    assert "the submission still holds its socket of this connection" in transcript, transcript


def test_wait_closed_on_a_connection_never_accepted(tmp_path: Path) -> None:
    # One client at a time: the second connection waits in the listen queue until it is reset.
    sub = py_prog(tmp_path / "sub", "serve_iterative(lambda conn: (recv_line(conn), time.sleep(30)))\n")
    spec = write_spec(tmp_path, """
        - id: queued
          steps:
            - connect: {as: first}
            - send: {conn: first, text: "x\\n", wait_read: true, timeout: 3}
            - connect: {as: queued}
            - reset: {conn: queued}
            - wait_closed: {conn: queued, timeout: 5}
            - expect_sockets: {max_open: 0, timeout: 0.05}
    """)
    g = run_grade(spec, sub)
    transcript = g.result.checks[0].transcript
    assert "the submission never accepted this connection" in transcript, g.explain()


# -- send wait_read ------------------------------------------------------------------------------------------


def test_send_wait_read_fails_when_the_server_never_reads(tmp_path: Path) -> None:
    sub = py_prog(tmp_path / "sub", "serve_threaded(lambda conn: time.sleep(30))\n")
    spec = write_spec(tmp_path, """
        - id: unread
          steps:
            - connect: {}
            - send: {text: "hello\\n", wait_read: true, timeout: 0.5}
    """)
    g = run_grade(spec, sub)
    assert g.outcomes == {"unread": "failed"}, g.explain()
    assert g.messages["unread"] == "the peer did not read the 6 bytes sent (6 bytes still unread in its socket) " \
        "before the deadline", g.explain()


# -- expect_sockets ------------------------------------------------------------------------------------------

SOCKETS_SPEC = """
- id: no-close-wait
  category: close
  steps:
    - parallel:
        count: 3
        steps:
          - connect: {}
          - send: {text: "bye"}
          - expect_bytes: {echo: true, timeout: 3}
          - close: {}
    - expect_sockets: {max_close_wait: 0, timeout: 1}
- id: few-open
  category: close
  steps:
    - connect: {}
    - send: {text: "bye"}
    - expect_bytes: {echo: true, timeout: 3}
    - close: {}
    - expect_sockets: {max_open: 1, timeout: 1}
"""

LEAKY_ECHO = """
def handler(conn):
    while True:
        data = conn.recv(65536)
        if not data:
            break
        conn.sendall(data)
    kept.append(conn)             # the bug: never closed

kept = []
serve_threaded(handler)
"""


def test_expect_sockets_passes_a_server_that_closes(tmp_path: Path) -> None:
    g = run_grade(write_spec(tmp_path, SOCKETS_SPEC), py_prog(tmp_path / "sub", "serve_threaded(echo)\n"))
    assert g.outcomes == {"no-close-wait": "passed", "few-open": "passed"}, g.explain()


def test_expect_sockets_finds_close_wait(tmp_path: Path) -> None:
    g = run_grade(write_spec(tmp_path, SOCKETS_SPEC), py_prog(tmp_path / "sub", LEAKY_ECHO))
    assert g.outcomes == {"no-close-wait": "failed", "few-open": "failed"}, g.explain()
    assert g.messages["no-close-wait"].startswith("expected at most 0 sockets in CLOSE_WAIT, found 3: the clients "
                                                  "closed these connections but the program never closed its side")
    assert "close() every accepted socket" in g.hints["no-close-wait"]
    # The three from the first check are still there, plus the new one.
    assert g.messages["few-open"] == "expected at most 1 open TCP sockets, found 5 (LISTEN, CLOSE_WAIT)" or \
        g.messages["few-open"] == "expected at most 1 open TCP sockets, found 5 (CLOSE_WAIT, LISTEN)", \
        g.messages["few-open"]


# -- restart -------------------------------------------------------------------------------------------------

# Says hi and closes first, so the closed connections sit in TIME_WAIT on the server's port.
HI_SERVER = """
def handler(conn):
    conn.sendall(b"hi\\n")
    conn.close()

serve_iterative(handler, reuse=REUSE)
"""

RESTART_SPEC = """
- id: restart
  category: robustness
  steps:
    - connect: {}
    - expect_bytes: {text: "hi\\n", eof: true, timeout: 3}
    - close: {}
    - restart: {}
    - connect: {}
    - expect_bytes: {text: "hi\\n", eof: true, timeout: 3}
"""


def test_restart_with_so_reuseaddr_passes(tmp_path: Path) -> None:
    g = run_grade(write_spec(tmp_path, RESTART_SPEC), py_prog(tmp_path / "sub", "REUSE = True\n" + HI_SERVER))
    assert g.outcomes == {"restart": "passed"}, g.explain()


def test_restart_without_so_reuseaddr_fails(tmp_path: Path) -> None:
    g = run_grade(write_spec(tmp_path, RESTART_SPEC), py_prog(tmp_path / "sub", "REUSE = False\n" + HI_SERVER))
    assert g.outcomes == {"restart": "failed"}, g.explain()
    msg = g.messages["restart"]
    assert msg.startswith("the server exited with status 1 (uncaught OSError: [Errno 98] Address already in use) "
                          "during this check: the restarted server did not come up: the server exited with status 1 "
                          "before it was "
                          "ready"), msg
    assert "SO_REUSEADDR" in g.hints["restart"]
    transcript = g.result.checks[0].transcript
    assert "Address already in use" in transcript, transcript
    assert "killing the server (1 connections on its port in TIME_WAIT)" in transcript, transcript


# -- a server that dies during a check -----------------------------------------------------------------------

DIES_ON_REQUEST = """
def handler(conn):
    with conn:
        while True:
            line = recv_line(conn)
            if not line:
                return
            if line == b"die\\n":
                conn.sendall(b"bye\\n")
                os._exit(7)                   # the bug: the whole server exits
            conn.sendall(line)

serve_threaded(handler)
"""


def test_a_check_during_which_the_server_dies_fails_and_the_next_one_gets_a_new_server(tmp_path: Path) -> None:
    # The pause outlasts the few milliseconds a process may take to exit after its sockets are closed (see the
    # test below).
    spec = write_spec(tmp_path, """
        - id: kills
          steps:
            - connect: {}
            - send: {text: "die\\n"}
            - expect_bytes: {text: "bye\\n", eof: true, timeout: 3}
            - pause: {seconds: 0.3}
        - id: after
          steps:
            - connect: {}
            - send: {text: "hello\\n"}
            - expect_bytes: {echo: true, timeout: 3}
        """)
    g = run_grade(spec, py_prog(tmp_path / "sub", DIES_ON_REQUEST))
    assert g.outcomes == {"kills": "failed", "after": "passed"}, g.explain()
    assert g.messages["kills"] == "the server exited with status 7 during this check"


def test_fresh_starts_a_new_server(tmp_path: Path) -> None:
    # The server counts its clients; `fresh: true` restarts it, so its count starts again.
    sub = py_prog(tmp_path / "sub", """
        count = 0

        def handler(conn):
            global count
            count += 1
            with conn:
                conn.sendall(b"%d\\n" % count)

        serve_iterative(handler)
        """)
    spec = write_spec(tmp_path, """
        - id: first
          steps:
            - connect: {}
            - expect_bytes: {text: "1\\n", eof: true, timeout: 3}
        - id: same-server
          steps:
            - connect: {}
            - expect_bytes: {text: "2\\n", eof: true, timeout: 3}
        - id: new-server
          fresh: true
          steps:
            - connect: {}
            - expect_bytes: {text: "1\\n", eof: true, timeout: 3}
        """)
    g = run_grade(spec, sub)
    assert set(g.outcomes.values()) == {"passed"}, g.explain()


def test_a_server_that_dies_at_the_end_of_a_check_is_noticed(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, """
        - id: kills
          steps:
            - connect: {}
            - send: {text: "die\\n"}
            - expect_bytes: {text: "bye\\n", eof: true, timeout: 3}
        - id: after
          steps:
            - connect: {}
            - send: {text: "hello\\n"}
            - expect_bytes: {echo: true, timeout: 3}
        """)
    sub = py_prog(tmp_path / "sub", DIES_ON_REQUEST)
    for seed in range(1, 4):
        g = run_grade(spec, sub, seed=seed)
        assert g.outcomes == {"kills": "failed", "after": "passed"}, g.explain()


# -- fill: a server caught in the middle of sending, with no short I/O forged --------------------------------

FILL_RESET = """
- id: survives-reset
  category: robustness
  steps:
    - connect: {as: rude, small_window: true}
    - fill: {conn: rude, timeout: 5}
    - shutdown_write: {conn: rude}
    - reset: {conn: rude}
    - wait_closed: {conn: rude, timeout: 10}
    - expect_alive: {}
"""

# An echo server that reads 2 KB at a time and echoes each piece with a correct send() loop: blocking sockets,
# one thread per client. Its only fault, when SIGPIPE_ACTION is SIG_DFL, is letting SIGPIPE kill it.
THREADED_ECHO = """
import threading
signal.signal(signal.SIGPIPE, SIGPIPE_ACTION)

def handler(conn):
    with conn:
        try:
            while data := conn.recv(2048):
                conn.sendall(data)
        except OSError:
            pass

s = listener(True)
while True:
    conn, _ = s.accept()
    threading.Thread(target=handler, args=(conn,), daemon=True).start()
"""

# asyncio buffers what it cannot send yet and keeps reading.
ASYNCIO_ECHO = """
import asyncio

class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
    def data_received(self, data):
        self.transport.write(data)

async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, "127.0.0.1", PORT)
    await server.serve_forever()

asyncio.run(main())
"""

# Reads everything and answers nothing: it never stops reading, so a fill sends its max_bytes.
DISCARD = """
def handler(conn):
    with conn:
        while conn.recv(65536):
            pass

serve_iterative(handler)
"""


@pytest.mark.parametrize("repeat", range(3))
def test_fill_catches_a_blocked_sender_every_time(tmp_path: Path, repeat: int) -> None:
    sub = py_prog(tmp_path / "sub", "SIGPIPE_ACTION = signal.SIG_DFL\n" + THREADED_ECHO)
    g = run_grade(write_spec(tmp_path, FILL_RESET), sub)
    assert g.outcomes == {"survives-reset": "failed"}, g.explain()
    assert g.messages["survives-reset"] == "the server was killed by SIGPIPE (signal 13) during this check", \
        g.explain()
    transcript = g.result.checks[0].transcript
    assert "without reading: the peer stopped reading" in transcript, transcript


def test_fill_passes_a_server_that_ignores_sigpipe(tmp_path: Path) -> None:
    sub = py_prog(tmp_path / "sub", "SIGPIPE_ACTION = signal.SIG_IGN\n" + THREADED_ECHO)
    g = run_grade(write_spec(tmp_path, FILL_RESET), sub)
    assert g.outcomes == {"survives-reset": "passed"}, g.explain()


def test_fill_passes_a_server_that_buffers(tmp_path: Path) -> None:
    g = run_grade(write_spec(tmp_path, FILL_RESET), py_prog(tmp_path / "sub", ASYNCIO_ECHO))
    assert g.outcomes == {"survives-reset": "passed"}, g.explain()


def test_fill_stops_at_max_bytes_for_a_server_that_never_stops_reading(tmp_path: Path) -> None:
    spec = FILL_RESET.replace("fill: {conn: rude, timeout: 5}", "fill: {conn: rude, max_bytes: 2000000, timeout: 5}")
    spec += "    - connect: {}\n    - expect_bytes: {text: never, timeout: 0.1}\n"  # fails: the transcript is kept
    g = run_grade(write_spec(tmp_path, spec), py_prog(tmp_path / "sub", DISCARD))
    assert g.outcomes == {"survives-reset": "failed"}, g.explain()
    transcript = g.result.checks[0].transcript
    assert "sent 2000000 bytes without reading: the peer read them all" in transcript, transcript


# -- the end of a check: the server's death of what it does with the connections the check left --------------

# Told "incomplete" when its client leaves in the middle of a line, in two send()s. The client has gone: the
# first send() draws an RST, which takes the socket out of the kernel's tables at once (its state is CLOSE)
# although the server still holds it; the second send() raises SIGPIPE. The pause between them (on the CPU: a
# thread that a busy machine's scheduler has not run yet) must not matter: the death is this check's.
HALF_LINE = """
signal.signal(signal.SIGPIPE, signal.SIG_DFL)

def handler(conn):
    data = b""
    while not data.endswith(b"\\n"):
        chunk = conn.recv(100)
        if not chunk:
            if data:
                conn.sendall(b"incomplete\\n")
                start = time.monotonic()
                while time.monotonic() - start < PAUSE:
                    pass
                conn.sendall(b"bye\\n")
            conn.close()
            return
        data += chunk
    conn.sendall(data)
    conn.close()

serve_threaded(handler)
"""

HALF_LINE_SPEC = """
- id: half-line
  steps:
    - connect: {as: slow}
    - send: {conn: slow, text: "hel"}
    - connect: {}
    - send: {text: "hello\\n"}
    - expect_bytes: {echo: true, eof: true, timeout: 3}
- id: next
  steps:
    - connect: {}
    - send: {text: "hello\\n"}
    - expect_bytes: {echo: true, eof: true, timeout: 3}
"""


@pytest.mark.parametrize("pause", [0, 0.3])
def test_a_death_of_the_connections_a_check_leaves_is_that_checks(tmp_path: Path, pause: float) -> None:
    sub = py_prog(tmp_path / "sub", f"PAUSE = {pause}\n" + HALF_LINE)
    g = run_grade(write_spec(tmp_path, HALF_LINE_SPEC), sub)
    assert g.outcomes == {"half-line": "failed", "next": "passed"}, g.explain()
    assert g.messages["half-line"] == "the server was killed by SIGPIPE (signal 13) during this check", g.explain()


# Echoes one client, then (after some work on the CPU) the program ends: no loop around accept(). The client
# got its echo and its EOF, but the server's end is this check's doing: it must fail this check, every time.
ONE_CLIENT = """
s = listener()
conn, _ = s.accept()
echo(conn)
start = time.monotonic()
while time.monotonic() - start < PAUSE:
    pass
"""


@pytest.mark.parametrize("pause", [0, 0.2])
def test_a_server_that_ends_after_a_check_fails_that_check(tmp_path: Path, pause: float) -> None:
    sub = py_prog(tmp_path / "sub", f"PAUSE = {pause}\n" + ONE_CLIENT)
    spec = write_spec(tmp_path, """
        - id: one
          steps:
            - connect: {}
            - send: {text: "hello\\\\n"}
            - shutdown_write: {}
            - expect_bytes: {echo: true, eof: true, timeout: 3}
    """)
    g = run_grade(spec, sub)
    assert g.outcomes == {"one": "failed"}, g.explain()
    assert g.messages["one"].startswith("the server exited with status 0 during this check"), g.explain()


@pytest.mark.parametrize("queued", [False, True])
def test_a_connection_a_check_leaves_in_the_accept_queue_is_followed(tmp_path: Path, queued: bool) -> None:
    # One client at a time, held for long: the second connection is still in the listen queue when the check
    # ends. The harness reads the connections' table only when a listener has connections waiting: both then
    # count among those the check leaves, the one never accepted too.
    sub = py_prog(tmp_path / "sub", "serve_iterative(lambda conn: (recv_line(conn), time.sleep(30)))\n")
    second = "- connect: {as: second}" if queued else ""
    spec = write_spec(tmp_path, f"""
        - id: held
          steps:
            - connect: {{as: first}}
            - send: {{conn: first, text: "x\\\\n", wait_read: true, timeout: 3}}
            {second}
            - expect_sockets: {{max_open: 0, timeout: 0.05}}
    """)
    g = run_grade(spec, sub)
    assert g.outcomes == {"held": "failed"}, g.explain()
    kept = 2 if queued else 1
    assert f"the server keeps {kept} connection(s) this check closed open" in g.result.checks[0].transcript, \
        g.explain()


def test_a_queued_connection_the_server_accepts_after_the_check_is_followed(tmp_path: Path) -> None:
    # One client at a time: the first until its EOF, the second (queued when the check ends) held for long.
    # After the check the server accepts the second: that socket, unknown at the check's end, must be followed.
    sub = py_prog(tmp_path / "sub", """
        def handler(conn):
            if recv_line(conn) == b"first\\n":
                while conn.recv(4096):
                    pass
            else:
                time.sleep(30)
            conn.close()

        serve_iterative(handler)
    """)
    spec = write_spec(tmp_path, """
        - id: held
          steps:
            - connect: {as: first}
            - send: {conn: first, text: "first\\n", wait_read: true, timeout: 3}
            - connect: {as: second}
            - send: {conn: second, text: "second\\n"}
            - expect_sockets: {max_open: 0, timeout: 0.05}
    """)
    g = run_grade(spec, sub)
    assert g.outcomes == {"held": "failed"}, g.explain()
    assert "the server keeps 1 connection(s) this check closed open" in g.result.checks[0].transcript, g.explain()
