"""expect_http against a small real HTTP server whose routes answer correctly or with a classic mistake."""

from __future__ import annotations

from pathlib import Path

import pytest
from progs import py_prog, run_grade, write_spec

pytestmark = pytest.mark.usefixtures("no_leftover_processes", "direct_python")

INDEX = b"<html><body>hello</body></html>\n"
assert len(INDEX) == 32

# ROUTES maps "METHOD /path" to (the raw response, whether to close the connection after it). Each response is
# sent with one sendall(), so it arrives in one piece.
HTTP_SERVER = """
def handler(conn):
    head = b""
    while b"\\r\\n\\r\\n" not in head:
        chunk = conn.recv(4096)
        if not chunk:
            conn.close()
            return
        head += chunk
    method, target = head.split(b" ")[:2]
    raw, close = ROUTES[f"{method.decode()} {target.decode()}"]
    conn.sendall(raw)
    if close:
        conn.close()
    else:
        kept.append(conn)          # the bug for the routes that say so: the connection stays open

kept = []
serve_threaded(handler)
"""


def response(status: str, headers: dict[str, str], body: bytes, *, length: int | None = None) -> bytes:
    lines = [f"HTTP/1.0 {status}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines.append(f"Content-Length: {len(body) if length is None else length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


OK_HEADERS = {"Content-Type": "text/html", "Server": "mini/1.0"}
ROUTES: dict[str, tuple[bytes, bool]] = {
    "GET /": (response("200 OK", OK_HEADERS, INDEX), True),
    "GET /missing": (response("404 Not Found", {"Content-Type": "text/html"}, b"<h1>404</h1>\n"), True),
    "GET /plain": (response("200 OK", {"Content-Type": "text/plain"}, b"hello, world\n"), True),
    "GET /lie-long": (response("200 OK", {}, b"0123456789", length=100), True),
    "GET /lie-short": (response("200 OK", {}, b"0123456789", length=5), True),
    "HEAD /": (response("200 OK", OK_HEADERS, b"", length=len(INDEX)), True),
    "HEAD /with-body": (response("200 OK", OK_HEADERS, INDEX), True),
    "GET /keep": (response("200 OK", OK_HEADERS, INDEX), False),
    "GET /http09": (INDEX, True),
    "GET /lowercase": (b"http/1.0 200 OK\r\nContent-Length: 32\r\n\r\n" + INDEX, True),
}


@pytest.fixture
def server(tmp_path: Path) -> Path:
    return py_prog(tmp_path / "sub", f"ROUTES = {ROUTES!r}\n" + HTTP_SERVER)


def check(cid: str, request: str, expect: str) -> str:
    """One check: connect, send ``request`` (a request line), expect_http with ``expect`` (YAML flow map body)."""
    method = request.split()[0]
    return f"""
- id: {cid}
  steps:
    - connect: {{}}
    - send: {{text: "{request} HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n"}}
    - expect_http: {{method: {method}, timeout: 3, {expect}}}
"""


def grade_checks(tmp_path: Path, server: Path, *checks: str) -> tuple[dict[str, str], dict[str, str]]:
    spec = write_spec(tmp_path, "".join(checks), files={"files/index.html": INDEX})
    g = run_grade(spec, server)
    return g.outcomes, g.messages


def test_status(tmp_path: Path, server: Path) -> None:
    outcomes, messages = grade_checks(
        tmp_path, server,
        check("ok", "GET /", "status: 200"),
        check("not-found", "GET /missing", "status: 200"),
        check("one-of", "GET /missing", "status: [404, 410]"),
        check("status-not", "GET /missing", "status_not: [404]"),
    )
    assert outcomes == {"ok": "passed", "not-found": "failed", "one-of": "passed", "status-not": "failed"}, messages
    assert messages["not-found"] == "expected status 200, got 404 Not Found"
    assert messages["status-not"] == "status 404 is not acceptable here"


def test_headers(tmp_path: Path, server: Path) -> None:
    outcomes, messages = grade_checks(
        tmp_path, server,
        check("present", "GET /", "headers_present: [Content-Type, server]"),
        check("present-missing", "GET /plain", "headers_present: [Content-Type, Server]"),
        check("equal", "GET /", "headers: {content-type: text/html}"),
        check("equal-differs", "GET /plain", "headers: {content-type: text/html}"),
        check("equal-missing", "GET /plain", "headers: {server: mini/1.0}"),
        check("matches", "GET /", "header_matches: {server: '^mini/[0-9]'}"),
        check("matches-differs", "GET /plain", "header_matches: {content-type: html}"),
    )
    assert outcomes == {
        "present": "passed", "present-missing": "failed", "equal": "passed", "equal-differs": "failed",
        "equal-missing": "failed", "matches": "passed", "matches-differs": "failed",
    }, messages
    assert messages["present-missing"] == "expected a Server header, got none (headers: content-type, content-length)"
    assert messages["equal-differs"] == "expected header content-type: text/html, got content-type: text/plain"
    assert messages["equal-missing"].startswith("expected header server: mini/1.0, got no server header")
    assert messages["matches-differs"] == "expected header content-type matching /html/, got 'text/plain'"


def test_body(tmp_path: Path, server: Path) -> None:
    outcomes, messages = grade_checks(
        tmp_path, server,
        check("file", "GET /", "body_file: files/index.html"),
        check("file-differs", "GET /plain", "body_file: files/index.html"),
        check("text", "GET /plain", "body_text: \"hello, world\\n\""),
        check("text-differs", "GET /plain", "body_text: \"hello, World\\n\""),
        check("length", "GET /", f"body_length: {len(INDEX)}"),
        check("length-differs", "GET /plain", f"body_length: {len(INDEX)}"),
    )
    assert outcomes == {
        "file": "passed", "file-differs": "failed", "text": "passed", "text-differs": "failed",
        "length": "passed", "length-differs": "failed",
    }, messages
    assert messages["file-differs"].startswith("the body differs from the file index.html: lengths 32 vs 13; "
                                               "first difference at byte 0")
    assert messages["text-differs"].startswith("the body differs from the expected text: lengths 13 vs 13; "
                                               "first difference at byte 7")
    assert messages["length-differs"] == "expected a body of 32 bytes, got 13"


def test_content_length_must_match_the_body(tmp_path: Path, server: Path) -> None:
    outcomes, messages = grade_checks(
        tmp_path, server,
        check("honest", "GET /plain", "status: 200"),
        check("says-more", "GET /lie-long", "status: 200"),
        check("says-less", "GET /lie-short", "status: 200"),
    )
    assert outcomes == {"honest": "passed", "says-more": "failed", "says-less": "failed"}, messages
    assert "body shorter than Content-Length: expected 100 bytes, got 10" in messages["says-more"]
    assert messages["says-less"].startswith("Content-Length says 5 bytes, but 5 more bytes followed the body: "
                                            "56789"), messages["says-less"]


def test_head_has_no_body(tmp_path: Path, server: Path) -> None:
    outcomes, messages = grade_checks(
        tmp_path, server,
        check("head", "HEAD /", "status: 200, no_body: true, headers: {content-length: '32'}"),
        check("head-with-body", "HEAD /with-body", "status: 200, no_body: true"),
    )
    assert outcomes == {"head": "passed", "head-with-body": "failed"}, messages
    assert messages["head-with-body"].startswith("expected no body (HEAD), got 32 bytes: <html>"), \
        messages["head-with-body"]


def test_close_after_the_response(tmp_path: Path, server: Path) -> None:
    outcomes, messages = grade_checks(
        tmp_path, server,
        check("closes", "GET /", "status: 200, close: true"),
        check("keeps-open", "GET /keep", "status: 200, close: true, timeout: 0.5"),
        check("keeps-open-unjudged", "GET /keep", "status: 200"),
    )
    assert outcomes == {"closes": "passed", "keeps-open": "failed", "keeps-open-unjudged": "passed"}, messages
    assert messages["keeps-open"] == ("expected the server to close the connection after the response, "
                                      "but it stayed open")


def test_malformed_responses(tmp_path: Path, server: Path) -> None:
    outcomes, messages = grade_checks(
        tmp_path, server,
        check("http09", "GET /http09", "status: 200"),
        check("lowercase", "GET /lowercase", "status: 200"),
    )
    assert outcomes == {"http09": "failed", "lowercase": "failed"}, messages
    assert messages["http09"].startswith("malformed HTTP response: no HTTP status line: the response starts with "
                                         "'<html>"), messages["http09"]
    assert "HTTP/0.9-style or missing status line" in messages["http09"]
    assert "status line must start with 'HTTP/' in upper case" in messages["lowercase"]
