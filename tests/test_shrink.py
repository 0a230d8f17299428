"""The smallest failing case: the shipped one-recv fixtures, and a server that fails only on one split."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import pytest
from progs import py_prog, write_spec

from grader import catalog
from grader.engine.feedback import FeedbackOptions
from grader.engine.runner import Options, grade
from grader.engine.shrink import BUDGET_S, where
from grader.report.jsonout import to_json
from grader.report.model import RunResult
from grader.spec.loader import load_spec

pytestmark = pytest.mark.usefixtures("no_leftover_processes", "direct_python")

FIXTURES = catalog.LABS_DIR / "fixtures"
SHRINK = FeedbackOptions(shrink=True)


def _grade(lab: str, fixture: str, *only: str, seed: int = 5) -> dict[str, str]:
    run = grade(load_spec(catalog.resolve(lab)), FIXTURES / lab / fixture, Options(seed=seed, only=only,
                                                                                   feedback=SHRINK))
    # the JSON report reads back into the same result, the smallest case included
    assert RunResult.from_dict(json.loads(to_json(run))) == replace(run, duration_s=round(run.duration_s, 3))
    out = {}
    for c in run.checks:
        assert c.outcome == "failed", c
        assert c.smallest is not None, c
        out[c.id] = c.smallest.summary
    return out


def test_where_a_cut_falls() -> None:
    req = b"GET /hello.txt HTTP/1.0\r\nHost: x\r\n\r\n"
    assert where(req, 1) == "inside the method `GET` of the request line"
    assert where(req, 3) == "right after the method `GET` of the request line"
    assert where(req, 7) == "inside the target `/hello.txt` of the request line"
    assert where(req, 24) == "inside the CRLF of the request line"
    assert where(req, 25) == "right before the Host header line"
    assert where(req, 35) == "inside the CRLF of the blank line that ends the head"
    assert where(b"abcdef\n", 2) == "inside the message, between `ab` and `cdef\\n`"
    resp = b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello"
    assert where(resp, 10) == "inside the status code `200` of the status line"
    assert where(resp, 20) == "inside the Content-Length header line"
    assert where(resp, 40) == "after byte 2 of the body"


def test_one_recv_http_server_fails_on_the_first_split() -> None:
    found = _grade("http-server", "c-one-recv", "split-request-line", "every-byte", "short-reads")
    split = ("fails when the request arrives in 2 pieces split after byte 1 "
             "(inside the method `GET` of the request line)")
    assert found["split-request-line"] == split
    assert found["every-byte"] == split
    # one recv() of up to 16 bytes cannot hold the request line: the mildest schedule that still fails
    assert found["short-reads"] == ("fails when each recv()/read() returns at most 16 bytes "
                                    "(writes not shortened, no EINTR)")
    # deterministic: the same seed gives the same answer
    assert _grade("http-server", "c-one-recv", "short-reads") == {"short-reads": found["short-reads"]}


def test_one_recv_http_client_fails_on_the_first_split_of_the_response() -> None:
    found = _grade("http-client", "c-one-recv", "dribbled-response")
    assert found == {"dribbled-response": "fails when the response arrives in 2 pieces split after byte 1 "
                                          "(inside the version `HTTP/1.0` of the status line)"}


def test_one_shot_echo_server_fails_on_the_first_split() -> None:
    found = _grade("tcp-echo-server", "c-one-shot", "echo-fragmented")
    assert found["echo-fragmented"].startswith("fails when the message arrives in 2 pieces split after byte 1 ")


# A server that mishandles only a chunk that ends inside the CRLF: the search must pass over every earlier split.
CR_SERVER = """
def handle(conn):
    with conn:
        data = b""
        while b"\\r\\n\\r\\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                return
            if chunk.endswith(b"\\r"):
                conn.sendall(b"HTTP/1.0 400 Bad Request\\r\\n\\r\\n")   # the bug: a lone CR ends the line
                return
            data += chunk
        conn.sendall(b"HTTP/1.0 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nok")

serve_threaded(handle)
"""

CHECKS = """
- id: split-request
  steps:
    - connect: {}
    - send: {text: "GET /hello.txt HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n", split: [3, crlf, 30]}
    - expect_bytes: {text: "HTTP/1.0 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nok", timeout: 3}
- id: whole
  steps:
    - connect: {}
    - send: {text: "GET /hello.txt HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n", split: [3, 30]}
    - expect_bytes: {text: "HTTP/1.0 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nok", timeout: 3}
"""


def test_a_split_inside_the_crlf_is_found_and_named(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, CHECKS)
    sub = py_prog(tmp_path / "sub", CR_SERVER)
    run = grade(load_spec(spec), sub, Options(seed=3, feedback=SHRINK))
    by_id = {c.id: c for c in run.checks}
    assert by_id["whole"].outcome == "passed" and by_id["whole"].smallest is None
    failed = by_id["split-request"]
    assert failed.outcome == "failed" and failed.smallest is not None
    assert failed.smallest.summary == ("fails when the request arrives in 2 pieces split after byte 24 "
                                       "(inside the CRLF of the request line)")
    assert failed.smallest.trials == 25  # whole, then the 23 splits after bytes 1..23 pass, then 24 fails
    assert failed.smallest.pieces == ("GET /hello.txt HTTP/1.0\\r", "\\nHost: x\\r\\n\\r\\n")


# A server that fails only when the head takes four recv() calls or more; DELAY slows every answer down.
FOUR_CHUNKS = """
DELAY = float(os.environ.get("DELAY", "0"))

