"""HTTP steps with the harness as the client: read one response and judge it."""

from __future__ import annotations

import re
from pathlib import Path

from grader.driver.net import RST, TIMEOUT
from grader.engine.context import CheckContext
from grader.errors import CheckFailed, SpecError
from grader.judge.http import HttpParseError, HttpResponse, ResponseWatcher, parse_response
from grader.judge.show import describe_mismatch, show
from grader.spec.model import Args, Step
from grader.steps.common import NAME, SECONDS, obj
from grader.steps.registry import LoadContext, step
from grader.steps.tcp import conn_of, end_text

STATUS = {
    "oneOf": [
        {"type": "integer", "minimum": 100, "maximum": 599},
        {"type": "array", "items": {"type": "integer", "minimum": 100, "maximum": 599}, "minItems": 1},
    ]
}


def _check(args: Args, load: LoadContext) -> None:
    bodies = [k for k in ("body_file", "body_text", "body_length", "body_not_file", "no_body") if k in args]
    if len([b for b in bodies if b != "body_not_file"]) > 1:
        raise SpecError(args.where, f"give at most one of body_file, body_text, body_length, no_body; got {bodies}")
    for key in ("body_file", "body_not_file"):
        if key in args:
            path = (Path(load.spec_dir) / args.str(key)).resolve()
            if not path.is_file():
                raise SpecError(args.where, f"{key}: file {args.str(key)!r} not found (looked at {path})")
    for name, pattern in (args.get("header_matches") or {}).items():
        try:
            re.compile(str(pattern))
        except re.error as exc:
            raise SpecError(args.where, f"header_matches.{name}: {exc}") from None


def _statuses(value: object) -> list[int]:
    return [int(v) for v in value] if isinstance(value, list | tuple) else [int(str(value))]


@step(
    "expect_http",
    group="http client",
    summary=(
        "Read one HTTP response (until it is complete, or the server closes) and judge it with h11: status "
        "in a set, headers present, equal or matching, body equal to a file or text or of a length, "
        "Content-Length consistent with the body, the connection closed afterwards (close: true)."
    ),
    schema=obj(
        {
            "conn": NAME,
            "method": {"enum": ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "BREW"]},
            "status": STATUS,
            "status_not": STATUS,
            "headers_present": {"type": "array", "items": {"type": "string"}},
            "headers": {"type": "object", "additionalProperties": {"type": "string"}},
            "header_matches": {"type": "object", "additionalProperties": {"type": "string"}},
            "body_file": {"type": "string"},
            "body_not_file": {"type": "string"},
            "body_text": {"type": "string"},
            "body_length": {"type": "integer", "minimum": 0},
            "no_body": {"const": True},
            "close": {"type": "boolean"},
            "timeout": SECONDS,
        }
    ),
    example="- expect_http: {status: 200, headers: {content-type: text/html}, body_file: files/www/index.html}",
    validate=_check,
)
def expect_http(ctx: CheckContext, st: Step) -> None:
    a = st.args
    conn = conn_of(ctx, a)
    method = a.str("method", "GET")
    deadline = ctx.step_deadline(a.get("timeout"))
    res = conn.read_until(ResponseWatcher(method).complete, deadline)
    data = conn.take()
    if not data:
        raise CheckFailed(f"expected an HTTP response, got nothing: {end_text(res.end)}{_note(ctx, res.end)}")
    try:
        resp = parse_response(data, request_method=method, eof=res.end != TIMEOUT)
    except HttpParseError as exc:
        if res.end == TIMEOUT:
            raise CheckFailed(
                f"the HTTP response was incomplete when time ran out ({len(data)} bytes: {show(data)}); "
                f"{exc.reason}"
            ) from None
        raise CheckFailed(f"malformed HTTP response: {exc.reason}{_note(ctx, res.end)}") from None
    _judge(ctx, a, resp)
    if a.bool("close"):
        res2 = conn.read_until(None, deadline)
        extra = conn.take()
        if extra:
            raise CheckFailed(f"expected the connection to close after the response, but more bytes came: "
                              f"{show(extra)}")
        if res2.end == TIMEOUT:
            raise CheckFailed(
                "expected the server to close the connection after the response, but it stayed open",
                hint="After answering an HTTP/1.0 request (or with Connection: close), close() the socket.",
            )


def _note(ctx: CheckContext, end: str) -> str:
    return ctx.died_note() if end in ("fin", RST) else ""


def _judge(ctx: CheckContext, a: Args, resp: HttpResponse) -> None:
    if "body_not_file" in a:
        secret = ctx.read_file(ctx.spec_path(a.str("body_not_file")))
        if secret and secret[:64] in resp.body:
            raise CheckFailed(
                f"the server sent the contents of {Path(a.str('body_not_file')).name}, a file outside the "
                f"document root (status {resp.status} {resp.reason})"
            )
    if "status" in a and resp.status not in _statuses(a.get("status")):
        want = _statuses(a.get("status"))
        raise CheckFailed(
            f"expected status {' or '.join(map(str, want))}, got {resp.status} {resp.reason}"
        )
    if "status_not" in a and resp.status in _statuses(a.get("status_not")):
        raise CheckFailed(f"status {resp.status} is not acceptable here")
    for name in a.get("headers_present", ()):
        if resp.header(name) is None:
            raise CheckFailed(f"expected a {name} header, got none (headers: {_names(resp)})")
    for name, value in (a.get("headers") or {}).items():
        got = resp.header(name)
        if got is None:
            raise CheckFailed(f"expected header {name}: {value}, got no {name} header (headers: {_names(resp)})")
        if got.strip().lower() != str(value).strip().lower():
            raise CheckFailed(f"expected header {name}: {value}, got {name}: {got}")
    for name, pattern in (a.get("header_matches") or {}).items():
        got = resp.header(name)
        if got is None or not re.search(str(pattern), got, re.IGNORECASE):
            raise CheckFailed(f"expected header {name} matching /{pattern}/, got {got!r}")
    method = a.str("method", "GET")
    if resp.content_length is not None and resp.framing == "content-length" and method != "HEAD" and len(
        resp.body
    ) != resp.content_length:
        raise CheckFailed(
            f"Content-Length says {resp.content_length} bytes but the body has {len(resp.body)}"
        )
    if resp.framing == "content-length" and resp.trailing:
        raise CheckFailed(
            f"Content-Length says {resp.content_length} bytes, but {len(resp.trailing)} more bytes followed the "
            f"body: {show(resp.trailing)}",
            hint="Content-Length must be the exact number of body bytes (for a file: its size in bytes).",
        )
    if "body_file" in a:
        expected = ctx.read_file(ctx.spec_path(a.str("body_file")))
        _body_equal(resp, expected, f"the file {Path(a.str('body_file')).name}")
    if "body_text" in a:
        _body_equal(resp, a.str("body_text").encode(), "the expected text")
    if "body_length" in a and len(resp.body) != a.int("body_length"):
        raise CheckFailed(f"expected a body of {a.int('body_length')} bytes, got {len(resp.body)}")
    if a.bool("no_body") and (resp.body or resp.trailing):  # a body after a HEAD response's head is trailing
        extra = resp.body or resp.trailing
        raise CheckFailed(f"expected no body (HEAD), got {len(extra)} bytes: {show(extra)}")


def _body_equal(resp: HttpResponse, expected: bytes, what: str) -> None:
    if resp.body != expected:
        raise CheckFailed(f"the body differs from {what}: {describe_mismatch(expected, resp.body)}")


def _names(resp: HttpResponse) -> str:
    return ", ".join(name for name, _ in resp.headers) or "none"
