"""--student runs only visible checks and never reveals a hidden one, in any report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from grader import catalog

SPEC = """\
lab: demo
title: Demo
submission:
  run: ./echo_server {port}
checks:
  - id: visible-echo
    title: Echo
    category: protocol
    steps:
      - connect: {}
      - send: {text: "hi"}
      - expect_bytes: {echo: true, timeout: 3}
  - id: secret-sauce-check
    title: The secret check about sauce
    category: robustness
    visibility: hidden
    hint: sauce-hint
    steps:
      - connect: {}
      - send: {text: "sauce"}
      - expect_bytes: {text: "no such luck", timeout: 3}
"""


def grader(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "grader", *args], capture_output=True, text=True, timeout=120)


def test_student_mode_hides_hidden_checks(tmp_path: Path) -> None:
    spec = tmp_path / "demo.yaml"
    spec.write_text(SPEC)
    sub = catalog.LABS_DIR / "reference" / "tcp-echo-server"
    junit, js = tmp_path / "r.xml", tmp_path / "r.json"
    proc = grader("check", str(spec), str(sub), "--student", "--junit", str(junit), "--json", str(js))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for text in (proc.stdout, junit.read_text(), js.read_text()):
        assert "secret" not in text and "sauce" not in text
    assert [c["id"] for c in json.loads(js.read_text())["checks"]] == ["visible-echo"]
    explain = grader("explain", str(spec), "--student")
    assert "secret" not in explain.stdout and "visible-echo" in explain.stdout
    only = grader("check", str(spec), str(sub), "--student", "--only", "secret-sauce-check")
    assert only.returncode == 2 and "no visible check named" in only.stderr

    full = grader("check", str(spec), str(sub), "--json", str(js))
    assert full.returncode == 1
    outcomes = {c["id"]: c["outcome"] for c in json.loads(js.read_text())["checks"]}
    assert outcomes == {"visible-echo": "passed", "secret-sauce-check": "failed"}
