"""The harness as the server of a client program: listen, start, accept, expect_request, respond, echo_serve,
and the client's exit status and outputs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from progs import CLIENT_PRELUDE, py_prog, run_grade, write_spec

from grader.driver import netns

pytestmark = pytest.mark.usefixtures("no_leftover_processes", "direct_python")

PAGE = b"<html><body>a page of moderate length, long enough to be cut in pieces</body></html>\n"
assert len(PAGE) == 85

# An HTTP/1.0 client: ./prog URL OUTFILE. Writes the body to OUTFILE and stdout on 200; on another status says
# so on stderr and exits 1. The constants switch on the classic mistakes.
HTTP_CLIENT = """
def main():
    url, outfile = sys.argv[1], sys.argv[2]
    hostport, _, path = url[len("http://"):].partition("/")
    host, colon, port = hostport.rpartition(":")
    if not colon:
        host, port = hostport, "80"
    try:
        s = socket.create_connection((host, int(port)))
    except OSError as e:
        if SILENT_ERRORS:
            sys.exit(0)                               # the bug: failure reported as success
        sys.exit(f"client: cannot connect to {host}:{port}: {e.strerror}")
    lines = [f"GET /{path} HTTP/1.0"] + ([f"Host: {hostport}"] if HOST_HEADER else [])
    s.sendall((EOL.join(lines) + EOL + EOL).encode())
    if ONE_RECV:
        data = s.recv(65536)                          # the bug: one recv() for the whole response
    else:
        data = b""
        while b"\\r\\n\\r\\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\\r\\n\\r\\n")
    headers = dict(line.split(": ", 1) for line in head.decode().split("\\r\\n")[1:])
    if USE_CONTENT_LENGTH:
        length = int(headers["Content-Length"])       # the bug: crashes when there is none
        while len(body) < length:
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk
    elif not ONE_RECV:
        while True:                                   # read until the server closes
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk
    status = int(head.split()[1])
    if status != 200:
        if SILENT_ERRORS:
            sys.exit(0)
        sys.exit(f"client: the server answered {status}")
    with open(outfile, "wb") as f:
        f.write(body)
    sys.stdout.buffer.write(body)

main()
"""

DEFAULTS = {"HOST_HEADER": True, "EOL": "\r\n", "ONE_RECV": False, "USE_CONTENT_LENGTH": False,
            "SILENT_ERRORS": False}


def http_client(folder: Path, **bugs: object) -> Path:
    consts = "".join(f"{k} = {v!r}\n" for k, v in {**DEFAULTS, **bugs}.items())
    return py_prog(folder, consts + HTTP_CLIENT, prelude=CLIENT_PRELUDE)


def client_spec(folder: Path, checks: str) -> Path:
    return write_spec(folder, checks, run="./prog {url} {outfile}", ready="none", files={"files/page.html": PAGE})


# -- listen / start / accept / expect_request ----------------------------------------------------------------

REQUEST_SPEC = """
- id: request
  steps:
    - listen: {}
    - start: {url_path: /page.html}
    - accept: {timeout: 3}
    - expect_request: {method: GET, target: /page.html, host: true, crlf: true, timeout: 3}
    - respond: {status: 200, body_file: files/page.html}
    - expect_exit: {code: 0, timeout: 3}
