"""Finding specs: the shipped folder plus a course's GRADER_SPECS_DIR, and a clear error when there is nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from grader import catalog
from grader.cli import main

COURSE_SPEC = """\
lab: {lab}
title: {title}
submission:
  run: ./echo_server {{port}}
checks:
  - id: echo
    title: Echo
    category: protocol
    steps:
      - connect: {{}}
      - send: {{text: "hi"}}
      - expect_bytes: {{echo: true, timeout: 3}}
"""


def test_list_with_nothing_to_list_names_every_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "course"
    empty.mkdir()
    monkeypatch.setattr(catalog, "LABS_DIR", tmp_path / "gone" / "labs")  # as if the install lost its labs
    monkeypatch.setenv("GRADER_SPECS_DIR", str(empty))
    assert main(["list"]) == 2
    captured = capsys.readouterr()
    err = " ".join(captured.err.split())
    assert captured.out == ""
    assert "no specs to list" in err and str(empty) in err
    assert f"{tmp_path / 'gone' / 'labs' / 'specs'} (missing)" in err


def test_course_specs_are_added_and_shadow_shipped_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    course = tmp_path / "course"
    course.mkdir()
    (course / "my-echo.yaml").write_text(COURSE_SPEC.format(lab="my-echo", title="Our own echo lab"))
    (course / "tcp-echo-server.yaml").write_text(COURSE_SPEC.format(lab="tcp-echo-server", title="Course echo"))
    monkeypatch.setenv("GRADER_SPECS_DIR", str(course))
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    titles = {line.split()[0]: line for line in lines}
    assert "Our own echo lab" in titles["my-echo"]
    assert "Course echo" in titles["tcp-echo-server"]
    assert "http-server" in titles  # the shipped ones are still there
    assert catalog.resolve("tcp-echo-server") == course / "tcp-echo-server.yaml"


def test_specs_dir_that_is_not_a_folder_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("GRADER_SPECS_DIR", str(tmp_path / "typo"))
    assert main(["list"]) == 2
    assert f"GRADER_SPECS_DIR names {tmp_path / 'typo'}, which is not a folder" in " ".join(
        capsys.readouterr().err.split())
