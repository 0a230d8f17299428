"""Flow steps (parallel, call, pause) and the short_io check option, against small real servers."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from progs import CLIENT_PRELUDE, py_prog, run_grade, write_spec

from grader.errors import SpecError
from grader.spec.loader import load_spec

pytestmark = pytest.mark.usefixtures("no_leftover_processes", "direct_python")

# -- parallel ------------------------------------------------------------------------------------------------

SLOW_ECHO = """
def handler(conn):
    with conn:
        line = recv_line(conn)
        time.sleep(0.5)                 # a slow request
        conn.sendall(line)

SERVE(handler)
"""

PARALLEL_SPEC = """
- id: four-at-once
  category: concurrency
  timeout: 8
  steps:
    - parallel:
        count: 4
        steps:
          - connect: {}
          - send: {text: "hi\\n"}
          - expect_bytes: {echo: true, timeout: 1.5}
"""


def test_parallel_passes_a_threaded_server(tmp_path: Path) -> None:
    g = run_grade(write_spec(tmp_path, PARALLEL_SPEC), py_prog(tmp_path / "sub", "SERVE = serve_threaded\n" +
                                                                SLOW_ECHO))
    assert g.outcomes == {"four-at-once": "passed"}, g.explain()


def test_parallel_fails_an_iterative_server(tmp_path: Path) -> None:
    # One client at a time: the fourth is answered after 2 s at the earliest, past its 1.5 s.
    g = run_grade(write_spec(tmp_path, PARALLEL_SPEC), py_prog(tmp_path / "sub", "SERVE = serve_iterative\n" +
                                                                SLOW_ECHO))
    assert g.outcomes == {"four-at-once": "failed"}, g.explain()
    msg = g.messages["four-at-once"]
    assert re.fullmatch(r"[12] of 4 concurrent clients failed; client [1-4]: expected 3 bytes, got 0: nothing more "
                        r"arrived before the deadline; received \(nothing\)", msg), msg
    assert g.result.checks[0].duration_s < 4


# Each client sends half a line and the rest only once every client's half has been read: a server that
# reads one client at a time never reads the second half-line, however fast or slow the machine.
BARRIER_SPEC = """
- id: halves
  category: concurrency
  timeout: 8
  steps:
    - parallel:
        count: 4
        steps:
          - connect: {}
          - send: {text: "half a ", wait_read: true, timeout: 2}
          - barrier: {timeout: 3}
          - send: {text: "line\\n"}
          - expect_bytes: {text: "half a line\\n", timeout: 3}
"""

LINE_ECHO = """
def handler(conn):
    with conn:
        conn.sendall(recv_line(conn))