"""


def test_expect_request_passes_a_correct_client(tmp_path: Path) -> None:
    g = run_grade(client_spec(tmp_path, REQUEST_SPEC), http_client(tmp_path / "sub"))
    assert g.outcomes == {"request": "passed"}, g.explain()


def test_expect_request_missing_host_fails(tmp_path: Path) -> None:
    g = run_grade(client_spec(tmp_path, REQUEST_SPEC), http_client(tmp_path / "sub", HOST_HEADER=False))
    assert g.outcomes == {"request": "failed"}, g.explain()
    assert g.messages["request"] == "expected a Host header, got none"


def test_expect_request_bare_lf_fails(tmp_path: Path) -> None:
    g = run_grade(client_spec(tmp_path, REQUEST_SPEC), http_client(tmp_path / "sub", EOL="\n"))
    assert g.outcomes == {"request": "failed"}, g.explain()
    msg = g.messages["request"]
    assert msg.startswith("HTTP lines must end with \\r\\n"), msg
    assert "\\r\\n" in g.hints["request"]


def test_accept_fails_early_when_the_client_never_connects(tmp_path: Path) -> None:
    sub = py_prog(tmp_path / "sub", """
        sys.exit("client: usage: prog HOST PORT")      # the bug: wrong arguments expected
        """, prelude=CLIENT_PRELUDE)
    g = run_grade(client_spec(tmp_path, REQUEST_SPEC), sub)
    assert g.outcomes == {"request": "failed"}, g.explain()
    assert g.messages["request"] == ("the program never connected: it exited with status 1; stderr: client: usage: "
                                     "prog HOST PORT")
    assert g.result.checks[0].duration_s < 2.5  # it did not wait for the whole accept timeout


def test_expect_request_target(tmp_path: Path) -> None:
    spec = client_spec(tmp_path, """
        - id: target
          steps:
            - listen: {}
            - start: {url_path: /other.html}
            - accept: {timeout: 3}
            - expect_request: {target: /page.html, timeout: 3}
        """)
    g = run_grade(spec, http_client(tmp_path / "sub"))
    assert g.outcomes == {"target": "failed"}, g.explain()
    assert g.messages["target"] == "expected request target /page.html, got /other.html"


# -- respond: split, content_length ------------------------------------------------------------------------

RESPOND_SPEC = """
- id: split
  category: partial-io
  steps:
    - listen: {}
    - start: {url_path: /page.html}
    - accept: {timeout: 3}
    - expect_request: {timeout: 3}
    - respond: {status: 200, body_file: files/page.html, split: [crlf, blank-line, {inside: "page"}], timeout: 3}
    - expect_exit: {code: 0, timeout: 3}
    - expect_outfile: {file: files/page.html}
- id: no-content-length
  steps:
    - listen: {}
    - start: {url_path: /page.html}
    - accept: {timeout: 3}
    - expect_request: {timeout: 3}
    - respond: {status: 200, body_file: files/page.html, content_length: false}
    - expect_exit: {code: 0, timeout: 3}
    - expect_stdout: {file: files/page.html}
"""


def test_respond_passes_a_client_that_reads_until_the_server_closes(tmp_path: Path) -> None:
    g = run_grade(client_spec(tmp_path, RESPOND_SPEC), http_client(tmp_path / "sub"))
    assert g.outcomes == {"split": "passed", "no-content-length": "passed"}, g.explain()


def test_respond_split_fails_a_one_recv_client_every_time(tmp_path: Path) -> None:
    spec = client_spec(tmp_path, RESPOND_SPEC)
    sub = http_client(tmp_path / "sub", ONE_RECV=True)
    for seed in (1, 2, 3):
        g = run_grade(spec, sub, seed=seed, only=("split",))
        assert g.outcomes == {"split": "failed"}, g.explain()
        msg = g.messages["split"]
        # It read only the first piece, "HTTP/1.0 200 OK\r": a status, but no body.
        assert msg.startswith("the output file differs from what was expected: lengths 85 vs 0; first difference "
                              "at byte 0: expected '<html>"), msg


def test_respond_without_content_length_fails_a_client_that_needs_it(tmp_path: Path) -> None:
    spec = client_spec(tmp_path, RESPOND_SPEC)
    g = run_grade(spec, http_client(tmp_path / "sub", USE_CONTENT_LENGTH=True))
    assert g.outcomes == {"split": "passed", "no-content-length": "failed"}, g.explain()
    msg = g.messages["no-content-length"]
    # The uncaught exception is the cause: it leads the message.
    assert msg.startswith("the client exited with status 1 (uncaught KeyError: 'Content-Length'): expected exit "
                          "status 0, got 1; stderr: "), msg


def test_respond_keeping_the_connection_open(tmp_path: Path) -> None:
    # With the connection left open, a client that waits for the server to close never finishes, while one that
    # reads Content-Length bytes does.
    spec = client_spec(tmp_path, """
        - id: keep-open
          steps:
            - listen: {}
            - start: {url_path: /page.html}
            - accept: {timeout: 3}
            - expect_request: {timeout: 3}
            - respond: {status: 200, body_file: files/page.html, close: false}
            - expect_exit: {code: 0, timeout: 3}
            - expect_stdout: {file: files/page.html}
        """)
    g = run_grade(spec, http_client(tmp_path / "good", USE_CONTENT_LENGTH=True))
    assert g.outcomes == {"keep-open": "passed"}, g.explain()
    g = run_grade(spec, http_client(tmp_path / "bad"))
    assert g.outcomes == {"keep-open": "failed"}, g.explain()
    assert g.messages["keep-open"] == "expected the program to exit, but it was still running after 3s"
    assert "killed it" in g.result.checks[0].transcript


# -- expect_exit, expect_stdout, expect_stderr, expect_outfile -----------------------------------------------

ERROR_SPEC = """
- id: not-found
  category: status-codes
  steps:
    - listen: {}
    - start: {url_path: /missing.html}
    - accept: {timeout: 3}
    - expect_request: {timeout: 3}
    - respond: {status: 404, body_text: "no such page\\n"}
    - expect_exit: {nonzero: true, timeout: 3}
    - expect_stderr: {nonempty: true}
    - expect_stderr: {regex: "404"}
    - expect_stdout: {empty: true}
    - expect_outfile: {absent: true}
