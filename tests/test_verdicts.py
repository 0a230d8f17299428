"""Verdicts that hold on real software (issue 8): fault injection never forges what Linux cannot, so programs
are judged by what they do, blocking or not.

Each test grades a small real program with a shipped spec over loopback and asserts exactly which checks fail.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from progs import CLIENT_PRELUDE, c_prog, py_prog, run_grade, write_spec

from grader import catalog
from grader.engine.runner import Options, grade
from grader.engine.supervisor import READY_GRACE_S
from grader.spec.loader import load_spec

PARTIAL_READS = ("split-request-line", "split-blank-line", "every-byte", "short-reads")

# A non-blocking server that still assumes one recv() returns the whole request: the preload leaves its
# non-blocking reads alone, so the fragments the harness sends (each only once the previous one was read) are
# what catch it, every time.
PY_NONBLOCKING_ONE_RECV = r'''
import selectors, socket, sys
docroot = sys.argv[2]
sel = selectors.DefaultSelector()
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", int(sys.argv[1])))
srv.listen(16)
srv.setblocking(False)
sel.register(srv, selectors.EVENT_READ)
while True:
    for key, _ in sel.select():
        if key.fileobj is srv:
            conn, _ = srv.accept()
            conn.setblocking(False)
            sel.register(conn, selectors.EVENT_READ)
            continue
        conn = key.fileobj
        sel.unregister(conn)
        data = conn.recv(4096)  # the bug: one recv() taken for the whole request
        parts = data.split(b"\r\n")[0].split(b" ")
        if len(parts) == 3 and parts[0] == b"GET" and data.endswith(b"\r\n\r\n"):
            body = open(docroot + parts[1].decode(), "rb").read()
            reply = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        else:
            reply = b"HTTP/1.0 400 Bad Request\r\nContent-Length: 0\r\n\r\n"
        conn.setblocking(True)
        conn.sendall(reply)
        conn.close()
'''

C_NONBLOCKING_ONE_RECV = r'''
#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    struct sockaddr_in a;
    int one = 1, lfd = socket(AF_INET, SOCK_STREAM, 0);
    (void)argc;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)atoi(argv[1]));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lfd, (struct sockaddr *)&a, sizeof a) || listen(lfd, 16))
        return 1;
    for (;;) {
        char buf[4096], target[2001], path[4200], body[8192];
        struct pollfd p;
        int fd = accept(lfd, NULL, NULL), file;
        ssize_t n, len = 0;
        if (fd < 0)
            continue;
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        p.fd = fd;
        p.events = POLLIN;
        poll(&p, 1, 5000);
        n = recv(fd, buf, sizeof buf - 1, 0); /* the bug: one recv() taken for the whole request */
        buf[n > 0 ? n : 0] = '\0';
        if (sscanf(buf, "GET %2000s HTTP/1.", target) == 1 && strstr(buf, "\r\n\r\n") != NULL) {
            snprintf(path, sizeof path, "%.2000s%s", argv[2], target);
            file = open(path, O_RDONLY);
            if (file >= 0) {
                len = read(file, body, sizeof body);
                close(file);
            }
            dprintf(fd, "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %zd\r\n\r\n", len);
            fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
            for (ssize_t off = 0; off < len;) {
                ssize_t w = send(fd, body + off, (size_t)(len - off), 0);
                if (w <= 0)
                    break;
                off += w;
            }
        } else {
            dprintf(fd, "HTTP/1.0 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        }
        close(fd);
    }
}
'''


@pytest.mark.usefixtures("no_leftover_processes")
@pytest.mark.parametrize("language", ["python", "c"])
def test_non_blocking_one_recv_server_still_fails(tmp_path: Path, language: str) -> None:
    if language == "python":
        folder = py_prog(tmp_path / "sub", PY_NONBLOCKING_ONE_RECV, prelude="")
    else:
        folder = c_prog(tmp_path / "sub", C_NONBLOCKING_ONE_RECV)
    spec = load_spec(catalog.resolve("http-server"))
    for seed in (1, 2):
        result = grade(spec, folder, Options(run="./prog {port} {docroot}", build="", seed=seed, only=PARTIAL_READS))
        failed = {c.id for c in result.checks if c.outcome != "passed"}
        # short-reads forges short counts on blocking reads only: this program's read is non-blocking, and the
        # fragments of the other checks are what a real network gives it.
        assert failed == {"split-request-line", "split-blank-line", "every-byte"}, [
            (c.id, c.message) for c in result.checks
        ]


# A Python server whose sockets have a timeout (so they are non-blocking inside, and the preload leaves them
# alone) and that sends each response with one conn.send(), ignoring its count. On the small window of
# short-writes the kernel's own send() comes back short, every time. (Whether large-file's fast reader takes
# 3 MB in one call is up to the kernel's timing, so that check is left out here.)
PY_TIMEOUT_ONE_SEND = r'''
import os, socket, sys, threading
docroot = sys.argv[2]

def handle(conn):
    with conn:
        conn.settimeout(10)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                return
            data += chunk
        target = data.split(b" ")[1].decode()
        with open(os.path.join(docroot, target.lstrip("/")), "rb") as f:
            body = f.read()
        conn.send(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        conn.shutdown(socket.SHUT_WR)
        while conn.recv(4096):
            pass

srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", int(sys.argv[1])))
srv.listen(16)
while True:
    threading.Thread(target=handle, args=(srv.accept()[0],), daemon=True).start()
'''


@pytest.mark.usefixtures("no_leftover_processes")
def test_non_blocking_ignored_send_count_still_fails(tmp_path: Path) -> None:
    folder = py_prog(tmp_path / "sub", PY_TIMEOUT_ONE_SEND, prelude="")
    spec = load_spec(catalog.resolve("http-server"))
    only = ("type-text", "short-writes")
    for seed in (1, 2):
        result = grade(spec, folder, Options(run="./prog {port} {docroot}", build="", seed=seed, only=only))
        failed = {c.id for c in result.checks if c.outcome != "passed"}
        assert failed == {"short-writes"}, [(c.id, c.message) for c in result.checks]


# Partial credit: a server up on some of the spec's sockets is graded; the checks needing a missing one fail
# with their own message, the others run. Exit 3 only when nothing starts.
PARTIAL_CHECKS = """
- id: over-tcp
  fresh: true
  steps:
    - connect: {}
    - send: {text: "ping"}
    - expect_bytes: {echo: true, timeout: 3}
