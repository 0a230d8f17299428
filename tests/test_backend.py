"""The backend seam's own parts: leased ports, resource limits, the jail's view, and the README's tables."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from grader.driver import jail
from grader.driver.backend import Backend, LocalBackend
from grader.driver.limits import Limits
from grader.driver.observe import LocalObserver, Observer
from grader.driver.ports import PortPool, byteswap16, ephemeral_low
from grader.errors import UsageError

ROOT = Path(__file__).resolve().parent.parent


def test_backends_satisfy_the_protocol(tmp_path: Path) -> None:
    sub = tmp_path / "sub"
    sub.mkdir()
    (tmp_path / "w1").mkdir()
    local = LocalBackend(sub, tmp_path / "w1")
    (tmp_path / "w2").mkdir()
    jailed = jail.JailBackend(sub, tmp_path / "w2")
    try:
        assert isinstance(local, Backend) and isinstance(jailed, Backend)
        assert isinstance(LocalObserver(), Observer)
    finally:
        local.close()
        jailed.close()


def test_leased_ports_are_below_the_ephemeral_range_and_exclusive(tmp_path: Path) -> None:
    pool = PortPool(lock_dir=tmp_path)
    port = pool.lease()
    assert 20000 <= port < ephemeral_low()
    assert set(pool.held()) == {port, byteswap16(port)}
    # Another process (another grading) cannot lease the same port while this one holds it.
    code = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from grader.driver.ports import PortPool
        pool = PortPool(lock_dir=Path({str(tmp_path)!r}), low={port}, high={port + 1})
        try:
            pool.lease(avoid_swapped=False)
        except Exception as exc:
            print("refused:", exc)
        else:
            print("leased")
        """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    assert out.stdout.startswith("refused: no free port"), out.stdout + out.stderr
    pool.release(port)
    assert pool.held() == []
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    assert out.stdout.strip() == "leased", out.stdout + out.stderr


def test_a_port_in_use_is_never_leased(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        taken = busy.getsockname()[1]
        with pytest.raises(Exception, match="no free port"):
            PortPool(lock_dir=tmp_path, low=taken, high=taken + 1).lease(avoid_swapped=False)


def test_a_port_with_a_time_wait_leftover_is_never_leased(tmp_path: Path) -> None:
    # A server that closes first leaves its side in TIME_WAIT on its own port: a server without SO_REUSEADDR
    # could not bind it for a minute, so the next grading must not be given it.
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            server, _ = listener.accept()
            server.close()  # the server's side closes first
            assert client.recv(1) == b""
    with pytest.raises(Exception, match="no free port"):
        PortPool(lock_dir=tmp_path, low=port, high=port + 1).lease(avoid_swapped=False)


def test_limits_parse_and_refuse_bad_values() -> None:
    limits = Limits.parse(["cpu_seconds=5", "memory-mb=256"])
    assert (limits.cpu_seconds, limits.memory_mb) == (5, 256)
    for bad in ("cpu_seconds", "nope=1", "cpu_seconds=x", "cpu_seconds=0"):
        with pytest.raises(UsageError):
            Limits.parse([bad])


def test_limits_reach_the_program(tmp_path: Path) -> None:
    """The program runs under the limits (read back from its own /proc/self/limits)."""
    sub = tmp_path / "sub"
    sub.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    backend = LocalBackend(sub, work, Limits(cpu_seconds=7, open_files=99, file_size_mb=3))
    try:
        proc = backend.start(["cat", "/proc/self/limits"])
        assert proc.wait(10) == 0
        text = proc.stdout.value().decode()
    finally:
        backend.close()
    rows = {line[:26].strip(): line[26:].split() for line in text.splitlines()[1:]}
    assert rows["Max cpu time"][:2] == ["7", "7"]
    assert rows["Max open files"][:2] == ["99", "99"]
    assert rows["Max file size"][:2] == [str(3 * 1024 * 1024)] * 2


def test_the_jail_shows_only_the_submissions_files(tmp_path: Path) -> None:
    assert jail.available() is None, jail.available()
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "mine.txt").write_text("mine\n")
    files = tmp_path / "files"
    (files / "www").mkdir(parents=True)
    (files / "www" / "index.html").write_text("<p>hi</p>\n")
    (files / "secret.txt").write_text("outside the root\n")
    work = tmp_path / "work"
    work.mkdir()
    backend = jail.JailBackend(sub, work)
    try:
        docroot = backend.expose(files / "www")
        script = (f"id -u; cat mine.txt; cat {docroot}/index.html; cat {docroot}/../secret.txt; "
                  f"ls {tmp_path} 2>&1 || true; ls /root 2>&1 || true; touch /usr/x 2>&1 || true")
        proc = backend.start(["sh", "-c", script])
        assert proc.wait(20) == 0, proc.output()
        out = proc.stdout.value().decode()
    finally:
        backend.close()
    lines = out.splitlines()
    assert int(lines[0]) == backend.uid and backend.uid >= jail.UID_LOW
    assert lines[1:4] == ["mine", "<p>hi</p>", "outside the root"]
    assert "No such file or directory" in lines[4] and "No such file or directory" in lines[5]
    assert "Read-only file system" in lines[6]


def test_readme_tables_match_the_code() -> None:
    readme = (ROOT / "README.md").read_text()
    for f in dataclasses.fields(Limits):
        unit = f" {f.metadata['unit']}" if f.metadata["unit"] else ""
        assert f"| `{f.name}` | {f.default}{unit} | {f.metadata['doc']} |" in readme, f.name
    assert os.path.exists(ROOT / "tests" / "hostile" / "hostile.py")
