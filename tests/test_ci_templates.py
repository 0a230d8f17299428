"""The CI templates a course copies (ci-templates/): each is valid against its platform's workflow schema (the
schemas check-jsonschema vendors), and the shell commands it runs work in a fresh "course repository" with the
grader installed from the wheel built from this checkout (GRADER_PACKAGE, the templates' own knob, points at it
instead of the package index): the JUnit report appears, is valid, and says what the grading found."""

from __future__ import annotations

import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import xmlschema
import yaml
from installed import ROOT, Installed, clean_env

TEMPLATES = ROOT / "ci-templates"
GITHUB_GRADE = TEMPLATES / "github" / "grade.yml"
GITHUB_SELFTEST = TEMPLATES / "github" / "selftest.yml"
GITLAB = TEMPLATES / "gitlab" / ".gitlab-ci.yml"
LABS = ROOT / "grader" / "labs"
XSD_CANDIDATES = [ROOT.parent / "shared" / "junit" / "jenkins-junit.xsd", ROOT / "tests" / "data" / "jenkins-junit.xsd"]
GITLAB_RESERVED = {"default", "include", "stages", "variables", "workflow", "image", "services", "cache",
                   "before_script", "after_script"}
# Actions the GitHub templates may use, each pinned to a full version (vX.Y.Z).
KNOWN_ACTIONS = {"actions/checkout", "actions/setup-python", "actions/upload-artifact", "mikepenz/action-junit-report"}
STEP_TIMEOUT = 300


def check_jsonschema(schema: str, path: Path) -> subprocess.CompletedProcess[str]:
    tool = Path(sys.executable).parent / "check-jsonschema"
    assert tool.is_file(), f"check-jsonschema is not installed next to {sys.executable} (the dev extra pins it)"
    return subprocess.run([str(tool), "--builtin-schema", schema, str(path)], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize(("template", "schema", "old", "new", "error"), [
    (GITHUB_GRADE, "vendor.github-workflows", "runs-on:", "runs_on:", "'runs-on' is a required property"),
    (GITHUB_SELFTEST, "vendor.github-workflows", "steps:", "step:", "'step' was unexpected"),
    (GITLAB, "vendor.gitlab-ci", "  script:", "  scripts:", "'scripts' was unexpected"),
    (GITLAB, "vendor.gitlab-ci", "junit: reports/grader.xml", "junit: {path: reports/grader.xml}",
     "is not of type 'string'"),
])
def test_template_is_valid_and_a_broken_copy_is_not(template: Path, schema: str, old: str, new: str, error: str,
                                                    tmp_path: Path) -> None:
    done = check_jsonschema(schema, template)
    assert done.returncode == 0, done.stdout + done.stderr
    text = template.read_text()
    assert old in text
    broken = tmp_path / template.name
    broken.write_text(text.replace(old, new, 1))
    done = check_jsonschema(schema, broken)
    assert done.returncode != 0 and error in done.stdout, done.stdout + done.stderr


def test_templates_have_a_readme_line_each() -> None:
    readme = (TEMPLATES / "README.md").read_text()
    for template in (GITHUB_GRADE, GITHUB_SELFTEST, GITLAB):
        assert f"`{template.relative_to(TEMPLATES)}`" in readme, template
    assert "ci-templates/" in (ROOT / "README.md").read_text()


# --- running the templates' commands --------------------------------------------------------------------------


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


def github_run_steps(path: Path) -> tuple[dict[str, str], list[tuple[str, str]], list[dict[str, Any]]]:
    """The workflow's env, its single job's ``run:`` steps as (name, script), and its ``uses:`` steps."""
    workflow = load(path)
    assert workflow["defaults"]["run"]["shell"] == "bash"
    (job,) = workflow["jobs"].values()
    env = {**workflow.get("env", {}), **job.get("env", {})}
    runs, uses = [], []
    for step in job["steps"]:
        if "uses" in step:
            uses.append(step)
            continue
        assert "${{" not in step["run"], f"an expression in a run: line cannot run as is: {step['run']!r}"
        assert not step.get("env"), "step env is not expected in the templates"
        runs.append((step["name"], step["run"]))
    return {k: str(v) for k, v in env.items()}, runs, uses


def gitlab_job(path: Path, name: str) -> tuple[dict[str, str], str, dict[str, Any]]:
    """The pipeline's and the job's variables, the job's before_script + script as one shell script, the job."""
    pipeline = load(path)
    job = pipeline[name]
    default = pipeline.get("default", {})
    lines = [*job.get("before_script", default.get("before_script", [])), *job["script"]]
    assert all("${{" not in line for line in lines)
    variables = {**pipeline.get("variables", {}), **job.get("variables", {})}
    return {k: str(v) for k, v in variables.items()}, "\n".join(lines), job


def course_repository(folder: Path, submission: Path) -> Path:
    """A fresh course repository: the student's submission, and one course spec (a copy of the shipped
    udp-echo-server lab, fast to selftest) with its reference program and fixtures in the layout the selftest
    templates expect."""
    repo = folder / "course"
    shutil.copytree(submission, repo / "submission")
    (repo / "labs" / "specs").mkdir(parents=True)
    shutil.copy2(LABS / "specs" / "udp-echo-server.yaml", repo / "labs" / "specs")
    shutil.copytree(LABS / "reference" / "udp-echo-server", repo / "labs" / "reference" / "udp-echo-server")
    shutil.copytree(LABS / "fixtures" / "udp-echo-server", repo / "labs" / "fixtures" / "udp-echo-server")
    return repo


def fresh_python(folder: Path) -> Path:
    """Stands in for the CI image's Python (setup-python, or the python image): a venv with pip, nothing else."""
    venv = folder / "ci-python"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300, capture_output=True,
                   env=clean_env())
    return venv / "bin"