- id: over-udp
  fresh: true
  steps:
    - udp_send: {sock: u, text: "ping"}
    - udp_expect: {sock: u, echo: true, timeout: 3}
"""
PY_TCP_ECHO = r'''
import socket, sys, threading
BIND = sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1"
PORT = int(sys.argv[1]) if BIND != "wrong-port" else 0
family = socket.AF_INET6 if ":" in BIND else socket.AF_INET
s = socket.socket(family, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1" if BIND == "wrong-port" else BIND, PORT))
s.listen(8)
def echo(c):
    with c:
        while data := c.recv(4096):
            c.sendall(data)
while True:
    threading.Thread(target=echo, args=(s.accept()[0],), daemon=True).start()
'''


@pytest.mark.usefixtures("no_leftover_processes")
@pytest.mark.parametrize(
    ("bind", "udp_says", "tcp_says"),
    [
        ("127.0.0.1", "it never opened a UDP socket on port", None),
        ("::1", "it never opened a UDP socket on port", "at [::1] only, which the harness, at 127.0.0.1, does not"),
        ("wrong-port", "it never opened a UDP socket on port", "instead of"),
    ],
)
def test_partial_credit(tmp_path: Path, bind: str, udp_says: str, tcp_says: str | None) -> None:
    spec = write_spec(tmp_path / "spec", PARTIAL_CHECKS, run=f"./prog {{port}} {bind}", ready=["tcp", "udp"])
    sub = py_prog(tmp_path / "sub", PY_TCP_ECHO, prelude="")
    t0 = time.monotonic()
    result = grade(load_spec(spec), sub, Options(seed=1))
    assert result.status == "graded", result.status_message
    by_id = {c.id: c for c in result.checks}
    assert udp_says in by_id["over-udp"].message and by_id["over-udp"].outcome == "failed"
    if tcp_says is None:
        assert by_id["over-tcp"].outcome == "passed", by_id["over-tcp"].message
    else:
        assert tcp_says in by_id["over-tcp"].message and by_id["over-tcp"].outcome == "failed"
    # The grace for the missing socket is waited once, at the first start; not the whole ready_timeout, and
    # not again at each fresh start.
    assert time.monotonic() - t0 < 2 * READY_GRACE_S + 3


@pytest.mark.usefixtures("no_leftover_processes")
def test_nothing_up_is_not_graded(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "spec", PARTIAL_CHECKS, run="./prog", ready=["tcp", "udp"])
    sub = py_prog(tmp_path / "sub", "import time\ntime.sleep(30)\n", prelude="")
    result = grade(load_spec(spec), sub, Options(seed=1))
    assert result.status == "start-failed" and result.exit_code == 3
    assert "did not listen on TCP/UDP port" in result.status_message


# Causes are named, and blamed on the check that caused them.
CAUSE_CHECKS = """
- id: leaves
  steps:
    - connect: {}
    - send: {text: "half a request", wait_read: true}
