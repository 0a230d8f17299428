"""grader grade: a class graded in parallel, resumably, with a report per student and the class outputs."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from dataclasses import replace
from pathlib import Path

import jsonschema
import pytest
import xmlschema
from classes import FAST_LAB, LABS, make_class
from progs import MARK_VAR, processes_marked

from grader import catalog
from grader.batch.executor import EXECUTORS, make_executor
from grader.batch.intake import discover, extract_zip
from grader.batch.jobs import Job, run_job
from grader.engine.runner import Options, grade
from grader.errors import UsageError
from grader.report.jsonout import to_dict, to_json
from grader.report.model import RunResult
from grader.report.platforms import validate
from grader.spec.loader import load_spec

ROOT = Path(__file__).resolve().parent.parent
XSD = ROOT / "tests" / "data" / "jenkins-junit.xsd"


def test_json_result_reads_back_into_the_same_run_result() -> None:
    spec = load_spec(catalog.resolve(FAST_LAB))
    run = grade(spec, LABS / "fixtures" / FAST_LAB / "py-strips", Options(seed=7))
    failed = [c for c in run.checks if c.outcome == "failed"]
    assert failed and all(c.events for c in failed), "a failed check carries its transcript as structured events"
    assert {e.kind for c in failed for e in c.events} >= {"sent", "received"}
    back = RunResult.from_dict(json.loads(to_json(run)))
    assert back == replace(run, duration_s=round(run.duration_s, 3))  # the JSON keeps milliseconds
    assert to_json(back) == to_json(run)


def test_a_job_crosses_the_seam_as_plain_data() -> None:
    job = Job("zoe", FAST_LAB, str(LABS / "reference" / FAST_LAB), seed=3)
    assert Job.from_dict(json.loads(json.dumps(job.to_dict()))) == job
    outcome = run_job(json.loads(json.dumps(job.to_dict())))
    assert json.loads(json.dumps(outcome)) == outcome  # JSON through and through
    run = RunResult.from_dict(outcome["result"])
    assert run.status == "graded" and run.score == run.max_score and run.seed == 3


def test_executors_are_declared_in_one_place() -> None:
    assert "local" in EXECUTORS
    with pytest.raises(UsageError, match="no executor named 'carrier-pigeon'"):
        make_executor("carrier-pigeon", jobs=1)
    with pytest.raises(UsageError, match="--jobs must be at least 1"):
        make_executor("local", jobs=0)


def _grade(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``grader grade`` in a process of its own, as a user runs it (its process pool goes with it)."""
    done = subprocess.run([sys.executable, "-m", "grader", "grade", *args], capture_output=True, text=True,
                          timeout=300)
    return done.returncode, done.stdout + done.stderr


