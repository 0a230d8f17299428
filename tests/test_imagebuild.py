"""scripts/build-image's parts that need no build: the mirror read from apt's configuration, deadlines, errors."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from grader import imagebuild
from grader.imagebuild import BuildError, debian_mirror

DEB822 = """\
Types: deb
# a comment
URIs: http://mirror.invalid/debian
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.invalid/debian-security
Suites: bookworm-security
Components: main
"""


def apt_dir(tmp_path: Path, sources_list: str = "", parts: dict[str, str] | None = None) -> Path:
    (tmp_path / "sources.list.d").mkdir()
    if sources_list:
        (tmp_path / "sources.list").write_text(sources_list)
    for name, text in (parts or {}).items():
        (tmp_path / "sources.list.d" / name).write_text(text)
    return tmp_path


def test_the_mirror_comes_from_a_deb822_source(tmp_path: Path) -> None:
    assert debian_mirror("bookworm", apt_dir(tmp_path, parts={"debian.sources": DEB822})) == "http://mirror.invalid/debian"


def test_the_mirror_comes_from_a_one_line_source_with_options(tmp_path: Path) -> None:
    listing = (
        "# deb http://commented.invalid/debian bookworm main\n"
        "deb-src http://src.invalid/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://one.invalid/debian bookworm main # trailing\n"
    )
    assert debian_mirror("bookworm", apt_dir(tmp_path, listing)) == "http://one.invalid/debian"


def test_a_disabled_source_or_one_without_main_is_passed_over(tmp_path: Path) -> None:
    disabled = "Types: deb\nURIs: http://off.invalid/debian\nSuites: bookworm\nComponents: main\nEnabled: no\n"
    parts = {
        "a.sources": disabled,
        "b.list": "deb http://contrib.invalid/debian bookworm contrib\n",
        "c.list": "deb http://good.invalid/debian bookworm main\n",
        "d.txt": "deb http://ignored.invalid/ bookworm main\n",
    }
    assert debian_mirror("bookworm", apt_dir(tmp_path, parts=parts)) == "http://good.invalid/debian"


def test_a_mirror_of_another_debian_suite_serves_too(tmp_path: Path) -> None:
    listing = (
        "deb http://ubuntu.invalid/ubuntu noble main\n"
        "deb http://security.invalid/debian-security trixie-security main\n"
        "deb http://trixie.invalid/debian trixie main\n"
    )
    assert debian_mirror("bookworm", apt_dir(tmp_path, listing)) == "http://trixie.invalid/debian"


def test_no_source_for_the_suite_says_what_to_do(tmp_path: Path) -> None:
    only_other = apt_dir(tmp_path, "deb http://ubuntu.invalid/ubuntu noble main\n",
                         {"x.sources": DEB822.replace("bookworm", "jammy")})
    with pytest.raises(BuildError, match=r"no apt source for Debian bookworm main .*--mirror URI"):
        debian_mirror("bookworm", only_other)


def test_a_step_that_hangs_is_stopped_at_its_deadline(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    started = time.monotonic()
    with pytest.raises(BuildError, match=r"hang did not finish within 1 s and was stopped"):
        imagebuild.run(["sh", "-c", f"sleep 60 & echo $! > {pidfile}; wait"], 1.0, what="hang", capture=True)
    assert time.monotonic() - started < 10
    # The whole process group was killed, the backgrounded sleep too (dead: gone, or a zombie until reaped).
    child, deadline = int(pidfile.read_text()), time.monotonic() + 5
    while _state(child) not in ("gone", "Z") and time.monotonic() < deadline:
        time.sleep(0.01)  # SIGKILL was sent; polling until the kernel has ended it, bounded by the deadline
    assert _state(child) in ("gone", "Z")


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


def test_a_step_that_fails_or_is_missing_says_so() -> None:
    with pytest.raises(BuildError, match=r"probe failed \(exit status 3\): broken"):
        imagebuild.run(["sh", "-c", "echo broken >&2; exit 3"], 10, what="probe", capture=True)
    with pytest.raises(BuildError, match="probe: cannot run no-such-tool-here"):
        imagebuild.run(["no-such-tool-here"], 10, what="probe")


def test_a_missing_debootstrap_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # A base that does not exist yet must be made, and this PATH has docker but no debootstrap.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    docker = next(Path(d) / "docker" for d in os.environ["PATH"].split(os.pathsep) if (Path(d) / "docker").is_file())
    (bindir / "docker").symlink_to(docker)
    monkeypatch.setenv("PATH", str(bindir))
    monkeypatch.setattr(imagebuild, "BASE_IMAGE", f"socket-lab-grader-base:absent-{os.getpid()}")
    with pytest.raises(BuildError, match=r"debootstrap is missing .*apt-get install debootstrap"):
        imagebuild.ensure_base(mirror=None, force=False, timeout=10)


def test_wheel_platforms_cover_older_manylinux_tags() -> None:
    tags = imagebuild.wheel_platforms("2.36", "x86_64")
    assert tags[0] == "manylinux_2_36_x86_64" and "manylinux_2_17_x86_64" in tags and "manylinux2014_x86_64" in tags
    assert "manylinux_2_37_x86_64" not in tags