SERVE(handler)
"""


def test_barrier_passes_a_threaded_server(tmp_path: Path) -> None:
    g = run_grade(write_spec(tmp_path, BARRIER_SPEC), py_prog(tmp_path / "sub", "SERVE = serve_threaded\n" +
                                                              LINE_ECHO))
    assert g.outcomes == {"halves": "passed"}, g.explain()


def test_barrier_fails_an_iterative_server_with_the_real_failure(tmp_path: Path) -> None:
    g = run_grade(write_spec(tmp_path, BARRIER_SPEC), py_prog(tmp_path / "sub", "SERVE = serve_iterative\n" +
                                                              LINE_ECHO))
    assert g.outcomes == {"halves": "failed"}, g.explain()
    msg = g.messages["halves"]
    # Three clients are never read; the one being served gave up at the barrier, which is not reported first.
    assert re.fullmatch(r"3 of 4 concurrent clients failed; client [1-4]: the peer did not read the 7 bytes sent "
                        r"\(7 bytes still unread in its socket\) before the deadline", msg), msg


def test_a_branch_failing_at_once_is_a_failure_never_an_error(tmp_path: Path) -> None:
    # The first branch to fail releases the others from any barrier step; that must never reach a branch
    # still waking from the common start. It once did, in one grading in ten or twenty of this very check:
    # "internal error: BrokenBarrierError".
    spec = write_spec(tmp_path, """
        - id: wrong-at-once
          steps:
            - parallel:
                count: 8
                steps:
                  - connect: {}
                  - expect_bytes: {text: "time", timeout: 3}
        """)
    sub = py_prog(tmp_path / "sub", "serve_threaded(lambda conn: (conn.sendall(b'\\0\\0\\0\\1'), conn.close()))\n")
    for seed in range(1, 41):
        g = run_grade(spec, sub, seed=seed)
        assert g.outcomes == {"wrong-at-once": "failed"}, g.explain()


def test_barrier_outside_parallel_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"spec.yaml:\d+: barrier: only the steps of a parallel step"):
        load_spec(write_spec(tmp_path, """
            - id: lonely
              steps:
                - barrier: {}
            """))


def test_parallel_branches_have_their_own_connections(tmp_path: Path) -> None:
    # Each branch sends its own seeded random bytes on its own connection "c" and gets exactly those back.
    spec = write_spec(tmp_path, """
        - id: branches
          category: concurrency
          steps:
            - parallel:
                count: 6
                steps:
                  - connect: {}
                  - send: {size: 20000}
                  - shutdown_write: {}
                  - expect_bytes: {echo: true, eof: true, timeout: 3}
        """)
    g = run_grade(spec, py_prog(tmp_path / "sub", "serve_threaded(echo)\n"))
    assert g.outcomes == {"branches": "passed"}, g.explain()


# -- call ----------------------------------------------------------------------------------------------------

CALL_MODULE = '''
import time

from grader.errors import CheckFailed


def greeting_is_polite(ctx, args):
    conn = ctx.conn(args.str("conn", "c"))
    conn.read_until(lambda b: b"\\n" in b, time.monotonic() + args.float("timeout", 3))
    line = conn.take()
    ctx.transcript.note(f"judged the greeting {line!r}")
    if args.str("word").encode() not in line:
        raise CheckFailed(f"expected a greeting containing {args.str('word')!r}, got {line!r}")


def broken(ctx, args):
    return 1 / 0
'''


@pytest.fixture
def call_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A module of check functions, importable under a name unique to this test."""
    name = "stepcall_" + re.sub(r"\W", "_", tmp_path.name)
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / f"{name}.py").write_text(CALL_MODULE)
    monkeypatch.syspath_prepend(str(lib))
    yield name
    sys.modules.pop(name, None)


def test_call_runs_a_python_function(tmp_path: Path, call_module: str) -> None:
    spec = write_spec(tmp_path, f"""
        - id: polite
          steps:
            - connect: {{}}
            - call: {{function: "{call_module}.greeting_is_polite", args: {{word: please, timeout: 3}}}}
        - id: very-polite
          steps:
            - connect: {{as: other}}
            - call: {{function: "{call_module}:greeting_is_polite", args: {{conn: other, word: kindly}}}}
        - id: broken
          steps:
            - call: {{function: "{call_module}.broken"}}
        """)
    sub = py_prog(tmp_path / "sub", """
        def handler(conn):
            with conn:
                conn.sendall(b"hello, please come in\\n")

        serve_threaded(handler)
        """)
    g = run_grade(spec, sub)
    assert g.outcomes == {"polite": "passed", "very-polite": "failed", "broken": "error"}, g.explain()
    assert g.messages["very-polite"] == "expected a greeting containing 'kindly', got b'hello, please come in\\n'"
    assert "judged the greeting" in g.result.checks[1].transcript
    assert g.messages["broken"] == "internal error: ZeroDivisionError: division by zero"


# -- pause ---------------------------------------------------------------------------------------------------

PAUSE_SPEC = """
- id: slow-client
  category: robustness
  steps:
    - connect: {}
    - send: {text: "hel"}
    - pause: {seconds: 0.5}
    - send: {text: "lo\\n"}
    - expect_bytes: {echo: true, timeout: 3}
"""


def test_pause_is_waited_out_by_a_patient_server(tmp_path: Path) -> None:
    sub = py_prog(tmp_path / "sub", "serve_threaded(lambda conn: (conn.sendall(recv_line(conn)), conn.close()))\n")
    g = run_grade(write_spec(tmp_path, PAUSE_SPEC), sub)
    assert g.outcomes == {"slow-client": "passed"}, g.explain()
    assert g.result.checks[0].duration_s >= 0.5


