"""Steps with the harness as the server of a client submission: listen, accept, judge the request, respond."""

from __future__ import annotations

import random
import time
from pathlib import Path

from grader.driver.net import FIN, RST, TIMEOUT, Listener, TcpConn, remaining
from grader.driver.poll import Poll
from grader.engine.context import CheckContext
from grader.errors import CheckFailed, SpecError
from grader.judge.http import (
    HttpParseError,
    HttpRequest,
    line_ending_problems,
    parse_request,
    request_head_complete,
)
from grader.judge.show import show
from grader.spec.model import Args, Step
from grader.steps.common import (
    NAME,
    PAYLOAD_PROPS,
    SECONDS,
    SPLIT_ITEM,
    check_payload,
    fragments,
    obj,
    payload,
    split_points,
)
from grader.steps.registry import LoadContext, step
from grader.steps.tcp import conn_of, end_text

CLIENT_WAIT_S = 1.0  # how long echo_serve waits for a client to be waiting before it reads anyway


@step(
    "listen",
    group="tcp server",
    summary="Open a harness listening socket (a port chosen at run time) for a client submission to connect to.",
    schema=obj({"as": NAME, "family": {"enum": ["ipv4", "ipv6"]}}),
    example="- listen: {as: srv}",
)
def listen(ctx: CheckContext, st: Step) -> None:
    name = st.args.str("as", "srv")
    host = "::1" if st.args.str("family", "ipv4") == "ipv6" else ctx.host
    ctx.listeners[name] = Listener(host, ctx.label(name), ctx.transcript, ctx.observer)


@step(
    "accept",
    group="tcp server",
    summary="Wait for the client submission to connect to a harness listener; fails early if it exits first.",
    schema=obj({"listener": NAME, "as": NAME, "timeout": SECONDS}),
    example="- accept: {listener: srv, as: c, timeout: 5}",
)
def accept(ctx: CheckContext, st: Step) -> None:
    a = st.args
    lst = ctx.listener(a.str("listener", "srv"))

    def gave_up() -> str | None:
        proc = ctx.shared.client
        if proc is not None and not proc.alive():
            err = proc.output("stderr", 300).strip()
            return proc.status_text() + (f"; stderr: {err}" if err else "")
        return None

    conn = lst.accept(ctx.step_deadline(a.get("timeout")), gave_up)
    if conn is None:
        raise CheckFailed("expected the program to connect, but it did not before the deadline")
    ctx.conns[a.str("as", "c")] = conn


@step(
    "expect_request",
    group="tcp server",
    summary=(
        "Read the client's HTTP request head and judge it with h11: method, target, version in a set, a Host "
        "header, CRLF line ends, the blank line, and no stray bytes after it."
    ),
    schema=obj(
        {
            "conn": NAME,
            "method": {"type": "string"},
            "target": {"type": "string"},
            "versions": {"type": "array", "items": {"enum": ["HTTP/1.0", "HTTP/1.1"]}},
            "host": {"type": ["boolean", "string"]},
            "crlf": {"type": "boolean"},
            "no_extra": {"type": "boolean"},
            "timeout": SECONDS,
        }
    ),
    example="- expect_request: {method: GET, target: /index.html, host: true, crlf: true}",
)
def expect_request(ctx: CheckContext, st: Step) -> None:
    a = st.args
    conn = conn_of(ctx, a)
    res = conn.read_until(request_head_complete, ctx.step_deadline(a.get("timeout")))
    data = bytes(conn.buffer)
    if res.end != "complete":
        raise CheckFailed(
            f"expected a complete HTTP request head ending in a blank line, got {show(data)}; {end_text(res.end)}",
            hint="End the request headers with an empty line: \\r\\n\\r\\n.",
        )
    try:
        req = parse_request(data)
    except HttpParseError as exc:
        raise CheckFailed(f"malformed HTTP request: {exc.reason}") from None
    conn.take()
    ctx.values[f"request:{a.str('conn', 'c')}"] = req
    if "method" in a and req.method != a.str("method"):
        raise CheckFailed(f"expected method {a.str('method')}, got {req.method}")
    if "target" in a and req.target != a.str("target"):
        raise CheckFailed(
            f"expected request target {a.str('target')}, got {req.target}",
            hint="The request line carries the URL's path and query (after host:port), starting with '/'.",
        )
    versions = a.get("versions", ("HTTP/1.0", "HTTP/1.1"))
    version = req.http_version if req.http_version.startswith("HTTP/") else f"HTTP/{req.http_version}"
    if version not in versions:
        raise CheckFailed(f"expected version {' or '.join(versions)}, got {version}")
    host = a.get("host")
    if host:
        got = req.header("host")
        if got is None:
            raise CheckFailed("expected a Host header, got none", hint="Send 'Host: <host>[:<port>]\\r\\n'.")
        if isinstance(host, str):
            want = host.format_map(ctx.values.get("placeholders", {}))
            if got != want:
                raise CheckFailed(f"expected Host: {want}, got Host: {got}")
    if a.bool("crlf", True):
        problems = line_ending_problems(req.head)
        if problems or req.bare_lf:
            raise CheckFailed(
                "HTTP lines must end with \\r\\n: " + "; ".join(problems or ["bare \\n line ends"]),
                hint="Write \"\\r\\n\" at the end of every request line and header, not just \"\\n\".",
            )
    if a.bool("no_extra", True) and (req.trailing or req.body):
        stray = req.trailing or req.body
        raise CheckFailed(f"expected nothing after the request head, got {len(stray)} stray bytes: {show(stray)}")