- id: found
  steps:
    - listen: {}
    - start: {url_path: /page.html}
    - accept: {timeout: 3}
    - expect_request: {timeout: 3}
    - respond: {status: 200, body_file: files/page.html}
    - expect_exit: {code: 0, timeout: 3}
    - expect_stdout: {file: files/page.html}
    - expect_stderr: {empty: true}
    - expect_outfile: {file: files/page.html}
"""


def test_outputs_and_exit_status_of_a_correct_client(tmp_path: Path) -> None:
    g = run_grade(client_spec(tmp_path, ERROR_SPEC), http_client(tmp_path / "sub"))
    assert g.outcomes == {"not-found": "passed", "found": "passed"}, g.explain()


def test_a_client_that_hides_errors_fails(tmp_path: Path) -> None:
    g = run_grade(client_spec(tmp_path, ERROR_SPEC), http_client(tmp_path / "sub", SILENT_ERRORS=True))
    assert g.outcomes == {"not-found": "failed", "found": "passed"}, g.explain()
    assert g.messages["not-found"] == "expected a non-zero exit status (failure), got 0"


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        ("expect_exit: {code: 3, timeout: 3}", "expected exit status 3, got 0"),
        ("expect_stdout: {text: \"something else\"}", "standard output differs from what was expected: lengths "),
        ("expect_stdout: {empty: true}", "expected standard output to be empty, got <html>"),
        ("expect_stdout: {regex: \"^HTTP/\"}", "expected standard output matching /^HTTP//, got <html>"),
        ("expect_stderr: {nonempty: true}", "expected a message on standard error, got nothing"),
        ("expect_outfile: {absent: true}", f"expected nothing in the output file, got {len(PAGE)} bytes: <html>"),
        ("expect_outfile: {text: \"x\"}", "the output file differs from what was expected: lengths 1 vs"),
    ],
    ids=["code", "stdout-text", "stdout-empty", "stdout-regex", "stderr-nonempty", "outfile-absent",
         "outfile-text"],
)
def test_output_judgements_fail_with_what_was_seen(tmp_path: Path, step: str, expected: str) -> None:
    spec = client_spec(tmp_path, f"""
        - id: judged
          steps:
            - listen: {{}}
            - start: {{url_path: /page.html}}
            - accept: {{timeout: 3}}
            - expect_request: {{timeout: 3}}
            - respond: {{status: 200, body_file: files/page.html}}
            - {step}
        """)
    g = run_grade(spec, http_client(tmp_path / "sub"))
    assert g.outcomes == {"judged": "failed"}, g.explain()
    assert g.messages["judged"].startswith(expected), g.messages["judged"]


def test_expect_outfile_never_written(tmp_path: Path) -> None:
    spec = client_spec(tmp_path, """
        - id: judged
          steps:
            - listen: {}
            - start: {url_path: /page.html}
            - accept: {timeout: 3}
            - expect_request: {timeout: 3}
            - respond: {status: 200, body_file: files/page.html}
            - expect_outfile: {file: files/page.html}
        """)
    sub = py_prog(tmp_path / "sub", HTTP_CLIENT.replace('with open(outfile, "wb") as f:\n        f.write(body)',
                                                        "pass  # the bug: forgot to save"),
                  prelude=CLIENT_PRELUDE + "".join(f"{k} = {v!r}\n" for k, v in DEFAULTS.items()))
    g = run_grade(spec, sub)
    assert g.outcomes == {"judged": "failed"}, g.explain()
    assert g.messages["judged"] == "expected the output file, but it was never written"


# -- start refused -------------------------------------------------------------------------------------------

REFUSED_SPEC = """
- id: refused
  category: robustness
  steps:
    - start: {refused: true}
    - expect_exit: {nonzero: true, timeout: 3}
    - expect_stderr: {nonempty: true}