- id: next
  steps:
    - connect: {}
    - send: {text: "ping\\n"}
    - expect_bytes: {echo: true, timeout: 3}
"""
# Echoes lines; a client that leaves mid-line makes it raise (uncaught, in the main thread): the harness's own
# close at the end of 'leaves' kills it, whatever the timing.
PY_DIES_ON_EOF = r'''
s = listener()
while True:
    conn, _ = s.accept()
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(4096)
        if not chunk:
            raise ValueError(f"client left in the middle of a line: {data!r}")
        data += chunk
    conn.sendall(data)
    conn.close()
'''


@pytest.mark.usefixtures("no_leftover_processes")
def test_death_after_a_check_is_that_checks(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "spec", CAUSE_CHECKS)
    sub = py_prog(tmp_path / "sub", PY_DIES_ON_EOF)
    for seed in (1, 2, 3):
        graded = run_grade(spec, sub, seed=seed)
        assert graded.outcomes == {"leaves": "failed", "next": "passed"}, graded.explain()
        assert graded.messages["leaves"].startswith(
            "the server exited with status 1 (uncaught ValueError: client left in the middle of a line: "
            "b'half a request') during this check"), graded.messages["leaves"]


DURING_CHECKS = """
- id: crash
  steps:
    - connect: {}
    - send: {text: "boom\\n"}
    - expect_bytes: {echo: true, timeout: 3}
"""


@pytest.mark.usefixtures("no_leftover_processes")
@pytest.mark.parametrize(("how", "cause"), [
    ("os.kill(os.getpid(), signal.SIGSEGV)", "the server was killed by SIGSEGV (signal 11) during this check: "),
    ("raise KeyError('boom')", "the server exited with status 1 (uncaught KeyError: 'boom') during this check: "),
])
def test_death_during_a_check_leads_the_message(tmp_path: Path, how: str, cause: str) -> None:
    spec = write_spec(tmp_path / "spec", DURING_CHECKS)
    sub = py_prog(tmp_path / "sub", f"""
        s = listener()
        conn, _ = s.accept()
        conn.recv(100)
        {how}
    """)
    graded = run_grade(spec, sub)
    message = graded.messages["crash"]
    assert message.startswith(cause) and "expected 5 bytes, got 0" in message, message


@pytest.mark.usefixtures("no_leftover_processes")
def test_client_crash_leads_the_message(tmp_path: Path) -> None:
    checks = """
    - id: client-crash
      steps:
        - listen: {as: srv}
        - start: {listener: srv}
        - accept: {listener: srv, as: c, timeout: 5}
        - echo_serve: {conn: c, timeout: 5}
        - expect_exit: {code: 0, timeout: 5}
    """
    spec = write_spec(tmp_path / "spec", checks, run="./prog {host} {port}", ready="none")
    sub = py_prog(tmp_path / "sub", """
        s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
        s.sendall(b"hello")
        s.shutdown(socket.SHUT_WR)
        data = s.recv(100)
        raise ConnectionError("gave up after " + repr(data))
    """, prelude=CLIENT_PRELUDE)
    graded = run_grade(spec, sub)
    message = graded.messages["client-crash"]
    assert message.startswith("the client exited with status 1 (uncaught ConnectionError: gave up after b'hello'): "), (
        message)


ECHO_CLIENT_CHECK = """
- id: echo
  timeout: 10
  steps:
    - listen: {as: srv}
    - start: {listener: srv, stdin_text: "hello, echo\\n"}
    - accept: {listener: srv, as: c, timeout: 5}
    - echo_serve: {conn: c, timeout: 5}
    - expect_exit: {code: 0, timeout: 5}
    - expect_stdout: {stdin_echo: true}
"""


@pytest.mark.usefixtures("no_leftover_processes")
def test_echo_serve_waits_a_bounded_time_for_a_client_that_never_waits(tmp_path: Path) -> None:
    # A client that polls a non-blocking socket in a busy loop is never seen waiting: echo_serve reads anyway,
    # after CLIENT_WAIT_S, and the correct client passes.
    spec = write_spec(tmp_path / "spec", ECHO_CLIENT_CHECK, run="./prog {host} {port}", ready="none")
    sub = py_prog(tmp_path / "sub", """
        data = sys.stdin.buffer.read()
        s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
        s.sendall(data)
        s.setblocking(False)
        got, deadline = b"", time.monotonic() + 8
        while len(got) < len(data) and time.monotonic() < deadline:
            try:
                got += s.recv(4096)
            except BlockingIOError:
                pass
        sys.stdout.buffer.write(got)
    """, prelude=CLIENT_PRELUDE)
    graded = run_grade(spec, sub)
    assert graded.outcomes == {"echo": "passed"}, graded.explain()
