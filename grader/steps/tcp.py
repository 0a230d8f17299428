"""TCP steps with the harness as the client of a server submission: connect, send, expect, close."""

from __future__ import annotations

import re
import time

from grader.driver.net import COMPLETE, FIN, RST, TIMEOUT, TcpConn
from grader.engine.context import CheckContext
from grader.errors import CheckFailed, SpecError
from grader.judge.expr import ExprError, evaluate, rfc868_now
from grader.judge.expr import validate as validate_expr
from grader.judge.numbers import JUDGE_MODES, judge_uint_be
from grader.judge.show import describe_mismatch, show
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

CONN = {"conn": NAME}
FILL_MAX = 8 * 1024 * 1024  # what a fill sends at most, to a server that never stops reading
RESET_ACK_S = 2.0  # how long reset waits for the peer's kernel to acknowledge what was sent
EXPR_NAMES = ("now", "now_1900")


def end_text(end: str) -> str:
    return {
        FIN: "the connection was closed by the peer (FIN)",
        RST: "the connection was reset by the peer (RST)",
        TIMEOUT: "nothing more arrived before the deadline",
        COMPLETE: "complete",
    }[end]


def conn_of(ctx: CheckContext, args: Args) -> TcpConn:
    return ctx.conn(args.str("conn", "c"))


@step(
    "connect",
    group="tcp client",
    summary=(
        "Open a TCP connection to the server submission (IPv4 by default, or IPv6 on ::1). With small_window: "
        "true the harness is a client on an Ethernet-sized path (a 64 KB receive buffer, 1460-byte segments): the "
        "submission's send buffer stays under about 1 MB, so a longer response keeps it sending, its send() "
        "blocking (or returning short, if non-blocking) while the harness reads slowly or not at all."
    ),
    schema=obj({"as": NAME, "family": {"enum": ["ipv4", "ipv6"]}, "small_window": {"type": "boolean"},
                "timeout": SECONDS}),
    example="- connect: {as: c}",
)
def connect(ctx: CheckContext, st: Step) -> None:
    a = st.args
    name = a.str("as", "c")
    host = "::1" if a.str("family", "ipv4") == "ipv6" else ctx.host
    if host == ctx.host:
        ctx.supervisor.require("tcp")
    port = ctx.supervisor.tcp_port
    ctx.conns[name] = TcpConn.connect(
        host, port, ctx.label(name), ctx.transcript, ctx.step_deadline(a.get("timeout")), ctx.observer,
        small_window=a.bool("small_window"),
    )


def _check_send(args: Args, load: LoadContext) -> None:
    check_payload(args, load)


@step(
    "send",
    group="tcp client",
    summary=(
        "Send bytes whole, or cut into fragments at split points. Each fragment leaves only once the "
        "submission has read the previous one (its socket's receive queue is empty in /proc/net/tcp), so a "
        "program that assumes one recv() gets a whole message fails every time. Split points: a byte offset "
        "(negative counts from the end), crlf (inside the first CRLF), blank-line (inside the first "
        "CRLFCRLF), end-1, middle, every-byte, {at: TEXT} (just before TEXT), {inside: TEXT}."
    ),
    schema=obj(
        {
            **CONN,
            **PAYLOAD_PROPS,
            "split": {"type": "array", "items": SPLIT_ITEM},
            "delay": {"type": "number", "minimum": 0, "maximum": 5},
            "wait_read": {
                "type": "boolean",
                "description": "also wait until the submission has read the last fragment (fails if it does not)",
            },
            "timeout": SECONDS,
        }
    ),
    example='- send: {text: "GET /index.html HTTP/1.0\\r\\n\\r\\n", split: [crlf, blank-line]}',
    validate=_check_send,
)
def send(ctx: CheckContext, st: Step) -> None:
    a = st.args
    conn = conn_of(ctx, a)
    data = payload(a, ctx.shared.spec.directory, ctx.rng) or b""
    cuts = split_points(data, a.get("split", ()))
    deadline = ctx.step_deadline(a.get("timeout"))
    conn.send_fragments(fragments(data, cuts), deadline, delay=a.float("delay", 0.0), wait_last=a.bool("wait_read"))
    ctx.values[f"sent:{a.str('conn', 'c')}"] = ctx.values.get(f"sent:{a.str('conn', 'c')}", b"") + data


@step(
    "fill",
    group="tcp client",
    summary=(
        "Send without reading until the server submission stops reading: its send() blocks (or returns EAGAIN) "
        "on the harness's full receive window while the rest of what was sent waits in its socket. Use it on a "
        "small_window connection to catch a server in the middle of sending; a server that buffers instead "
        "takes everything up to max_bytes (default 8 MB). A chunk leaves only once the server's kernel took the "
        "previous one, so a FIN sent next always reaches it."
    ),
    schema=obj({**CONN, "max_bytes": {"type": "integer", "minimum": 1, "maximum": 64 * 1024 * 1024},
                "timeout": SECONDS}),
    example="- fill: {conn: rude}",
)
def fill(ctx: CheckContext, st: Step) -> None:
    a = st.args
    conn = conn_of(ctx, a)
    proc = ctx.supervisor.proc

    def stopped_reading() -> bool:
        return proc is None or ctx.observer.waiting(proc.pid)

    conn.fill(ctx.step_deadline(a.get("timeout")), stopped_reading, a.int("max_bytes", FILL_MAX))