"""


def test_start_refused_a_client_that_reports_it_passes(tmp_path: Path) -> None:
    g = run_grade(client_spec(tmp_path, REFUSED_SPEC), http_client(tmp_path / "sub"))
    assert g.outcomes == {"refused": "passed"}, g.explain()


def test_start_refused_a_client_that_hides_it_fails(tmp_path: Path) -> None:
    g = run_grade(client_spec(tmp_path, REFUSED_SPEC), http_client(tmp_path / "sub", SILENT_ERRORS=True))
    assert g.outcomes == {"refused": "failed"}, g.explain()
    assert g.messages["refused"] == "expected a non-zero exit status (failure), got 0"


# -- start unknown_host and network: none ------------------------------------------------------------------

UNKNOWN_HOST_SPEC = """
- id: unknown
  category: robustness
  steps:
    - start: {unknown_host: true, url_path: /x}
    - expect_exit: {nonzero: true, timeout: 5}
    - expect_stderr: {nonempty: true}
"""


def test_start_unknown_host_a_client_that_reports_it_passes(tmp_path: Path) -> None:
    g = run_grade(client_spec(tmp_path, UNKNOWN_HOST_SPEC), http_client(tmp_path / "sub"))
    assert g.outcomes == {"unknown": "passed"}, g.explain()


def test_start_unknown_host_a_client_that_hides_it_fails(tmp_path: Path) -> None:
    g = run_grade(client_spec(tmp_path, UNKNOWN_HOST_SPEC), http_client(tmp_path / "sub", SILENT_ERRORS=True))
    assert g.outcomes == {"unknown": "failed"}, g.explain()
    assert g.messages["unknown"] == "expected a non-zero exit status (failure), got 0"
    assert "no-such-host.invalid" in g.result.checks[0].transcript


def test_network_none_leaves_the_client_only_a_loopback_interface(tmp_path: Path) -> None:
    # In its own network namespace the client sees one interface, lo, and cannot reach even the harness.
    spec = client_spec(tmp_path, """
        - id: isolated
          steps:
            - start: {network: none, url: "http://127.0.0.1:9/"}
            - expect_exit: {code: 0, timeout: 5}
            - expect_stdout: {regex: "^\\\\[\\\\(1, 'lo'\\\\)\\\\] unreachable\\\\n$"}
        """)
    sub = py_prog(tmp_path / "sub", """
        try:
            socket.create_connection(("127.0.0.1", 9), timeout=2)
            verdict = "reachable"
        except OSError:
            verdict = "unreachable"
        print(socket.if_nameindex(), verdict)
        """, prelude=CLIENT_PRELUDE)
    g = run_grade(spec, sub)
    assert g.outcomes == {"isolated": "passed"}, g.explain()


def test_already_isolated_asks_the_namespace() -> None:
    """Here (a machine with a network) it is not isolated; in a fresh network namespace it is."""
    assert not netns.already_isolated()
    code = "from grader.driver import netns; raise SystemExit(0 if netns.already_isolated() else 1)"
    done = subprocess.run([*netns.isolated_prefix(), sys.executable, "-c", code], timeout=30, check=False)
    assert done.returncode == 0


# -- echo_serve ----------------------------------------------------------------------------------------------

# ./prog HOST PORT: send standard input to an echo server, print what comes back.
ECHO_CLIENT = """
data = READ_STDIN()
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
s.sendall(data)
if SHUTDOWN:
    s.shutdown(socket.SHUT_WR)
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    sys.stdout.buffer.write(chunk)
"""

ECHO_SPEC = """
- id: echo
  category: partial-io
  steps:
    - listen: {}
    - start: {stdin_size: 20000}
    - accept: {timeout: 3}
    - echo_serve: {chunk: 4000, timeout: 1.5}
    - expect_exit: {code: 0, timeout: 3}
    - expect_stdout: {stdin_echo: true}