def handle(conn):
    with conn:
        data, chunks = b"", 0
        while b"\\r\\n\\r\\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                return
            data, chunks = data + chunk, chunks + 1
        time.sleep(DELAY)
        if chunks >= 4:
            conn.sendall(b"HTTP/1.0 400 Bad Request\\r\\n\\r\\n")
        else:
            conn.sendall(b"HTTP/1.0 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nok")

serve_threaded(handle)
"""


def test_the_checks_own_fragments_when_nothing_smaller_fails(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, CHECKS)
    run = grade(load_spec(spec), py_prog(tmp_path / "sub", FOUR_CHUNKS),
                Options(seed=3, only=("split-request",), feedback=SHRINK))
    [c] = run.checks
    assert c.outcome == "failed" and c.smallest is not None
    assert c.smallest.summary == (
        "fails when the request arrives in 4 pieces split after bytes 3, 24 and 30 (after byte 3: right after "
        "the method `GET` of the request line; after byte 24: inside the CRLF of the request line; after byte 30: "
        "inside the Host header line)")
    assert c.smallest.trials == 1 + 35 + 3 + 1  # whole, 35 two-piece splits, 3 three-piece ones, then all four


def test_the_search_is_bounded_in_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DELAY", "0.2")  # 40 variations of 0.2 s each would take 8 s
    spec = write_spec(tmp_path, CHECKS)
    t0 = time.monotonic()
    run = grade(load_spec(spec), py_prog(tmp_path / "sub", FOUR_CHUNKS),
                Options(seed=3, only=("split-request",), feedback=SHRINK))
    [c] = run.checks
    assert c.outcome == "failed" and c.smallest is not None
    assert time.monotonic() - t0 < BUDGET_S + 3
    assert c.smallest.summary.startswith(f"no smaller failing case found within the search's budget ({BUDGET_S:g}s, ")


ALWAYS_WRONG = """
def handle(conn):
    with conn:
        recv_line(conn)
        conn.sendall(b"HTTP/1.0 500 Oops\\r\\n\\r\\n")

serve_threaded(handle)
"""


def test_a_failure_that_needs_no_fault_injection_is_said_so(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, """
        - id: split
          steps:
            - connect: {}
            - send: {text: "GET / HTTP/1.0\\r\\n\\r\\n", split: [3, 9]}
            - expect_bytes: {text: "HTTP/1.0 200 OK\\r\\n", timeout: 3}
        - id: short
          short_io: {max: 2}
          steps:
            - connect: {}
            - send: {text: "GET / HTTP/1.0\\r\\n\\r\\n"}
            - expect_bytes: {text: "HTTP/1.0 200 OK\\r\\n", timeout: 3}
        """)
    run = grade(load_spec(spec), py_prog(tmp_path / "sub", ALWAYS_WRONG), Options(seed=2, feedback=SHRINK))
    found = {c.id: (c.outcome, c.smallest.summary if c.smallest else "", c.smallest.trials if c.smallest else 0)
             for c in run.checks}
    assert found == {
        "split": ("failed", "fails even when the request arrives whole, in one piece: the failure does not need "
                  "the fragments", 1),
        "short": ("failed", "fails even without the injected short reads and writes: the failure does not need "
                  "them (the kernel's own partial transfers, or another fault, are enough)", 1),
    }


def test_replaying_one_check_with_its_seed_gives_the_same_smallest_case() -> None:
    spec = load_spec(catalog.resolve("http-server"))
    fixture = FIXTURES / "http-server" / "c-one-recv"
    full = grade(spec, fixture, Options(seed=7, feedback=SHRINK))
    found = {c.id: c.smallest for c in full.checks if c.outcome == "failed"}
    assert sorted(found) == ["every-byte", "short-reads", "split-request-line"]
    for check_id, smallest in found.items():
        replay = grade(spec, fixture, Options(seed=7, only=(check_id,), feedback=SHRINK))
        assert replay.checks[0].smallest == smallest, check_id


def test_random_bytes_are_described_by_their_length_only(tmp_path: Path) -> None:
    from grader.engine.shrink import describe_split, split_sites

    spec = load_spec(write_spec(tmp_path, """
        - id: random
          steps:
            - connect: {}
            - send: {size: 100, split: [middle, 90]}
            - send: {text: "GET / HTTP/1.0\\r\\n\\r\\n", split: [crlf]}
        """))
    random_site, text_site = split_sites(spec.checks[0], spec.directory)
    assert (random_site.exact, random_site.cuts, text_site.exact, text_site.cuts) == (False, (50, 90), True, (15,))
    assert describe_split(random_site, (7,), several=True) == (
        f"fails when the message (the send at line {random_site.step.where.line}) arrives in 2 pieces split after "
        "byte 7 (of 100 random bytes)")
    assert describe_split(text_site, (15,), several=False) == (
        "fails when the request arrives in 2 pieces split after byte 15 (inside the CRLF of the request line)")