@step(
    "shutdown_write",
    group="tcp client",
    summary="Half-close the connection: shutdown(SHUT_WR) sends FIN; the submission's recv() returns 0.",
    schema=obj(CONN),
    example="- shutdown_write: {}",
)
def shutdown_write(ctx: CheckContext, st: Step) -> None:
    conn_of(ctx, st.args).shutdown_write()


@step(
    "reset",
    group="tcp client",
    summary=(
        "Close abruptly with RST (SO_LINGER 0): the submission's next send or recv fails. The RST leaves once "
        "the submission's kernel has acknowledged everything sent before it, a FIN from shutdown_write "
        "included (at most timeout seconds, default 2), so the error the submission sees never depends on timing."
    ),
    schema=obj({**CONN, "timeout": SECONDS}),
    example="- reset: {}",
)
def reset(ctx: CheckContext, st: Step) -> None:
    conn_of(ctx, st.args).reset(ctx.step_deadline(st.args.float("timeout", RESET_ACK_S)))


@step(
    "close",
    group="tcp client",
    summary="Close the connection normally (FIN).",
    schema=obj(CONN),
    example="- close: {}",
)
def close(ctx: CheckContext, st: Step) -> None:
    conn_of(ctx, st.args).close()


def _check_expect_bytes(args: Args, load: LoadContext) -> None:
    present = [k for k in ("text", "hex", "file", "size", "echo", "length", "regex") if k in args]
    if len(present) != 1:
        raise SpecError(args.where, f"give exactly one of text, hex, file, echo, length, regex; got {present}")
    check_payload(args, load, required=False)
    if "regex" in args:
        try:
            re.compile(args.str("regex").encode())
        except re.error as exc:
            raise SpecError(args.where, f"regex: {exc}") from None


@step(
    "expect_bytes",
    group="tcp client",
    summary=(
        "Read from the connection and compare: exact bytes (text, hex, file, or echo: everything sent on "
        "this connection so far), a length, or a regex (read until it matches). With eof: true the "
        "submission must also close the connection right after."
    ),
    schema=obj(
        {
            **CONN,
            **PAYLOAD_PROPS,
            "echo": {"const": True},
            "length": {"type": "integer", "minimum": 0},
            "regex": {"type": "string"},
            "eof": {"type": "boolean"},
            "timeout": SECONDS,
        }
    ),
    example='- expect_bytes: {text: "hello\\n", timeout: 2}',
    validate=_check_expect_bytes,
)
def expect_bytes(ctx: CheckContext, st: Step) -> None:
    a = st.args
    conn = conn_of(ctx, a)
    deadline = ctx.step_deadline(a.get("timeout"))
    if "regex" in a:
        pattern = re.compile(a.str("regex").encode(), re.DOTALL)
        res = conn.read_until(lambda b: pattern.search(b) is not None, deadline)
        if res.end != COMPLETE:
            raise CheckFailed(
                f"expected bytes matching the regex {a.str('regex')!r}, got {show(res.data)}; "
                f"{end_text(res.end)}{ctx.died_note() if res.end != TIMEOUT else ''}"
            )
        match = pattern.search(conn.buffer)
        conn.take(match.end() if match is not None else None)  # bytes after the match stay for later steps
        return
    if "echo" in a:
        expected = ctx.values.get(f"sent:{a.str('conn', 'c')}", b"")
        ctx.values[f"sent:{a.str('conn', 'c')}"] = b""
    elif "length" in a:
        expected = None
    else:
        expected = payload(a, ctx.shared.spec.directory, ctx.rng) or b""
    want = a.int("length") if expected is None else len(expected)
    res = conn.read_exactly(want, deadline)
    got = conn.take(want)
    if len(got) < want:
        raise CheckFailed(
            f"expected {want} bytes, got {len(got)}: {end_text(res.end)}"
            f"{ctx.died_note() if res.end != TIMEOUT else ''}; received {show(got)}"
        )
    if expected is not None and got != expected:
        raise CheckFailed(f"received bytes differ from those expected: {describe_mismatch(expected, got)}")
    if a.bool("eof"):
        _expect_eof(ctx, conn, deadline, what="after the expected bytes")


