"""The differential transcript: a failed check beside the same probe run against the reference program.

Real fixtures and real reference programs over loopback; nothing is mocked.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import xmlschema
import yaml

from grader import catalog
from grader.engine.differential import first_divergence, summary_line
from grader.engine.feedback import FeedbackOptions
from grader.engine.runner import Options, grade
from grader.engine.transcript import GRADER, PROGRAM, Transcript
from grader.report.jsonout import to_json
from grader.report.junit import to_junit
from grader.report.model import RunResult
from grader.spec.loader import load_spec

FIXTURES = catalog.LABS_DIR / "fixtures"
ROOT = Path(__file__).resolve().parent.parent
DIFF = FeedbackOptions(differential=True)


def _transcript(*events: tuple[str, str, bytes]) -> Transcript:
    t = Transcript()
    for kind, label, data in events:
        (t.sent if kind == "sent" else t.received)(label, data)
    return t


def test_first_divergence_prefers_what_the_programs_sent() -> None:
    ref = _transcript(("sent", "c", b"GET /x HTTP/1.0\r\n\r\n"), ("received", "c", b"HTTP/1.0 404 Not Found\r\n\r\n"))
    mine = _transcript(("sent", "c", b"GET /x HT"), ("received", "c", b"HTTP/1.0 200 OK\r\n\r\n"))
    d = first_divergence(ref.exchanges(), mine.exchanges())
    assert d is not None and (d.connection, d.direction, d.offset) == ("c", PROGRAM, 9)
    assert summary_line(d) == ("reference sent `HTTP/1.0 404 Not Found\\r\\n`, yours sent `HTTP/1.0 200 OK\\r\\n` "
                               "(connection c, byte 9); in all the reference sent 26 bytes, yours 19")


def test_no_divergence_when_the_bytes_agree_and_grader_side_when_only_it_differs() -> None:
    same = [("sent", "c", b"abc"), ("received", "c", b"abc")]
    assert first_divergence(_transcript(*same).exchanges(), _transcript(*same).exchanges()) is None
    ref = _transcript(("sent", "c", b"abcdef"), ("received", "c", b"abcdef"))
    mine = _transcript(("sent", "c", b"abc"), ("received", "c", b"abcdef"))
    d = first_divergence(ref.exchanges(), mine.exchanges())
    assert d is not None and (d.direction, d.offset) == (GRADER, 3)
    assert "stopped reading" in summary_line(d)


def test_exchanges_keep_every_byte_when_events_are_dropped() -> None:
    t = Transcript()
    for _ in range(1000):  # more events than the rendered transcript keeps
        t.sent("c", b"x")
    [ex] = t.exchanges()
    assert ex.data(GRADER) == b"x" * 1000 and ex.grader_total == 1000


def test_one_recv_server_beside_the_reference(tmp_path: Path) -> None:
    spec = load_spec(catalog.resolve("http-server"))
    run = grade(spec, FIXTURES / "http-server" / "c-one-recv",
                Options(seed=5, only=("split-request-line", "short-reads"), feedback=DIFF))
    for check in run.checks:
        assert check.outcome == "failed"
        d = check.differential
        assert d is not None, check
        assert d.reference_outcome == "passed"
        assert (d.connection, d.direction, d.offset) == ("c", "program", 9)
        assert d.summary.startswith("reference sent `HTTP/1.0 200 OK\\r\\n`, "
                                    "yours sent `HTTP/1.0 400 Bad Request\\r\\n`")
        assert "^ byte 9" in d.text and "same seed" in d.text
        assert len(d.text) < 3000
    # the one-recv server stopped reading: the grader could send it only part of the split request
    split = run.checks[0].differential
    assert split is not None and "yours         17 bytes: GET /hello.txt HT" in split.text
    data = json.loads(to_json(run))
    assert data["checks"][0]["differential"]["offset"] == 9
    assert RunResult.from_dict(data) == replace(run, duration_s=round(run.duration_s, 3))  # reads back, feedback too
    assert data["checks"][0]["differential"]["reference_bytes"].startswith("HTTP/1.0 200 OK")
    xml = to_junit(run)
    xsd = xmlschema.XMLSchema(str(ROOT / "tests" / "data" / "jenkins-junit.xsd"))
    xsd.validate(xml)
    assert "reference sent `HTTP/1.0 200 OK\\r\\n`, yours sent `HTTP/1.0 400 Bad Request\\r\\n`" in xml


def test_client_lab_compares_the_requests() -> None:
    spec = load_spec(catalog.resolve("http-client"))
    run = grade(spec, FIXTURES / "http-client" / "c-lf-only", Options(seed=5, only=("crlf-line-ends",), feedback=DIFF))
    [check] = run.checks
    assert check.outcome == "failed" and check.differential is not None
    # the reference's Host header names the port it was given, the same as the fixture's once renumbered
    assert check.differential.summary == ("reference sent `GET /crlf.txt HTTP/1.0\\r\\n`, yours sent "
                                          "`GET /crlf.txt HTTP/1.0\\n` (connection srv, byte 22); in all the "
                                          "reference sent 106 bytes, yours 64")


def test_passing_checks_and_a_correct_program_get_no_differential() -> None:
    spec = load_spec(catalog.resolve("tcp-echo-server"))
    run = grade(spec, catalog.LABS_DIR / "reference" / "tcp-echo-server",
                Options(seed=5, only=("echo-line", "echo-fragmented"), feedback=DIFF))
    assert [c.outcome for c in run.checks] == ["passed", "passed"]
    assert all(c.differential is None for c in run.checks)


def test_differential_off_per_check_or_per_spec(tmp_path: Path) -> None:
    src = catalog.resolve("tcp-echo-server")
    data = yaml.safe_load(src.read_text())
    for check in data["checks"]:
        if check["id"] == "echo-line":
            check["differential"] = False
    data["files"] = {k: str((src.parent / v).resolve()) for k, v in (data.get("files") or {}).items()}
    data["reference"] = str(catalog.LABS_DIR / "reference" / "tcp-echo-server")
    spec_path = tmp_path / "tcp-echo-server.yaml"
    spec_path.write_text(yaml.safe_dump(data))
    fixture = FIXTURES / "tcp-echo-server" / "c-one-shot"
    run = grade(load_spec(spec_path), fixture, Options(seed=5, only=("echo-line", "echo-fragmented"), feedback=DIFF))
    by_id = {c.id: c for c in run.checks}
    assert by_id["echo-line"].outcome == "failed" and by_id["echo-line"].differential is None
    assert by_id["echo-fragmented"].outcome == "failed" and by_id["echo-fragmented"].differential is not None
    data["reference"] = False
    spec_path.write_text(yaml.safe_dump(data))
    t0 = time.monotonic()
    run = grade(load_spec(spec_path), fixture, Options(seed=5, only=("echo-fragmented",), feedback=DIFF))
    assert run.checks[0].outcome == "failed" and run.checks[0].differential is None
    assert time.monotonic() - t0 < 10


def test_a_reference_that_is_not_a_folder_is_a_spec_error(tmp_path: Path) -> None:
    import pytest

    from grader.errors import SpecError

    spec = tmp_path / "lab.yaml"
    spec.write_text("lab: lab\ntitle: t\nreference: no-such-folder\nsubmission: {run: './x {port}'}\n"
                    "checks:\n  - {id: a, title: a, category: protocol, steps: [{connect: {}}]}\n")
    with pytest.raises(SpecError, match=r"lab.yaml:3: reference: 'no-such-folder' is not a folder"):
        load_spec(spec)
    spec.write_text(spec.read_text().replace("reference: no-such-folder", "reference: 3"))
    with pytest.raises(SpecError, match="reference"):
        load_spec(spec)


def test_many_connections_are_trimmed_to_the_one_that_parts_and_a_few_more() -> None:
    from grader.engine.differential import MAX_CONNECTIONS, render

    ref, mine = Transcript(), Transcript()
    for i in range(10):
        for t in (ref, mine):
            t.sent(f"#{i}.c", b"ping\n")
        ref.received(f"#{i}.c", b"ping\n")
        mine.received(f"#{i}.c", b"ping\n" if i != 7 else b"pong\n")
    d = first_divergence(ref.exchanges(), mine.exchanges())
    assert d is not None and d.connection == "#7.c" and d.offset == 1
    text = render(ref.exchanges(), mine.exchanges(), d)
    assert "[#7.c] the program sent: <-- first difference" in text
    assert f"… {10 - MAX_CONNECTIONS} more connections not shown" in text
    assert len(text.splitlines()) < 20


def test_the_reference_starts_only_when_a_check_fails_and_once(tmp_path: Path) -> None:
    from progs import py_prog, write_spec

    marker = tmp_path / "reference-started"
    reference = py_prog(tmp_path / "reference", f"""
        with open({str(marker)!r}, "a") as f:
            f.write("started\\n")
        serve_threaded(echo)
        """)
    spec_path = write_spec(tmp_path / "spec", """
        - id: one
          steps:
            - connect: {}
            - send: {text: "one\\n"}
            - expect_bytes: {echo: true, timeout: 3}
        - id: two
          steps:
            - connect: {}
            - send: {text: "two\\n"}
            - expect_bytes: {echo: true, timeout: 3}
        """)
    data = yaml.safe_load(spec_path.read_text())
    data["reference"] = str(reference)
    spec_path.write_text(yaml.safe_dump(data))
    spec = load_spec(spec_path)
    correct = py_prog(tmp_path / "correct", "serve_threaded(echo)\n")
    run = grade(spec, correct, Options(seed=1, feedback=DIFF))
    assert [c.outcome for c in run.checks] == ["passed", "passed"]
    assert not marker.exists(), "the reference program was started for a grading that passed"
    wrong = py_prog(tmp_path / "wrong", """
        def upper(conn):
            with conn:
                conn.sendall(recv_line(conn).upper())
        serve_threaded(upper)
        """)
    run = grade(spec, wrong, Options(seed=1, feedback=DIFF))
    assert [c.outcome for c in run.checks] == ["failed", "failed"]
    assert marker.read_text() == "started\n"  # one reference server for both failed checks
    assert [c.differential.summary if c.differential else "" for c in run.checks] == [
        "reference sent `one\\n`, yours sent `ONE\\n` (connection c, byte 0)",
        "reference sent `two\\n`, yours sent `TWO\\n` (connection c, byte 0)",
    ]