"""


@pytest.mark.parametrize(
    ("read_stdin", "shutdown", "outcome", "expected"),
    [
        ("sys.stdin.buffer.read", True, "passed", ""),
        ("lambda: sys.stdin.buffer.read(4096)", True, "failed",
         "the client closed the connection after sending only 4096 of the 20000 bytes it read from standard "
         "input"),
        ("sys.stdin.buffer.read", False, "failed",
         "the client sent all 20000 bytes and got them back, but then neither closed nor half-closed the "
         "connection: it waits for something that never comes"),
    ],
    ids=["correct", "reads-stdin-once", "never-half-closes"],
)
def test_echo_serve(tmp_path: Path, read_stdin: str, shutdown: bool, outcome: str, expected: str) -> None:
    spec = write_spec(tmp_path, ECHO_SPEC, run="./prog {host} {port}", ready="none")
    sub = py_prog(tmp_path / "sub", f"READ_STDIN = {read_stdin}\nSHUTDOWN = {shutdown}\n" + ECHO_CLIENT,
                  prelude=CLIENT_PRELUDE)
    g = run_grade(spec, sub)
    assert g.outcomes == {"echo": outcome}, g.explain()
    # (a note on how the client ended may follow, once it has exited)
    assert g.messages["echo"].startswith(expected) and (expected or not g.messages["echo"])


def test_echo_serve_chunks_wait_for_a_half_closed_client_to_read(tmp_path: Path) -> None:
    # The client half-closes, then takes its time before its one recv(). Its FIN says it will send nothing
    # more, not that it reads nothing more: each chunk must still wait until the client has read the last,
    # so the one recv() gets only the first chunk, every time (it once got them all when the FIN came first).
    spec = write_spec(tmp_path, """
        - id: chunked
          category: partial-io
          steps:
            - listen: {}
            - start: {stdin_text: "hello, echo\\nsecond line\\n"}
            - accept: {timeout: 3}
            - echo_serve: {chunk: 4, timeout: 5}
            - expect_exit: {code: 0, timeout: 3}
            - expect_stdout: {stdin_echo: true}
        """, run="./prog {host} {port}", ready="none")
    sub = py_prog(tmp_path / "sub", """
        data = sys.stdin.buffer.read()
        s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        time.sleep(0.3)                                   # busy elsewhere: the FIN is long there
        sys.stdout.buffer.write(s.recv(65536))            # the bug: one recv()
        """, prelude=CLIENT_PRELUDE)
    g = run_grade(spec, sub)
    assert g.outcomes == {"chunked": "failed"}, g.explain()
    assert g.messages["chunked"].startswith("standard output differs from what was expected: lengths 24 vs 4"), (
        g.explain()
    )