def test_grade_a_class(tmp_path: Path, capsys: pytest.CaptureFixture[str], no_leftover_processes: None) -> None:
    expected = make_class(tmp_path / "class")
    out = tmp_path / "out"
    code, text = _grade([FAST_LAB, str(tmp_path / "class"), "--out", str(out), "--jobs", "2"], capsys)
    assert code == 0, text
    assert f"grading {len(expected)} of {len(expected)} submissions" in text
    assert "[6/6]" in text and "failing so far" in text and ", ETA " in text  # plain lines: not a terminal
    schema = xmlschema.XMLSchema(str(XSD))
    for student, status in expected.items():
        folder = out / "students" / student
        run = RunResult.from_dict(json.loads((folder / "result.json").read_text()))
        assert run.status == status, (student, run.status_message)
        schema.validate(str(folder / "junit.xml"))
        gs = json.loads((folder / "gradescope" / "results.json").read_text())
        pl = json.loads((folder / "prairielearn" / "results.json").read_text())
        validate("gradescope", gs)
        validate("prairielearn", pl)
        assert (folder / "prairielearn" / "results.json").stat().st_size < 1_000_000
        assert gs["score"] == run.score and len(gs["tests"]) == len(run.checks)
        assert pl["gradable"] is (status == "graded")
    ref = RunResult.from_dict(json.loads((out / "students" / "alice-reference" / "result.json").read_text()))
    assert ref.score == ref.max_score > 0
    strips = RunResult.from_dict(json.loads((out / "students" / "bob-py-strips" / "result.json").read_text()))
    assert 0 < strips.score < strips.max_score
    empty = RunResult.from_dict(json.loads((out / "students" / "dave-empty" / "result.json").read_text()))
    assert "empty" in empty.status_message and empty.score == 0
    binary = RunResult.from_dict(json.loads((out / "students" / "erin-binary" / "result.json").read_text()))
    assert "only binary files" in binary.status_message and "ELF" in binary.status_message
    build = RunResult.from_dict(json.loads((out / "students" / "carol-build-fails" / "result.json").read_text()))
    assert "build command" in build.status_message and "missing.c" in build.status_output

    rows = list(csv.DictReader(io.StringIO((out / "gradebook.csv").read_text())))
    assert [r["student"] for r in rows] == sorted(expected)
    categories = {c.category for c in ref.checks}
    assert set(rows[0]) == {"student", "score", "max", "status", *categories}
    by_student = {r["student"]: r for r in rows}
    assert float(by_student["alice-reference"]["score"]) == ref.max_score
    assert float(by_student["bob-py-strips"]["score"]) == strips.score
    assert sum(float(by_student["bob-py-strips"][c]) for c in categories) == strips.score
    html = (out / "report.html").read_text()
    assert "<script src" not in html and "<link" not in html and "http://" not in html.replace(
        "http://www.w3.org/2000/svg", "")

    # a re-run keeps what is graded, byte for byte
    before = {p: p.read_bytes() for p in (out / "students").rglob("*") if p.is_file()}
    code, text = _grade([FAST_LAB, str(tmp_path / "class"), "--out", str(out)], capsys)
    assert code == 0 and "grading 0 of 6 submissions (6 already graded, kept" in text, text
    assert before == {p: p.read_bytes() for p in (out / "students").rglob("*") if p.is_file()}
    # --regrade grades them again
    code, text = _grade([FAST_LAB, str(tmp_path / "class"), "--out", str(out), "--regrade", "--jobs", "1"], capsys)
    assert code == 0 and "grading 6 of 6 submissions" in text, text


def test_a_zip_of_the_class(tmp_path: Path, capsys: pytest.CaptureFixture[str], no_leftover_processes: None) -> None:
    make_class(tmp_path / "class", fixtures=("py-strips",), broken=False)
    archive = tmp_path / "class.zip"
    with zipfile.ZipFile(archive, "w") as zf:  # wrapped in one folder, as an LMS download often is
        for path in sorted((tmp_path / "class").rglob("*")):
            info = zipfile.ZipInfo.from_file(path, "download/" + path.relative_to(tmp_path / "class").as_posix())
            zf.writestr(info, b"" if path.is_dir() else path.read_bytes())
    code, text = _grade([FAST_LAB, str(archive), "--out", str(tmp_path / "out")], capsys)
    assert code == 0, text
    assert sorted(p.name for p in (tmp_path / "out" / "students").iterdir()) == ["alice-reference", "bob-py-strips"]
    ref = json.loads((tmp_path / "out" / "students" / "alice-reference" / "result.json").read_text())
    assert ref["score"] == ref["max_score"]  # the executable bit of the Python program survived the zip


