"""``grader serve``: the reference services, for real, over loopback; stopped by a signal with nothing left."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest
from serving import (
    SERVICES,
    assert_rfc868,
    children_of,
    connect,
    http_get,
    start_serve,
    tcp_echo,
    udp_exchange,
)

from grader import catalog

GRADER = [sys.executable, "-m", "grader", "serve"]
DOCROOT = catalog.LABS_DIR / "reference" / "sample-docroot"


def test_serve_runs_every_reference_service_until_sigterm(tmp_path: Path, no_leftover_processes: None) -> None:
    served = start_serve(GRADER, tmp_path)
    try:
        where: dict[str, tuple[str, int, str]] = {}
        for _ in SERVICES:  # each line is printed once that service listens: it answers at once, at the first try
            ((name, (host, port, protocols)),) = served.listening(1).items()
            if "tcp" in protocols.split("+"):
                connect(port).close()
            else:
                assert udp_exchange(port, b"first") == b"first"
            where[name] = (host, port, protocols)
        assert list(where) == list(SERVICES)
        assert {name: where[name][2] for name in SERVICES} == {
            "http-server": "tcp", "tcp-echo-server": "tcp", "udp-echo-server": "udp", "time-server": "tcp+udp"}
        assert {host for host, _, _ in where.values()} == {"127.0.0.1"}
        ports = {name: port for name, (_, port, _) in where.items()}
        assert len(set(ports.values())) == 4 and 0 not in ports.values()

        head, body = http_get(ports["http-server"], "/")
        assert head.startswith(b"HTTP/1.0 200 ") and body == (DOCROOT / "index.html").read_bytes()
        head, body = http_get(ports["http-server"], "/hello%20world.txt")
        assert head.startswith(b"HTTP/1.0 200 ") and body == (DOCROOT / "hello world.txt").read_bytes()
        head, _ = http_get(ports["http-server"], "/no-such-file")
        assert head.startswith(b"HTTP/1.0 404 ")

        data = bytes(range(256)) * 400  # 100 KiB, every byte value
        assert tcp_echo(ports["tcp-echo-server"], data) == data
        assert udp_exchange(ports["udp-echo-server"], b"ping \x00\xff") == b"ping \x00\xff"
        assert udp_exchange(ports["udp-echo-server"], b"") == b""
        with connect(ports["time-server"]) as sock:
            reply = b""
            while chunk := sock.recv(16):
                reply += chunk
        assert_rfc868(reply)
        assert_rfc868(udp_exchange(ports["time-server"], b""))

        children = children_of(served.proc.pid)
        assert len(children) == 4, children
    finally:
        status = served.stop(signal.SIGTERM)
    assert status == 0, served.errors()
    assert "Traceback" not in served.errors()
    for pid, _ in children:
        assert not Path(f"/proc/{pid}").exists(), f"service {pid} still exists after serve ended"
    for name in ("http-server", "tcp-echo-server", "time-server"):
        with pytest.raises(ConnectionRefusedError):
            connect(ports[name]).close()


def _free_port_base(host: str, attempts: int = 50) -> int:
    """A port N such that N..N+3 are free for TCP and UDP on ``host`` just now (the kernel picks N)."""
    for _ in range(attempts):
        with socket.socket() as probe:
            probe.bind((host, 0))
            base: int = probe.getsockname()[1]
        if base > 65535 - 3:
            continue
        socks = []
        try:
            for port in range(base, base + 4):
                for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                    s = socket.socket(socket.AF_INET, kind)
                    socks.append(s)
                    s.bind((host, port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError("no 4 consecutive free ports found")


def test_serve_port_base_on_all_interfaces(tmp_path: Path, no_leftover_processes: None) -> None:
    """As in a container (``docker run -p ... serve --host 0.0.0.0``); the test talks to it over loopback only."""
    base = _free_port_base("0.0.0.0")
    served = start_serve([*GRADER, "--host", "0.0.0.0", "--port-base", str(base), "--docroot", str(tmp_path)],
                         tmp_path)
    (tmp_path / "mine.txt").write_bytes(b"my own document root\n")
    try:
        where = served.listening()
        assert {name: (host, port) for name, (host, port, _) in where.items()} == {
            "http-server": ("0.0.0.0", base), "tcp-echo-server": ("0.0.0.0", base + 1),
            "udp-echo-server": ("0.0.0.0", base + 2), "time-server": ("0.0.0.0", base + 3)}
        _, body = http_get(base, "/mine.txt")
        assert body == b"my own document root\n"
        assert tcp_echo(base + 1, b"over loopback\n") == b"over loopback\n"
        assert udp_exchange(base + 2, b"x") == b"x"
        assert_rfc868(udp_exchange(base + 3, b""))
    finally:
        status = served.stop(signal.SIGINT)  # Ctrl-C
    assert status == 0, served.errors()


def test_serve_port_in_use_is_a_clear_error_and_stops_the_rest(tmp_path: Path,
                                                               no_leftover_processes: None) -> None:
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        served = start_serve([*GRADER, "--echo-port", str(port)], tmp_path)
        try:
            assert list(served.listening(1)) == ["http-server"]  # started before the echo server
            assert served.proc.wait(timeout=30) == 1
        finally:
            served.stop()
    message = served.errors()
    assert f"serve: tcp-echo-server exited with status 1 (OSError: [Errno 98] Address already in use) while " \
           f"starting on port {port}: another program uses port {port}" in message, message


def test_serve_stops_everything_when_a_service_dies(tmp_path: Path, no_leftover_processes: None) -> None:
    served = start_serve(GRADER, tmp_path)
    try:
        served.listening()
        children = children_of(served.proc.pid)
        (victim,) = [pid for pid, cmdline in children if "udp_echo" in cmdline]
        os.kill(victim, signal.SIGKILL)
        assert served.proc.wait(timeout=30) == 1
    finally:
        served.stop()
    assert "serve: udp-echo-server was killed by SIGKILL; stopping the others" in served.errors()
    deadline = time.monotonic() + 5
    while any(Path(f"/proc/{pid}").exists() for pid, _ in children) and time.monotonic() < deadline:
        time.sleep(0.05)  # reaped by serve before it exits; /proc catches up at once, this only bounds a bug
    assert not [pid for pid, _ in children if Path(f"/proc/{pid}").exists()]


@pytest.mark.parametrize(("args", "message"), [
    (["--port-base", "65534"], "--port-base 65534: expected 1-65532"),
    (["--time-port", "70000"], "--time-port 70000: expected a port number 0-65535"),
    (["--host", "my-laptop"], "--host 'my-laptop': expected an IP address"),
    (["--docroot", "/nonexistent/www"], "--docroot /nonexistent/www: not a folder"),
    (["--http-port", "eighty"], "argument --http-port: invalid int value: 'eighty'"),
])
def test_serve_bad_arguments(tmp_path: Path, args: list[str], message: str) -> None:
    served = start_serve([*GRADER, *args], tmp_path)
    try:
        assert served.proc.wait(timeout=30) == 2
    finally:
        served.stop()
    assert message in " ".join(served.errors().split()), served.errors()


def test_reference_serve_script_still_works(tmp_path: Path, no_leftover_processes: None) -> None:
    """``python3 grader/labs/reference/serve.py`` with the bare interpreter, from another folder."""
    base_python = Path(sys.base_prefix) / "bin" / "python3"
    assert base_python.is_file(), base_python
    script = catalog.LABS_DIR / "reference" / "serve.py"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    served = start_serve([str(base_python), "-I", str(script), "--udp-port", "0"], tmp_path, env)
    try:
        where = served.listening()
        assert tcp_echo(where["tcp-echo-server"][1], b"still here\n") == b"still here\n"
    finally:
        status = served.stop(signal.SIGTERM)
    assert status == 0, served.errors()


def test_serve_on_ipv6_loopback_stops_on_sighup(tmp_path: Path, no_leftover_processes: None) -> None:
    served = start_serve([*GRADER, "--host", "::1"], tmp_path)
    try:
        where = served.listening()
        assert {host for host, _, _ in where.values()} == {"::1"}
        assert tcp_echo(where["tcp-echo-server"][1], b"six\n", host="::1") == b"six\n"
        assert_rfc868(udp_exchange(where["time-server"][1], b"", host="::1"))
    finally:
        status = served.stop(signal.SIGHUP)
    assert status == 0, served.errors()