def _check_respond(args: Args, load: LoadContext) -> None:
    check_payload(args, load, required=False, prefix="body_")
    if "raw_text" in args and any(k in args for k in ("status", "body_text", "body_file", "body_hex")):
        raise SpecError(args.where, "raw_text replaces the whole response; drop status and body_*")


def response_bytes(a: Args, spec_dir: Path, rng: random.Random) -> bytes:
    """The bytes a respond step sends (a random body's from ``rng``)."""
    if "raw_text" in a:
        return a.str("raw_text").encode("latin-1")
    body = payload(a, spec_dir, rng, prefix="body_") or b""
    status = a.int("status", 200)
    reason = a.str("reason", _REASONS.get(status, "Status"))
    lines = [f"{a.str('version', 'HTTP/1.0')} {status} {reason}"]
    headers = dict(a.get("headers") or {})
    cl = a.get("content_length", True)
    if cl is True:
        headers.setdefault("Content-Length", str(len(body)))
    elif cl is not False:
        headers["Content-Length"] = str(cl)
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@step(
    "respond",
    group="tcp server",
    summary=(
        "Send a scripted HTTP response: status and reason, headers, a body (body_text, body_hex, body_file, "
        "body_size), Content-Length right (default), omitted (content_length: false) or a given number; "
        "raw_text sends bytes as they are. Cut into fragments with split (each sent once the client has read "
        "the previous), optionally with a delay; then close (default), keep the connection open (close: false), "
        "or do what a real server would (close: auto: keep it open for HTTP/1.1 without Connection: close)."
    ),
    schema=obj(
        {
            "conn": NAME,
            "status": {"type": "integer", "minimum": 100, "maximum": 999},
            "reason": {"type": "string"},
            "version": {"type": "string"},
            "headers": {"type": "object", "additionalProperties": {"type": "string"}},
            **{f"body_{k}": v for k, v in PAYLOAD_PROPS.items()},
            "content_length": {"type": ["boolean", "integer"]},
            "raw_text": {"type": "string"},
            "split": {"type": "array", "items": SPLIT_ITEM},
            "delay": {"type": "number", "minimum": 0, "maximum": 5},
            "close": {"oneOf": [{"type": "boolean"}, {"const": "auto"}]},
            "timeout": SECONDS,
        }
    ),
    example="- respond: {status: 200, body_file: files/www/index.html, split: [every-byte]}",
    validate=_check_respond,
)
def respond(ctx: CheckContext, st: Step) -> None:
    a = st.args
    conn = conn_of(ctx, a)
    data = response_bytes(a, ctx.shared.spec.directory, ctx.rng)
    deadline = ctx.step_deadline(a.get("timeout"))
    cuts = split_points(data, a.get("split", ()))
    conn.send_fragments(fragments(data, cuts), deadline, delay=a.float("delay", 0.0))
    close = a.get("close", True)
    if close == "auto":
        close = not _keeps_alive(ctx.values.get(f"request:{a.str('conn', 'c')}"))
        if not close:
            ctx.transcript.note("keeping the connection open (HTTP/1.1 without Connection: close)", conn.label)
    if close:
        conn.close()


