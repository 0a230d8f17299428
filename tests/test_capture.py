"""--pcap: a packet capture of each failed check's traffic (tcpdump), read back with tshark (Debian's package)."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from progs import py_prog, write_spec

from grader import catalog
from grader.cli import main
from grader.engine.feedback import FeedbackOptions
from grader.engine.runner import Options, grade
from grader.spec.loader import load_spec

pytestmark = pytest.mark.usefixtures("no_leftover_processes", "direct_python")

FIXTURES = catalog.LABS_DIR / "fixtures"


def tshark_fields(pcap: Path, *fields: str) -> list[list[str]]:
    tshark = shutil.which("tshark")
    assert tshark is not None, "tshark is required (scripts/setup.sh installs it)"
    args = [tshark, "-r", str(pcap), "-T", "fields", "-E", "separator=|"]
    for f in fields:
        args += ["-e", f]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return [line.split("|") for line in done.stdout.splitlines()]


def payload(pcap: Path) -> bytes:
    """Every TCP payload byte in the capture, in order."""
    return b"".join(bytes.fromhex(row[0].replace(":", "")) for row in tshark_fields(pcap, "tcp.payload") if row[0])


UNRELATED: list[int] = []


def unrelated_connection(ctx: object, args: object) -> None:
    """A `call` step: traffic on loopback that is no part of the check (another program's), during the check."""
    with socket.create_server(("127.0.0.1", 0)) as server, \
            socket.create_connection(server.getsockname(), timeout=2) as client:
        conn, _ = server.accept()
        with conn:
            client.sendall(b"unrelated traffic")
            assert conn.recv(100) == b"unrelated traffic"
        UNRELATED.append(server.getsockname()[1])


def test_only_the_check_s_ports_are_captured(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, """
        - id: echo-wrong
          steps:
            - connect: {}
            - send: {text: "hello\\n"}
            - call: {function: "test_capture.unrelated_connection"}
            - expect_bytes: {text: "howdy\\n", timeout: 3}
        """)
    out = tmp_path / "pcaps"
    out.mkdir()
    run = grade(load_spec(spec), py_prog(tmp_path / "sub", "serve_threaded(echo)\n"),
                Options(seed=1, feedback=FeedbackOptions(pcap=out)))
    assert run.checks[0].outcome == "failed" and UNRELATED
    pcap = out / "step-test.echo-wrong.pcap"
    assert payload(pcap) == b"hello\nhello\n"  # sent, and echoed; not the unrelated connection's bytes
    seen = {int(p) for row in tshark_fields(pcap, "tcp.srcport", "tcp.dstport") for p in row}
    assert UNRELATED[-1] not in seen


def test_a_failed_server_check_is_captured_and_a_passing_one_is_not(tmp_path: Path, ) -> None:
    out = tmp_path / "pcaps"
    out.mkdir()
    spec = load_spec(catalog.resolve("http-server"))
    run = grade(spec, FIXTURES / "http-server" / "c-one-recv",
                Options(seed=5, only=("split-request-line", "get-index"), feedback=FeedbackOptions(pcap=out)))
    by_id = {c.id: c for c in run.checks}
    assert by_id["get-index"].outcome == "passed" and by_id["get-index"].pcap == ""
    failed = by_id["split-request-line"]
    assert failed.outcome == "failed"
    pcap = out / "http-server.split-request-line.pcap"
    assert failed.pcap == str(pcap)
    assert sorted(p.name for p in out.iterdir()) == [pcap.name]  # no part files, nothing for the passing check
    data = payload(pcap)
    assert b"GET /he" in data and b"HTTP/1.0 400 Bad Request\r\n" in data
    rows = tshark_fields(pcap, "tcp.srcport", "tcp.dstport", "udp.srcport")
    assert rows and all(not r[2] for r in rows)  # TCP only: the capture's own marker datagram is cut off
    common = set.intersection(*({int(r[0]), int(r[1])} for r in rows))
    assert common  # every packet is to or from the server's port


def test_a_failed_client_check_is_captured_from_the_grader_s_listener(tmp_path: Path) -> None:
    out = tmp_path / "pcaps"
    code = main(["check", "http-client", str(FIXTURES / "http-client" / "c-lf-only"), "--only", "crlf-line-ends",
                 "--seed", "5", "--pcap", str(out), "--quiet", "--no-differential", "--no-shrink"])
    assert code == 1
    pcap = out / "http-client.crlf-line-ends.pcap"
    assert b"GET /crlf.txt HTTP/1.0\nHost: 127.0.0.1:" in payload(pcap)
    assert [p.name for p in out.iterdir()] == [pcap.name]


def test_pcap_needs_a_usable_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code = main(["check", "http-server", str(FIXTURES / "http-server" / "c-one-recv"), "--pcap", str(blocker / "x")])
    assert code == 2


def test_captures_of_two_ports_merge_into_one_pcap(tmp_path: Path) -> None:
    from grader.driver.capture import Capture, merge

    servers = [socket.create_server(("127.0.0.1", 0)) for _ in range(2)]
    try:
        parts = []
        for i, server in enumerate(servers):
            parts.append(Capture(tmp_path / f"part{i}.pcap", [server.getsockname()[1]]))
            with socket.create_connection(server.getsockname(), timeout=2) as client:
                conn, _ = server.accept()
                with conn:
                    client.sendall(f"to server {i}".encode())
                    assert conn.recv(100) == f"to server {i}".encode()
        done = merge([p.stop() for p in parts], tmp_path / "all.pcap")
    finally:
        for server in servers:
            server.close()
    assert done == [tmp_path / "all.pcap"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["all.pcap"]
    assert payload(tmp_path / "all.pcap") == b"to server 0to server 1"