def _expect_eof(ctx: CheckContext, conn: TcpConn, deadline: float, what: str) -> None:
    what = f" {what}" if what else ""
    res = conn.read_until(None, deadline)
    extra = conn.take()
    if extra:
        raise CheckFailed(f"expected the connection to close{what}, but {len(extra)} more bytes came: "
                          f"{show(extra)}")
    if res.end == TIMEOUT:
        raise CheckFailed(f"expected the connection to close{what}, but it stayed open")
    if res.end == RST:
        raise CheckFailed(
            f"expected an orderly close (FIN){what}, but the connection was reset (RST){ctx.died_note()}",
            hint="An RST instead of FIN usually means the program closed its socket with unread data in it, "
            "or it crashed.",
        )


@step(
    "expect_eof",
    group="tcp client",
    summary="The submission closes the connection (FIN, no more bytes) within a time; RST and timeouts fail.",
    schema=obj({**CONN, "timeout": SECONDS}),
    example="- expect_eof: {timeout: 2}",
)
def expect_eof(ctx: CheckContext, st: Step) -> None:
    a = st.args
    _expect_eof(ctx, conn_of(ctx, a), ctx.step_deadline(a.get("timeout")), what="")


@step(
    "expect_open",
    group="tcp client",
    summary="The connection stays open (no FIN, no RST, nothing sent) for a while.",
    schema=obj({**CONN, "for": SECONDS, "allow_data": {"type": "boolean"}}, required=("for",)),
    example="- expect_open: {for: 0.5}",
)
def expect_open(ctx: CheckContext, st: Step) -> None:
    a = st.args
    conn = conn_of(ctx, a)
    until = min(ctx.deadline, time.monotonic() + a.float("for"))
    res = conn.read_until(
        (lambda b: False) if a.bool("allow_data") else (lambda b: len(b) > 0), until
    )
    if res.end in (FIN, RST):
        raise CheckFailed(
            f"expected the connection to stay open for {a.float('for'):g}s, but "
            f"{end_text(res.end)} after {res.elapsed:.2f}s{ctx.died_note()}"
        )
    if res.end == COMPLETE:
        raise CheckFailed(f"expected nothing yet, but the submission sent {show(res.data)}")


def _check_uint(args: Args, load: LoadContext) -> None:
    for key in ("min", "max"):
        try:
            validate_expr(str(args.get(key)), EXPR_NAMES)
        except ExprError as exc:
            raise SpecError(args.where, f"{key}: {exc}") from None


UINT_SCHEMA = {
    "size": {"enum": [2, 4]},
    "min": {"type": ["string", "integer"]},
    "max": {"type": ["string", "integer"]},
    "judge": {
        "enum": list(JUDGE_MODES),
        "description": "number (default): in range, big-endian; value: in range in either byte order (the order "
        "is another check's subject); byte-order: fails only a number in host byte order (missing htonl)",
    },
    "timeout": SECONDS,
}


def uint_bounds(args: Args) -> tuple[int, int]:
    now = int(time.time())
    names = {"now": now, "now_1900": rfc868_now()}
    return int(evaluate(str(args.get("min")), names)), int(evaluate(str(args.get("max")), names))


@step(
    "expect_uint",
    group="tcp client",
    summary=(
        "Read an unsigned 16- or 32-bit big-endian number and check it lies in [min, max]; min and max are "
        "expressions over now (Unix time) and now_1900 (RFC 868 time). When the byte-swapped value would "
        "have matched, the failure says 'missing htonl/ntohl'. judge: value or byte-order splits the two "
        "mistakes between two checks."
    ),
    schema=obj({**CONN, **UINT_SCHEMA}, required=("size", "min", "max")),
    example="- expect_uint: {size: 4, min: now_1900 - 2, max: now_1900 + 2}",
    validate=_check_uint,
)
def expect_uint(ctx: CheckContext, st: Step) -> None:
    a = st.args
    conn = conn_of(ctx, a)
    size = a.int("size")
    res = conn.read_exactly(size, ctx.step_deadline(a.get("timeout")))
    data = conn.take(size)
    low, high = uint_bounds(a)
    verdict = judge_uint_be(data, size, low, high, a.str("judge", "number"))
    if not verdict.ok:
        note = ctx.died_note() if res.end in (FIN, RST) else ""
        raise CheckFailed(verdict.message + note)


@step(
    "expect_port",
    group="tcp client",
    summary=(
        "The server listens on exactly the port it was given (TCP, or UDP with proto: udp). A server on the "
        "byte-swapped port is reported as 'missing htons'."
    ),
    schema=obj({"proto": {"enum": ["tcp", "udp"]}}),
    example="- expect_port: {proto: tcp}",
)
def expect_port(ctx: CheckContext, st: Step) -> None:
    sup = ctx.supervisor
    proto = st.args.str("proto", "tcp")
    sup.require(proto)
    actual = sup.tcp_port if proto == "tcp" else sup.udp_port
    if actual != sup.port:
        raise CheckFailed(
            f"expected the server to listen on {proto.upper()} port {sup.port}, but it listens on port {actual}, "
            f"which is {sup.port} with its two bytes swapped: missing htons() on the port",
            hint="Ports go into sockaddr_in in network byte order: addr.sin_port = htons(port);",
        )
