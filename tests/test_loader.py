"""Spec loading: good specs load into frozen objects; every bad spec gives one line with file:line."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from grader import catalog
from grader.errors import SpecError
from grader.spec.loader import load_spec

GOOD = """\
lab: demo
title: Demo
submission:
  run: ./server {port}
checks:
  - id: one
    title: One
    category: protocol
    steps:
      - connect: {}
      - send: {text: "hi"}
      - expect_bytes: {echo: true}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path


def error_of(tmp_path: Path, text: str) -> SpecError:
    with pytest.raises(SpecError) as info:
        load_spec(write(tmp_path, text))
    return info.value


def test_good_spec_loads_frozen(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, GOOD))
    assert spec.lab == "demo" and spec.checks[0].id == "one"
    assert [s.kind for s in spec.checks[0].steps] == ["connect", "send", "expect_bytes"]
    assert spec.checks[0].steps[1].where.line == 11
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.checks[0].id = "two"  # type: ignore[misc]
    with pytest.raises(TypeError):
        spec.checks[0].steps[1].args.values["text"] = "x"  # type: ignore[index]


@pytest.mark.parametrize(
    ("change", "line", "words"),
    [
        (("category: protocol", "category: networking"), 8, ["checks[0].category", "networking", "protocol"]),
        (("- connect: {}", "- conect: {}"), 10, ["unknown step type 'conect'", "did you mean 'connect'"]),
        (('send: {text: "hi"}', 'send: {txt: "hi"}'), 11, ["unknown key 'txt'", "did you mean 'text'"]),
        (("    title: One\n", ""), 6, ["'title' is a required property"]),
        (("./server {port}", "./server {prot}"), 4, ["unknown placeholder {prot}", "{port}"]),
        (('send: {text: "hi"}', 'send: {text: "hi", hex: "00"}'), 11, ["exactly one of text, hex"]),
        (('send: {text: "hi"}', 'send: {file: nope.bin}'), 11, ["file 'nope.bin' not found"]),
        (("expect_bytes: {echo: true}", "expect_bytes: {regex: '(('}"), 12, ["regex"]),
        (("- connect: {}", "- connect: {}\n      - start: {}"), 11, ["client program", "ready: none"]),
        (("id: one", "id: One Two"), 6, ["checks[0].id", "does not match"]),
        (('send: {text: "hi"}', 'send: {conn: other, text: "hi"}'), 11, ["no connection named 'other'"]),
    ],
)
def test_bad_spec_names_file_line_and_key(tmp_path: Path, change: tuple[str, str], line: int,
                                          words: list[str]) -> None:
    assert change[0] in GOOD
    err = error_of(tmp_path, GOOD.replace(change[0], change[1], 1))
    text = str(err)
    assert text.startswith(f"{tmp_path / 'spec.yaml'}:{line}: "), text
    for w in words:
        assert w in text, text
    assert "\n" not in text


CLIENT = """\
lab: demo
title: Demo
submission:
  run: ./client {url} {outfile}
  ready: none
checks:
  - id: one
    title: One
    category: robustness
    steps:
      - START
      - expect_exit: {nonzero: true}
"""


@pytest.mark.parametrize(
    ("start", "words"),
    [
        ("start: {refused: true, unknown_host: true}", ["at most one of listener, refused, unknown_host"]),
        ("start: {network: none}", ["network: none cuts the client off", "unknown_host or a url"]),
        ("start: {network: host}", ["network", "none"]),
        ("start: {}", ["no listener named 'srv'"]),
    ],
)
def test_bad_start_step(tmp_path: Path, start: str, words: list[str]) -> None:
    text = str(error_of(tmp_path, CLIENT.replace("START", start)))
    assert text.startswith(f"{tmp_path / 'spec.yaml'}:11: "), text
    for w in words:
        assert w in text, text


def test_good_start_steps(tmp_path: Path) -> None:
    for start in ("start: {unknown_host: true}", "start: {network: none, url: 'http://127.0.0.1:9/'}",
                  "start: {refused: true}"):
        assert load_spec(write(tmp_path, CLIENT.replace("START", start))).checks[0].steps[0].kind == "start"


def test_duplicate_ids(tmp_path: Path) -> None:
    check = GOOD.split("checks:\n")[1]
    err = error_of(tmp_path, GOOD + check)
    assert "duplicate check id 'one'" in str(err) and ":13:" in str(err)


def test_invalid_yaml_and_not_a_mapping(tmp_path: Path) -> None:
    assert ":3:" in str(error_of(tmp_path, "lab: x\ntitle: [unclosed\nchecks: :\n"))
    assert "expected a mapping" in str(error_of(tmp_path, "- just\n- a list\n"))
    err = error_of(tmp_path, "lab: a\nlab: b\n")
    assert "duplicate key 'lab'" in str(err) and ":2:" in str(err)


def test_expression_checked_at_load(tmp_path: Path) -> None:
    text = GOOD.replace("expect_bytes: {echo: true}", "expect_uint: {size: 4, min: now_1900 - x, max: 3}")
    err = error_of(tmp_path, text)
    assert ":12:" in str(err) and "min" in str(err)


def test_missing_file_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read the spec"):
        load_spec(tmp_path / "absent.yaml")


def test_cli_validate_bad_spec_one_line_no_traceback(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("category: protocol", "category: networking"))
    proc = subprocess.run([sys.executable, "-m", "grader", "validate", str(path)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert f"{path}:8:" in proc.stderr.replace("\n", "")


def test_every_shipped_spec_is_valid() -> None:
    shipped = catalog.shipped()
    assert shipped, "no shipped specs found"
    for path in shipped:
        spec = load_spec(path)
        assert spec.checks


def test_published_schema_and_docs_are_current() -> None:
    root = Path(__file__).resolve().parent.parent
    schema = subprocess.run([sys.executable, "-m", "grader", "schema"], capture_output=True, text=True,
                            timeout=60, check=True).stdout
    assert (catalog.specs_dir() / "spec.schema.json").read_text() == schema, \
        "run: grader schema > grader/labs/specs/spec.schema.json"
    docs = subprocess.run([sys.executable, "-m", "grader", "docs"], capture_output=True, text=True,
                          timeout=60, check=True).stdout
    assert (root / "docs" / "steps.md").read_text() == docs, "run: grader docs > docs/steps.md"
