"""Reports: JUnit XML valid against Jenkins' schema, JSON of the documented shape, a readable terminal view."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import xmlschema
from rich.console import Console

from grader import catalog
from grader.report.jsonout import to_dict
from grader.report.junit import to_junit
from grader.report.model import CheckResult, RunResult
from grader.report.terminal import render

ROOT = Path(__file__).resolve().parent.parent
XSD_CANDIDATES = [ROOT.parent / "shared" / "junit" / "jenkins-junit.xsd", ROOT / "tests" / "data" / "jenkins-junit.xsd"]


@pytest.fixture(scope="module")
def xsd() -> xmlschema.XMLSchema:
    for path in XSD_CANDIDATES:
        if path.is_file():
            return xmlschema.XMLSchema(str(path))
    pytest.fail(f"Jenkins JUnit XSD not found at {XSD_CANDIDATES}")


def result(outcome: str, message: str = "", transcript: str = "") -> CheckResult:
    return CheckResult(f"check-{outcome}", f"A {outcome} check", "protocol", 2.0, "visible", outcome, message,
                       "recv in a loop", transcript, 0.01, 42)


RUN = RunResult(
    "demo-lab", "Demo lab", "/tmp/sub",
    (
        result("passed"),
        result("failed", "expected status 200, got 404 Not Found\nsecond line",
               "  0.001s [c] >> 5 bytes: GET /\\r\\n\x00\x07 control"),
        result("error", "harness error: boom"),
        result("skipped", "not run"),
    ),
    1.5, 1234, "graded",
)


def test_junit_is_valid_and_complete(xsd: xmlschema.XMLSchema) -> None:
    xml = to_junit(RUN)
    xsd.validate(xml)
    assert 'classname="demo-lab.protocol"' in xml
    assert '<failure type="failure" message="expected status 200, got 404 Not Found">' in xml
    assert "Hint: recv in a loop" in xml
    assert "<error" in xml and "<skipped>not run</skipped>" in xml
    assert '<property name="seed" value="1234"' in xml
    assert '<property name="points.check-failed" value="2"' in xml
    assert "\\x07" in xml and "\x07" not in xml


def test_json_shape() -> None:
    data = to_dict(RUN)
    assert {"lab", "submission", "score", "max_score", "duration_s", "checks"} <= set(data)
    assert data["score"] == 2.0 and data["max_score"] == 8.0
    keys = {"id", "title", "category", "points", "visibility", "outcome", "message", "hint", "transcript",
            "duration_s"}
    for c in data["checks"]:
        assert keys <= set(c)
    assert [c["outcome"] for c in data["checks"]] == ["passed", "failed", "error", "skipped"]
    json.dumps(data)


def test_terminal_explains_failures() -> None:
    buf = io.StringIO()
    render(RUN, Console(file=buf, width=120, color_system=None))
    text = buf.getvalue()
    assert "FAIL" in text and "expected status 200, got 404" in text
    assert "Hint: recv in a loop" in text and "Score 2/8" in text


BROKEN = '''#!/usr/bin/env python3
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(5)
while True:
    c, _ = s.accept()
    data = c.recv(65536)          # one recv: the classic bug
    c.sendall(data.upper())       # and it changes the bytes
    c.close()
'''


def _grade_cli(tmp_path: Path, submission: Path, name: str) -> tuple[int, str, dict[str, object], str]:
    junit, js = tmp_path / f"{name}.xml", tmp_path / f"{name}.json"
    env = {**os.environ, "COLUMNS": "120"}
    proc = subprocess.run(
        [sys.executable, "-m", "grader", "check", "tcp-echo-server", str(submission), "--junit", str(junit),
         "--json", str(js), "--seed", "7", "--only", "echo-line", "echo-binary", "half-close"],
        capture_output=True, text=True, timeout=120, env=env,
    )
    return proc.returncode, proc.stdout, json.loads(js.read_text()), junit.read_text()


def test_cli_correct_vs_broken_server(tmp_path: Path, xsd: xmlschema.XMLSchema) -> None:
    code, out, data, xml = _grade_cli(tmp_path, catalog.LABS_DIR / "reference" / "tcp-echo-server", "good")
    assert code == 0, out
    assert data["score"] == data["max_score"] == 3
    xsd.validate(xml)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "echo_server").write_text(BROKEN)
    (broken / "echo_server").chmod(0o755)
    code, out, data, xml = _grade_cli(tmp_path, broken, "bad")
    assert code == 1, out
    xsd.validate(xml)
    outcomes = {c["id"]: c["outcome"] for c in data["checks"]}  # type: ignore[union-attr]
    assert outcomes == {"echo-line": "failed", "echo-binary": "passed", "half-close": "failed"}
    assert "FAIL" in out and "Hint:" in out and "received bytes differ" in out
    assert '<failure type="failure"' in xml


def test_cli_exit_codes(tmp_path: Path) -> None:
    nothing = tmp_path / "empty"
    nothing.mkdir()
    proc = subprocess.run([sys.executable, "-m", "grader", "check", "tcp-echo-server", str(nothing), "--quiet"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3
    proc = subprocess.run([sys.executable, "-m", "grader", "check", "no-such-lab", str(nothing)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "no spec of that name" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "grader", "frobnicate"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_cli_list_and_explain() -> None:
    listed = subprocess.run([sys.executable, "-m", "grader", "list"], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0
    for lab in ("http-client", "http-server", "tcp-echo-server", "tcp-echo-client", "udp-echo-server",
                "time-server"):
        assert lab in listed.stdout
        explained = subprocess.run([sys.executable, "-m", "grader", "explain", lab], capture_output=True,
                                   text=True, timeout=60)
        assert explained.returncode == 0 and "Points by category" in explained.stdout, explained.stderr
