"""Grade real, widely used programs (socat, curl, Python's http.server, nginx, lighttpd) and event-driven test
servers (tests/programs/: edge-triggered epoll in C, asyncio in Python) with the shipped specs: they must pass
every check of the categories protocol, partial-io, concurrency, close, robustness and security. Where one
departs from a lab's contract on a status code, the test names exactly the checks expected to fail, and why."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from grader import catalog
from grader.engine.runner import Options, grade
from grader.report.model import RunResult
from grader.spec.loader import load_spec

MUST_PASS = {"protocol", "partial-io", "concurrency", "close", "robustness", "security"}


def run(lab: str, command: str, tmp_path: Path) -> RunResult:
    tool = command.split()[0]
    assert shutil.which(tool) or Path(tool).is_file(), f"{tool} is not installed: scripts/setup.sh installs it"
    empty = tmp_path / "empty"
    empty.mkdir(exist_ok=True)
    return grade(load_spec(catalog.resolve(lab)), empty, Options(run=command, build="", seed=5))


def failing(result: RunResult) -> dict[str, str]:
    return {c.id: f"{c.category}: {c.message}" for c in result.checks if c.outcome != "passed"}


def test_socat_as_tcp_echo_server(tmp_path: Path) -> None:
    # EXEC:cat, not PIPE: socat's PIPE address loops data through one pipe inside a single process and can
    # stall on a 4 MiB echo when the pipe and the socket fill at once; a separate cat keeps both directions moving.
    result = run("tcp-echo-server", "socat TCP-LISTEN:{port},reuseaddr,fork EXEC:cat", tmp_path)
    assert result.status == "graded"
    assert failing(result) == {}


def test_python_http_server(tmp_path: Path) -> None:
    command = f"{sys.executable} -m http.server {{port}} --bind 127.0.0.1 --directory {{docroot}}"
    result = run("http-server", command, tmp_path)
    assert result.status == "graded"
    bad = failing(result)
    # Python's http.server departs from the lab's contract on status codes only, never on the socket
    # categories: it answers a malformed request line HTTP/0.9-style (no status line at all).
    for cid, why in bad.items():
        assert why.split(":")[0] not in MUST_PASS, f"{cid} failed: {why}"
    assert set(bad) == EXPECTED_HTTP_SERVER_FAILURES, bad


def test_curl_as_http_client(tmp_path: Path) -> None:
    result = run("http-client", "curl -sS -f -o {outfile} {url}", tmp_path)
    assert result.status == "graded"
    bad = failing(result)
    for cid, why in bad.items():
        assert why.split(":")[0] not in MUST_PASS, f"{cid} failed: {why}"
    assert set(bad) == EXPECTED_CURL_FAILURES, bad


# nginx and lighttpd (Debian's packages) are event-driven: non-blocking sockets and edge-triggered epoll, which
# trust epoll(7)'s promise that a short read means a drained receive queue. They meet the whole http-server
# contract, so every check must pass; the configs are the least each needs, written to the test's own folder.
NGINX_CONF = """\
daemon off;
master_process off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    include /etc/nginx/mime.types;
    server {{
        listen 127.0.0.1:PORT;
        root DOCROOT;
    }}
}}
"""
LIGHTTPD_CONF = """\
server.document-root = "DOCROOT"
server.port = PORT
server.bind = "127.0.0.1"
server.errorlog = "{tmp}/error.log"
index-file.names = ("index.html")
mimetype.assign = (".html" => "text/html", ".txt" => "text/plain", ".css" => "text/css",
                   ".js" => "text/javascript", ".png" => "image/png", ".jpg" => "image/jpeg",
                   ".pdf" => "application/pdf")
"""


def launcher(tmp_path: Path, name: str, conf: str, command: str) -> str:
    """A script `name PORT DOCROOT` that writes the server's config for that port and execs the server: the port
    is chosen by the grader at run time, and a server that cannot read it from its command line gets it so."""
    folder = tmp_path / name
    folder.mkdir()
    (folder / "conf.in").write_text(conf.format(tmp=folder))
    script = folder / "run"
    script.write_text(
        "#!/bin/sh\n"
        f'sed -e "s|PORT|$1|" -e "s|DOCROOT|$2|" {folder}/conf.in > {folder}/server.conf\n'
        f"exec {command.format(conf=folder / 'server.conf', tmp=folder)}\n"
    )
    script.chmod(0o755)
    return f"{script} {{port}} {{docroot}}"


@pytest.mark.usefixtures("no_leftover_processes")
def test_nginx(tmp_path: Path) -> None:
    assert shutil.which("nginx") or Path("/usr/sbin/nginx").is_file(), "nginx: scripts/setup.sh installs it"
    command = launcher(tmp_path, "nginx", NGINX_CONF, "/usr/sbin/nginx -e {tmp}/error.log -p {tmp} -c {conf}")
    result = run("http-server", command, tmp_path)
    assert result.status == "graded", result.status_message
    assert failing(result) == {}


@pytest.mark.usefixtures("no_leftover_processes")
def test_lighttpd(tmp_path: Path) -> None:
    assert shutil.which("lighttpd") or Path("/usr/sbin/lighttpd").is_file(), "lighttpd: scripts/setup.sh installs it"
    command = launcher(tmp_path, "lighttpd", LIGHTTPD_CONF, "/usr/sbin/lighttpd -D -f {conf}")
    result = run("http-server", command, tmp_path)
    assert result.status == "graded", result.status_message
    assert failing(result) == {}


# Reference-grade event-driven servers (tests/programs/): each serves both labs, by its first argument.
PROGRAMS = Path(__file__).parent / "programs"
BOTH_LABS = [("http-server", "http {port} {docroot}"), ("tcp-echo-server", "echo {port}")]


@pytest.fixture(scope="module")
def epoll_server(tmp_path_factory: pytest.TempPathFactory) -> Path:
    gcc = shutil.which("gcc")
    assert gcc, "gcc: scripts/setup.sh installs it"
    exe = tmp_path_factory.mktemp("epoll") / "epoll_server"
    done = subprocess.run([gcc, "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(exe), str(PROGRAMS / "epoll_server.c")],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return exe


@pytest.mark.usefixtures("no_leftover_processes")
@pytest.mark.parametrize(("lab", "args"), BOTH_LABS)
def test_epoll_edge_triggered_server(epoll_server: Path, lab: str, args: str, tmp_path: Path) -> None:
    result = run(lab, f"{epoll_server} {args}", tmp_path)
    assert result.status == "graded", result.status_message
    assert failing(result) == {}


@pytest.mark.usefixtures("no_leftover_processes")
@pytest.mark.parametrize(("lab", "args"), BOTH_LABS)
def test_asyncio_server(lab: str, args: str, tmp_path: Path) -> None:
    result = run(lab, f"{sys.executable} {PROGRAMS / 'asyncio_server'} {args}", tmp_path)
    assert result.status == "graded", result.status_message
    assert failing(result) == {}


# Python's http.server answers a request line it cannot parse, and an HTTP/2.0 request, HTTP/0.9-style: an
# HTML error page with no status line at all (its send_error() drops the status line whenever the request's
# version is unknown). The lab's contract asks for "400 Bad Request" and "505" (or 400): status codes only.
EXPECTED_HTTP_SERVER_FAILURES: set[str] = {"bad-request-garbage", "bad-request-no-target", "bad-version"}
# curl meets the whole http-client contract (-f gives the non-zero exit on 4xx/5xx).
EXPECTED_CURL_FAILURES: set[str] = set()


if __name__ == "__main__":
    pytest.main([__file__, "-q"])