def run_script(script: str, repo: Path, env: dict[str, str], python_bin: Path) -> subprocess.CompletedProcess[str]:
    """As the runners do: bash -eo pipefail, from the repository's root, the CI Python first on PATH."""
    full = clean_env()
    full.update(env)
    full["PATH"] = f"{python_bin}:{full['PATH']}"
    full["CI"] = "true"
    return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script], cwd=repo, env=full,
                          capture_output=True, text=True, timeout=STEP_TIMEOUT, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def junit_schema() -> xmlschema.XMLSchema:
    for path in XSD_CANDIDATES:
        if path.is_file():
            return xmlschema.XMLSchema(str(path))
    pytest.fail(f"Jenkins JUnit XSD not found at {XSD_CANDIDATES}")


def junit_outcomes(path: Path, schema: xmlschema.XMLSchema) -> dict[str, str]:
    """Check id -> passed/failed/error from a JUnit report, after validating it against Jenkins' schema."""
    assert path.is_file(), f"no JUnit report at {path}"
    schema.validate(str(path))
    outcomes = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        failed = case.find("failure") is not None
        errored = case.find("error") is not None
        outcomes[case.get("name", "")] = "failed" if failed else "error" if errored else "passed"
    return outcomes


def expected_fails(fixture: Path) -> set[str]:
    return set(yaml.safe_load((fixture / "expect.yaml").read_text())["fails"])


def spec_check_ids(lab: str) -> set[str]:
    return {c["id"] for c in yaml.safe_load((LABS / "specs" / f"{lab}.yaml").read_text())["checks"]}