def _zip(path: Path, entries: list[tuple[str, bytes, int]]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data, mode in entries:
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            zf.writestr(info, data)
    return path


@pytest.mark.parametrize(("entries", "why"), [
    ([("alice/server.py", b"ok", 0o100644), ("../evil.txt", b"x", 0o100644)], "would land outside the target"),
    ([("alice/server.py", b"ok", 0o100644), ("/etc/evil.txt", b"x", 0o100644)], "would land outside the target"),
    ([("alice/server.py", b"ok", 0o100644), ("alice/link", b"/etc/passwd", 0o120777)], "is a symbolic link"),
    ([("alice/a.bin", b"\0" * 3000, 0o100644), ("bob/b.bin", b"\0" * 3000, 0o100644)], "expands past 4096 bytes"),
])
def test_an_unsafe_zip_is_refused_and_nothing_written(tmp_path: Path, entries: list[tuple[str, bytes, int]],
                                                      why: str) -> None:
    archive = _zip(tmp_path / "class.zip", entries)
    target = tmp_path / "target"
    with pytest.raises(UsageError, match=why):
        extract_zip(archive, target, limit=4096)
    assert not target.exists() or not any(target.iterdir())
    assert not (tmp_path / "evil.txt").exists()


def test_a_safe_zip_extracts_under_the_limit(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "class.zip", [("alice/a.txt", b"a" * 1000, 0o100644), ("bob/b", b"#!x", 0o100755)])
    extract_zip(archive, tmp_path / "t", limit=4096)
    assert [s.student for s in discover(tmp_path / "t")] == ["alice", "bob"]
    assert os.access(tmp_path / "t" / "bob" / "b", os.X_OK)


def test_the_cli_refuses_a_zip_bomb_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    archive = _zip(tmp_path / "class.zip", [("alice/x", b"x", 0o100644), ("../../escape", b"x", 0o100644)])
    code, text = _grade([FAST_LAB, str(archive), "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and "refused the zip" in text and "'../../escape'" in text
    assert not (tmp_path / "out").exists()


def test_bad_inputs_say_what_is_wrong(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, text = _grade([FAST_LAB, str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "do not exist" in text
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "server.py").write_text("")
    code, text = _grade([FAST_LAB, str(tmp_path / "flat"), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "one subfolder per student" in text
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    code, text = _grade([FAST_LAB, str(tmp_path / "junk.zip"), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "cannot read the zip" in text


def test_a_batch_killed_midway_loses_nothing_and_resumes(tmp_path: Path) -> None:
    make_class(tmp_path / "class", fixtures=("py-strips", "py-exits-on-empty", "c-strlen", "c-small-buffer"),
               broken=False)
    out = tmp_path / "out"
    mark = f"kill-{os.getpid()}-{time.monotonic_ns()}"
    tmpdir = tmp_path / "tmp"  # the gradings' private folders go here: none may be left behind
    tmpdir.mkdir()
    env = {**os.environ, MARK_VAR: mark, "TMPDIR": str(tmpdir)}
    cmd = [sys.executable, "-m", "grader", "grade", FAST_LAB, str(tmp_path / "class"), "--out", str(out),
           "--jobs", "1"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not list((out / "students").glob("*/result.json")):
            assert proc.poll() is None, proc.communicate()[0].decode()
            assert time.monotonic() < deadline, "no student graded within 120 s"
            time.sleep(0.02)  # polling for a file, bounded by the deadline
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        graded_before = sorted((out / "students").glob("*/result.json"))
        assert 1 <= len(graded_before) < 5
        deadline = time.monotonic() + 30  # the pool worker sees its batch gone and stops what it started
        while processes_marked(mark):
            assert time.monotonic() < deadline, f"left running after the kill: {processes_marked(mark)}"
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not list(tmpdir.iterdir())
    kept = {p: p.read_bytes() for p in graded_before}
    for p in graded_before:  # every file written is whole
        RunResult.from_dict(json.loads(p.read_text()))
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"({len(graded_before)} already graded, kept" in rerun.stdout
    assert all(p.read_bytes() == data for p, data in kept.items())
    assert len(list((out / "students").glob("*/result.json"))) == 5
    assert not list(out.rglob(".tmp-*"))
    assert not processes_marked(mark)
    assert not list(tmpdir.iterdir())


def test_schemas_refuse_what_the_platforms_would(tmp_path: Path) -> None:
    good_gs = {"score": 1.0, "tests": [{"name": "a", "score": 1.0, "max_score": 1.0, "visibility": "visible"}]}
    validate("gradescope", good_gs)
    for bad in ({"tests": [{"name": "a"}]},  # no score anywhere
                {"score": 1, "tests": [{"name": "a", "score": 1, "visibility": "secret"}]},
                {"score": 1, "tests": [{"name": "a", "score": 1, "maxscore": 1}]},
                {"score": "full"}):
        with pytest.raises(jsonschema.ValidationError):
            validate("gradescope", bad)
    validate("prairielearn", {"gradable": True, "score": 0.5, "tests": [{"name": "a", "points": 1, "max_points": 2}]})
    validate("prairielearn", {"gradable": False, "format_errors": ["did not build"]})
    for bad in ({"gradable": True, "score": 1.5}, {"gradable": True}, {"score": 0.5, "tests": [{"points": 1}]},
                {"gradable": False, "format_errors": 3}):
        with pytest.raises(jsonschema.ValidationError):
            validate("prairielearn", bad)


def test_hidden_checks_stay_hidden_until_published() -> None:
    spec = load_spec(catalog.resolve("http-server"))
    hidden = [c for c in spec.checks if c.visibility == "hidden"]
    assert hidden
    from grader.batch.jobs import not_graded
    from grader.report.platforms import to_gradescope

    run = not_graded(spec, Path("/nowhere"), Options(), "empty", "nothing handed in")
    tests = {t["extra_data"]["id"]: t for t in to_gradescope(run)["tests"]}
    assert all(tests[c.id]["visibility"] == "after_published" for c in hidden)
    assert all(t["visibility"] == "visible" for i, t in tests.items() if i not in {c.id for c in hidden})
    student = not_graded(spec, Path("/nowhere"), Options(student=True), "empty", "nothing handed in")
    assert not {c.id for c in hidden} & {c.id for c in student.checks}
    assert to_dict(student)["max_score"] < to_dict(run)["max_score"]


def test_on_a_terminal_a_progress_bar_counts_done_failing_and_eta() -> None:
    from rich.console import Console

    from grader.batch.jobs import not_graded
    from grader.batch.progress import PlainReporter, RichReporter, reporter_for
    from grader.batch.run import BatchSummary

    spec = load_spec(catalog.resolve(FAST_LAB))
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=110, color_system=None)
    reporter = reporter_for(console)
    assert isinstance(reporter, RichReporter)
    reporter.start(3, 1)
    bad = not_graded(spec, Path("/x"), Options(), "empty", "nothing handed in")
    reporter.done("zed", bad)
    reporter.finish(BatchSummary(3, 1, 1, (), (("zed", bad),), 0.5))
    text = buf.getvalue()
    assert "2/3" in text and "1 failing" in text and "ETA" in text
    assert "zed: not graded (empty): nothing handed in" in text
    assert type(reporter_for(Console(file=io.StringIO()))) is PlainReporter


def test_a_class_graded_in_the_sandbox_gets_the_verdicts_of_local(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """--backend reaches every job: the sandbox grades each student in namespaces of its own, same verdicts."""
    make_class(tmp_path / "class")
    outcomes = {}
    for backend in ("local", "sandbox"):
        out = tmp_path / f"out-{backend}"
        code, text = _grade([FAST_LAB, str(tmp_path / "class"), "--out", str(out), "--jobs", "2", "--seed", "3",
                             "--backend", backend], capsys)
        assert code in (0, 1), text
        outcomes[backend] = {
            p.parent.name: {c.id: c.outcome for c in RunResult.from_dict(json.loads(p.read_text())).checks}
            for p in sorted((out / "students").glob("*/result.json"))}
    assert outcomes["sandbox"] == outcomes["local"] and outcomes["local"]