def _keeps_alive(request: HttpRequest | None) -> bool:
    """Whether a real server would keep the connection open after answering this request (RFC 9112 9.3)."""
    if request is None:
        return False
    tokens = {t.strip().lower() for v in request.header_all("connection") for t in v.split(",")}
    if "close" in tokens:
        return False
    return request.http_version.endswith("1.1") or "keep-alive" in tokens


_REASONS = {200: "OK", 301: "Moved Permanently", 302: "Found", 400: "Bad Request", 403: "Forbidden",
            404: "Not Found", 500: "Internal Server Error", 503: "Service Unavailable"}


def _wait_client_waiting(ctx: CheckContext, conn: TcpConn, deadline: float) -> None:
    """Wait until the client program has sent all it will before waiting for an answer: every thread of it
    waits (in recv(), say), twice in a row, with nothing new arriving in between (or it has ended, or
    CLIENT_WAIT_S or the deadline passed). Echoing only then fixes what one recv() of the client can return:
    everything it sent, never a part that depends on when the harness happened to read."""
    proc = ctx.shared.client
    if proc is None:
        return
    seen: int | None = None
    deadline = min(deadline, time.monotonic() + CLIENT_WAIT_S)  # a client that spins (polls) never waits
    poll = Poll()
    while remaining(deadline) > 0 and proc.alive():
        if ctx.observer.waiting(proc.pid):
            queued = conn.queued()
            if queued == seen:
                return
            seen = queued
        else:
            seen = None
        poll.pause(deadline)


@step(
    "echo_serve",
    group="tcp server",
    summary=(
        "Act as an echo server for a client submission: echo every byte back as it arrives, cut into chunks "
        "of at most `chunk` bytes, each sent once the client has read the previous; close when the client "
        "half-closes or closes. The client must send everything it was given (sent: compared with stdin)."
    ),
    schema=obj({"conn": NAME, "chunk": {"type": "integer", "minimum": 1}, "timeout": SECONDS}),
    example="- echo_serve: {chunk: 1000, timeout: 5}",
)
def echo_serve(ctx: CheckContext, st: Step) -> None:
    a = st.args
    conn = conn_of(ctx, a)
    deadline = ctx.step_deadline(a.get("timeout"))
    chunk = a.int("chunk", 65536)
    stdin: bytes | None = ctx.values.get("stdin")
    expected = len(stdin) if stdin is not None else None
    received = 0
    while True:
        _wait_client_waiting(ctx, conn, deadline)
        res = conn.read_until(lambda b: len(b) > 0, deadline)
        data = conn.take()
        received += len(data)
        if data:
            pieces = [data[i : i + chunk] for i in range(0, len(data), chunk)]
            if not conn.send_fragments(pieces, deadline):
                break
            continue
        if res.end in (FIN, RST):
            break
        if res.end == TIMEOUT:
            if expected is not None and received >= expected:
                raise CheckFailed(
                    f"the client sent all {received} bytes and got them back, but then neither closed nor "
                    "half-closed the connection: it waits for something that never comes",
                    hint="After sending everything, shutdown(fd, SHUT_WR) so the server sees the end, or stop "
                    "reading once you have received as many bytes as you sent; then close().",
                )
            raise CheckFailed(
                f"the client sent {received} of {expected if expected is not None else '?'} bytes and then "
                f"neither sent more nor closed within the time allowed{ctx.died_note()}",
                hint="Send all of the input (loop on send until every byte is written), then read the echo.",
            )
    ctx.values["echoed"] = received
    ended = conn.ended
    conn.close()
    if expected is not None and received < expected:
        died = ctx.died_note()
        proc = ctx.shared.client
        err = proc.output("stderr", 300).strip() if proc is not None and died else ""
        if ended == RST:
            raise CheckFailed(
                f"the client reset the connection after sending {received} of {expected} bytes{died}",
                hint="An RST means the client closed its socket with unread data in it: keep reading until you "
                "have received every byte you sent before you close.",
            )
        raise CheckFailed(
            f"the client closed the connection after sending only {received} of the {expected} bytes it read "
            f"from standard input{died}" + (f"; its stderr: {err}" if err else ""),
            hint="send() may write fewer bytes than asked: loop until all are sent (check its return value).",
        )