def test_github_templates_commands_grade_and_selftest_in_a_course_repository(
        installed: Installed, tmp_path: Path, junit_schema: xmlschema.XMLSchema) -> None:
    env, runs, uses = github_run_steps(GITHUB_GRADE)
    for step in uses:
        action, _, version = step["uses"].partition("@")
        assert action in KNOWN_ACTIONS and version.count(".") == 2, f"not a known action pinned to vX.Y.Z: {step}"
    (report,) = [s for s in uses if s["uses"].startswith("mikepenz/action-junit-report@")]
    assert report["if"] == "always()", "the report must be published when the grading fails too"
    assert report["with"]["report_paths"] == "reports/grader.xml"
    assert env["LAB"] == "http-server" and env["SUBMISSION"] == "submission"
    env["GRADER_PACKAGE"] = str(installed.wheel)

    repo = course_repository(tmp_path, LABS / "reference" / "http-server")
    python_bin = fresh_python(tmp_path)
    for name, script in runs:
        done = run_script(script, repo, env, python_bin)
        assert done.returncode == 0, f"step {name!r} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    outcomes = junit_outcomes(repo / "reports" / "grader.xml", junit_schema)
    assert outcomes == dict.fromkeys(spec_check_ids("http-server"), "passed")
    assert (repo / "reports" / "grader.json").is_file()

    # A buggy submission: the grading step fails (the run goes red) and the report names exactly its failures.
    fixture = LABS / "fixtures" / "http-server" / "py-traversal"
    shutil.rmtree(repo / "submission")
    shutil.copytree(fixture, repo / "submission")
    name, script = runs[-1]
    assert "grader check" in script, name
    done = run_script(script, repo, env, python_bin)
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    outcomes = junit_outcomes(repo / "reports" / "grader.xml", junit_schema)
    assert {c for c, o in outcomes.items() if o != "passed"} == expected_fails(fixture)

    # The selftest workflow, on the course's spec as it is, then with a fixture that no longer fails what it claims.
    env, runs, _ = github_run_steps(GITHUB_SELFTEST)
    triggers = yaml.safe_load(GITHUB_SELFTEST.read_text())[True]  # YAML 1.1 reads the key `on` as true
    assert triggers["push"]["paths"] == triggers["pull_request"]["paths"] == ["labs/**"]
    env["GRADER_PACKAGE"] = str(installed.wheel)
    for name, script in runs:
        done = run_script(script, repo, env, python_bin)
        assert done.returncode == 0, f"step {name!r} failed:\n{done.stdout[-3000:]}\n{done.stderr[-2000:]}"
    assert "selftest: 1 passed, 0 failed" in done.stdout
    expect = repo / "labs" / "fixtures" / "udp-echo-server" / "py-strips" / "expect.yaml"
    data = yaml.safe_load(expect.read_text())
    data["fails"].append("listens-on-port")  # a check this fixture passes
    expect.write_text(yaml.safe_dump(data))
    done = run_script(runs[-1][1], repo, env, python_bin)
    assert done.returncode == 1, done.stdout[-3000:]
    assert "selftest: 0 passed, 1 failed" in done.stdout


def test_gitlab_template_commands_grade_and_selftest_in_a_course_repository(
        installed: Installed, tmp_path: Path, junit_schema: xmlschema.XMLSchema) -> None:
    env, script, job = gitlab_job(GITLAB, "grade")
    assert job["artifacts"]["when"] == "always"
    assert job["artifacts"]["reports"]["junit"] == "reports/grader.xml"
    assert not set(load(GITLAB)) - GITLAB_RESERVED - {"grade", "selftest"}
    env["GRADER_PACKAGE"] = str(installed.wheel)

    fixture = LABS / "fixtures" / "http-server" / "py-traversal"
    repo = course_repository(tmp_path, fixture)
    python_bin = fresh_python(tmp_path)
    done = run_script(script, repo, env, python_bin)
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    outcomes = junit_outcomes(repo / "reports" / "grader.xml", junit_schema)
    assert set(outcomes) == spec_check_ids("http-server")
    assert {c for c, o in outcomes.items() if o != "passed"} == expected_fails(fixture)

    shutil.rmtree(repo / "submission")
    shutil.copytree(LABS / "reference" / "http-server", repo / "submission")
    done = run_script(script, repo, env, python_bin)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert set(junit_outcomes(repo / "reports" / "grader.xml", junit_schema).values()) == {"passed"}

    env, script, job = gitlab_job(GITLAB, "selftest")
    assert job["rules"] == [{"changes": ["labs/**/*"]}]
    env["GRADER_PACKAGE"] = str(installed.wheel)
    done = run_script(script, repo, env, python_bin)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "selftest: 1 passed, 0 failed" in done.stdout
