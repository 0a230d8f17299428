"""pip install brings the labs: the sdist and the wheel hold every spec, spec file, reference program and fixture
(executable ones still executable, names with spaces included), and the grader installed from the wheel into a
fresh venv outside the checkout lists, explains, grades and selftests from there."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import yaml
from installed import Installed, clean_env, sdist_modes, tracked_files, wheel_modes
from progs import MARK_VAR
from serving import SERVICES, http_get, start_serve, tcp_echo

SELFTEST_TIMEOUT = 240


def run(installed: Installed, cwd: Path, *args: str, env: dict[str, str] | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(installed.grader), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, env=env or clean_env(installed), stdin=subprocess.DEVNULL)


def test_sdist_and_wheel_hold_every_lab_file_with_its_mode(installed: Installed) -> None:
    tracked = tracked_files("grader")
    labs = {p: x for p, x in tracked.items() if p.startswith("grader/labs/")}
    assert any(" " in p for p in labs), "expected a lab file with a space in its name (hello world.txt)"
    assert sum(labs.values()) >= 6, "expected the executable reference programs among the lab files"
    for name, modes in (("sdist", sdist_modes(installed.sdist)), ("wheel", wheel_modes(installed.wheel))):
        missing = sorted(set(tracked) - set(modes))
        assert not missing, f"the {name} lacks {len(missing)} tracked files, e.g. {missing[:5]}"
        wrong = sorted(p for p, x in tracked.items() if modes[p] != x)
        assert not wrong, f"the {name} changed the executable bit of {wrong[:5]}"
        assert not [p for p in modes if "__pycache__" in p or p.endswith(".pyc")], f"the {name} holds bytecode"
    package = installed.package
    assert not package.is_relative_to(Path(__file__).resolve().parent.parent), f"imported from the checkout: {package}"
    for path, executable in labs.items():
        target = package.parent / path
        assert target.is_file(), f"not installed: {target}"
        assert os.access(target, os.X_OK) == executable, f"executable bit lost or gained on install: {target}"


def test_installed_grader_lists_explains_grades_and_selftests(installed: Installed, tmp_path: Path) -> None:
    labs = installed.package / "labs"
    work = tmp_path / "work"
    work.mkdir()
    # The slowest command (about 30 s, mostly waiting on the programs) runs while the others do.
    selftest_log = tmp_path / "selftest.log"
    with selftest_log.open("w") as log:
        selftest = subprocess.Popen([str(installed.grader), "selftest", "time-server"], cwd=work, stdout=log,
                                    stderr=subprocess.STDOUT, env=clean_env(installed), stdin=subprocess.DEVNULL)
    try:
        listed = run(installed, work, "list")
        assert listed.returncode == 0, listed.stderr
        assert [line.split()[0] for line in listed.stdout.splitlines()] == [
            "http-client", "http-server", "tcp-echo-client", "tcp-echo-server", "time-server", "udp-echo-server"]

        explained = run(installed, work, "explain", "http-server")
        assert explained.returncode == 0, explained.stderr
        spec = yaml.safe_load((labs / "specs" / "http-server.yaml").read_text())
        assert f"{len(spec['checks'])} checks" in explained.stdout
        for check in spec["checks"]:
            assert check["id"] in explained.stdout

        # A student's copy of the reference, graded from a folder that is neither the checkout nor the venv.
        good = shutil.copytree(labs / "reference" / "tcp-echo-server", tmp_path / "alice")
        junit, report = tmp_path / "alice.xml", tmp_path / "alice.json"
        graded = run(installed, work, "check", "tcp-echo-server", str(good), "--junit", str(junit),
                     "--json", str(report))
        assert graded.returncode == 0, graded.stdout + graded.stderr
        checks = json.loads(report.read_text())["checks"]
        assert checks and {c["outcome"] for c in checks} == {"passed"}
        assert "<testsuite" in junit.read_text()

        # A C fixture (built with make in the grader's work folder) fails exactly the checks its expect.yaml names.
        fixture = labs / "fixtures" / "tcp-echo-server" / "c-sigpipe"
        bad = shutil.copytree(fixture, tmp_path / "bob")
        graded = run(installed, work, "check", "tcp-echo-server", str(bad), "--json", str(report))
        assert graded.returncode == 1, graded.stdout + graded.stderr
        failing = {c["id"] for c in json.loads(report.read_text())["checks"] if c["outcome"] != "passed"}
        assert failing == set(yaml.safe_load((fixture / "expect.yaml").read_text())["fails"])

        assert selftest.wait(timeout=SELFTEST_TIMEOUT) == 0, selftest_log.read_text()[-4000:]
        assert "selftest: 1 passed, 0 failed" in selftest_log.read_text()
    finally:
        if selftest.poll() is None:
            selftest.kill()
            selftest.wait()
    assert not list(work.iterdir()), f"the grader left files in its working folder: {list(work.iterdir())}"


def test_installed_list_with_nothing_to_list_says_where_it_looked(installed: Installed, tmp_path: Path) -> None:
    """The shipped specs folder gone from the install and GRADER_SPECS_DIR naming an empty folder: an error naming
    both folders, not an empty list."""
    empty = tmp_path / "course-specs"
    empty.mkdir()
    shipped = installed.package / "labs" / "specs"
    env = dict(clean_env(installed), GRADER_SPECS_DIR=str(empty))

    listed = run(installed, tmp_path, "list", env=env)
    assert listed.returncode == 0 and "tcp-echo-server" in listed.stdout, "an empty course folder adds nothing"

    aside = shipped.with_name("specs.aside")
    shipped.rename(aside)
    try:
        listed = run(installed, tmp_path, "list", env=env)
    finally:
        aside.rename(shipped)
    assert listed.returncode == 2, listed.stdout + listed.stderr
    assert listed.stdout == ""
    message = " ".join(listed.stderr.split())
    assert "no specs to list" in message
    assert str(empty) in message and f"{shipped} (missing)" in message


def test_installed_grader_serves_the_reference_services(installed: Installed, tmp_path: Path,
                                                        no_leftover_processes: None) -> None:
    env = clean_env(installed)
    env[MARK_VAR] = os.environ[MARK_VAR]  # the fixture's mark: every service must be gone
    served = start_serve([str(installed.grader), "serve"], tmp_path, env)
    try:
        where = served.listening()
        assert sorted(where) == sorted(SERVICES)
        head, body = http_get(where["http-server"][1], "/hello%20world.txt")
        sample = installed.package / "labs" / "reference" / "sample-docroot" / "hello world.txt"
        assert head.startswith(b"HTTP/1.0 200 ") and body == sample.read_bytes()
        assert tcp_echo(where["tcp-echo-server"][1], b"installed\n") == b"installed\n"
    finally:
        status = served.stop(signal.SIGTERM)
    assert status == 0, served.errors()
