"""grader gradescope: the autograder bundle grades a submission laid out as Gradescope lays it out."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from classes import FAST_LAB, LABS

from grader.cli import main
from grader.report.platforms import validate


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    out = tmp_path / "autograder.zip"
    assert main(["gradescope", FAST_LAB, "--out", str(out)]) == 0
    source = tmp_path / "autograder" / "source"
    with zipfile.ZipFile(out) as zf:
        names = zf.namelist()
        assert "setup.sh" in names and "run_autograder" in names  # at the root of the zip, as Gradescope wants
        assert not any("fixtures/" in n or "__pycache__" in n for n in names)
        zf.extractall(source)
        for info in zf.infolist():  # zipfile does not restore modes
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                (source / info.filename).chmod(mode)
    return source


def _run(source: Path, submission: Path, results: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GRADER_SOURCE": str(source), "GRADER_SUBMISSION": str(submission),
           "GRADER_RESULTS": str(results), "GRADER_PYTHON": sys.executable}
    # Gradescope copies run_autograder to /autograder/run_autograder and runs it from /autograder
    runner = source.parent / "run_autograder"
    shutil.copy2(source / "run_autograder", runner)
    return subprocess.run([str(runner)], cwd=source.parent, env=env, capture_output=True, text=True, timeout=300)


def test_the_bundle_grades_inside_gradescope_unchanged(bundle: Path, tmp_path: Path,
                                                       no_leftover_processes: None) -> None:
    assert subprocess.run(["bash", "-n", str(bundle / "setup.sh")]).returncode == 0
    reqs = (bundle / "requirements.txt").read_text().split()
    assert reqs and all("==" in r for r in reqs)  # pinned, like pyproject.toml
    submission = tmp_path / "autograder" / "submission"
    shutil.copytree(LABS / "reference" / FAST_LAB, submission)
    results = tmp_path / "autograder" / "results" / "results.json"
    done = _run(bundle, submission, results)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"socket-lab-grader from {bundle / 'grader'}" in done.stdout  # the bundled grader, not the installed one
    data = json.loads(results.read_text())
    validate("gradescope", data)
    assert data["score"] == sum(t["max_score"] for t in data["tests"]) > 0

    shutil.rmtree(submission)
    shutil.copytree(LABS / "fixtures" / FAST_LAB / "py-strips", submission)
    done = _run(bundle, submission, results)
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads(results.read_text())
    validate("gradescope", data)
    failed = [t for t in data["tests"] if t["status"] == "failed"]
    assert failed and all(t["score"] == 0 and "Hint:" in t["output"] for t in failed)
    assert data["score"] < sum(t["max_score"] for t in data["tests"])


def test_a_course_spec_travels_inside_the_bundle(tmp_path: Path) -> None:
    course = tmp_path / "course"
    shutil.copytree(LABS / "specs", course, ignore=shutil.ignore_patterns("*.yaml"))
    shutil.copy2(LABS / "specs" / f"{FAST_LAB}.yaml", course / "my-udp-lab.yaml")
    out = tmp_path / "b.zip"
    assert main(["gradescope", str(course / "my-udp-lab.yaml"), "--out", str(out)]) == 0
    with zipfile.ZipFile(out) as zf:
        assert "spec/my-udp-lab.yaml" in zf.namelist()
        assert '"$SOURCE/spec/my-udp-lab.yaml"' in zf.read("run_autograder").decode()


def test_a_bad_spec_makes_no_bundle(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("lab: x\nchecks: 3\n")
    assert main(["gradescope", str(bad), "--out", str(tmp_path / "a.zip")]) == 2
    assert not (tmp_path / "a.zip").exists()