def test_pause_fails_an_impatient_server(tmp_path: Path) -> None:
    sub = py_prog(tmp_path / "sub", """
        def handler(conn):
            with conn:
                conn.settimeout(0.1)          # the bug: gives up on a client that pauses
                try:
                    conn.sendall(recv_line(conn))
                except socket.timeout:
                    pass

        serve_threaded(handler)
        """)
    g = run_grade(write_spec(tmp_path, PAUSE_SPEC), sub)
    assert g.outcomes == {"slow-client": "failed"}, g.explain()
    msg = g.messages["slow-client"]
    assert msg.startswith("expected 6 bytes, got 0: the connection was "), msg


def test_pause_ends_at_the_check_deadline(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, """
        - id: long-pause
          timeout: 0.3
          steps:
            - pause: {seconds: 30}
        """)
    g = run_grade(spec, py_prog(tmp_path / "sub", "serve_threaded(echo)\n"))
    assert g.outcomes == {"long-pause": "passed"}, g.explain()
    assert 0.25 <= g.result.checks[0].duration_s < 2


# -- short_io ------------------------------------------------------------------------------------------------

REPLY_5000 = """
def handler(conn):
    with conn:
        recv_line(conn)
        SEND(conn, b"x" * 5000)

serve_threaded(handler)
"""

SHORT_IO_SPEC = """
- id: plain
  category: partial-io
  steps:
    - connect: {}
    - send: {text: "go\\n"}
    - expect_bytes: {length: 5000, eof: true, timeout: 3}
- id: short
  category: partial-io
  short_io: {max: 7}
  steps:
    - connect: {}
    - send: {text: "go\\n"}
    - expect_bytes: {length: 5000, eof: true, timeout: 3}
"""


def test_short_io_passes_a_server_using_sendall(tmp_path: Path) -> None:
    sub = py_prog(tmp_path / "sub", "SEND = lambda conn, data: conn.sendall(data)\n" + REPLY_5000)
    g = run_grade(write_spec(tmp_path, SHORT_IO_SPEC), sub)
    assert g.outcomes == {"plain": "passed", "short": "passed"}, g.explain()


def test_short_io_fails_a_server_ignoring_sends_return_value(tmp_path: Path) -> None:
    sub = py_prog(tmp_path / "sub", "SEND = lambda conn, data: conn.send(data)\n" + REPLY_5000)
    spec = write_spec(tmp_path, SHORT_IO_SPEC)
    for seed in (1, 2, 3):
        g = run_grade(spec, sub, seed=seed)
        assert g.outcomes == {"plain": "passed", "short": "failed"}, g.explain()
        msg = g.messages["short"]
        assert re.fullmatch(r"expected 5000 bytes, got [1-7]: the connection was closed by the peer \(FIN\); "
                            r"received x{1,7}", msg), msg
        assert "short reads/writes of at most 7 bytes" in g.result.checks[1].transcript


SENDING_CLIENT = """
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
SEND(s, b"GET /index.html HTTP/1.0\\r\\nHost: " + sys.argv[1].encode() + b"\\r\\n\\r\\n")
while s.recv(4096):
    pass
"""

CLIENT_SHORT_IO_SPEC = """
- id: short-client
  category: partial-io
  short_io: {max: 5}
  steps:
    - listen: {}
    - start: {}
    - accept: {timeout: 3}
    - expect_request: {method: GET, target: /index.html, timeout: 1}
    - respond: {status: 200, body_text: "ok"}
    - expect_exit: {code: 0, timeout: 3}
"""


@pytest.mark.parametrize(
    ("send", "outcome"),
    [("lambda s, data: s.sendall(data)", "passed"), ("lambda s, data: s.send(data)", "failed")],
    ids=["sendall", "send"],
)
def test_short_io_applies_to_client_programs(tmp_path: Path, send: str, outcome: str) -> None:
    spec = write_spec(tmp_path, CLIENT_SHORT_IO_SPEC, run="./prog {host} {port}", ready="none")
    sub = py_prog(tmp_path / "sub", f"SEND = {send}\n" + SENDING_CLIENT, prelude=CLIENT_PRELUDE)
    g = run_grade(spec, sub)
    assert g.outcomes == {"short-client": outcome}, g.explain()
    if outcome == "failed":
        msg = g.messages["short-client"]
        assert re.fullmatch(r"expected a complete HTTP request head ending in a blank line, got G[ET /]{0,4}; "
                            r"nothing more arrived before the deadline", msg), msg
