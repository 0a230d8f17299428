"""UDP steps with the harness as the client: send a datagram, expect the reply."""

from __future__ import annotations

from grader.engine.context import CheckContext
from grader.errors import CheckFailed, SpecError
from grader.judge.numbers import judge_uint_be
from grader.judge.show import describe_mismatch, show
from grader.spec.model import Args, Step
from grader.steps.common import NAME, PAYLOAD_PROPS, SECONDS, check_payload, obj, payload
from grader.steps.registry import LoadContext, step
from grader.steps.tcp import UINT_SCHEMA, _check_uint, uint_bounds


def _check_send(args: Args, load: LoadContext) -> None:
    check_payload(args, load)


@step(
    "udp_send",
    group="udp client",
    summary="Send one datagram from a harness UDP socket (created on first use) to the submission's UDP port.",
    schema=obj({"sock": NAME, **PAYLOAD_PROPS}),
    example='- udp_send: {sock: u1, text: "ping"}',
    validate=_check_send,
)
def udp_send(ctx: CheckContext, st: Step) -> None:
    a = st.args
    name = a.str("sock", "u")
    data = payload(a, ctx.shared.spec.directory, ctx.rng) or b""
    ctx.supervisor.require("udp")
    ctx.udp(name).sendto(data, (ctx.host, ctx.supervisor.udp_port))
    ctx.values.setdefault(f"udp:{name}", []).append(data)


def _check_expect(args: Args, load: LoadContext) -> None:
    present = [k for k in ("echo", "text", "hex", "file", "length", "uint", "any") if k in args]
    if len(present) != 1:
        raise SpecError(args.where, f"give exactly one of echo, text, hex, file, length, uint, any; got {present}")
    check_payload(args, load, required=False)
    if "uint" in args:
        _check_uint(Args(args.get("uint"), args.where), load)


@step(
    "udp_expect",
    group="udp client",
    summary=(
        "Wait for the reply datagram on a harness UDP socket and judge it: echo (equal to the oldest "
        "unanswered datagram this socket sent), exact bytes, a length, an unsigned big-endian number, or "
        "any: true (any reply: its content is other checks' subject). The reply must come from the port the "
        "request was sent to."
    ),
    schema=obj(
        {
            "sock": NAME,
            **PAYLOAD_PROPS,
            "echo": {"const": True},
            "any": {"const": True},
            "length": {"type": "integer", "minimum": 0},
            "uint": obj({k: v for k, v in UINT_SCHEMA.items() if k != "timeout"}, required=("size", "min", "max")),
            "timeout": SECONDS,
        }
    ),
    example="- udp_expect: {sock: u1, echo: true, timeout: 2}",
    validate=_check_expect,
)
def udp_expect(ctx: CheckContext, st: Step) -> None:
    a = st.args
    name = a.str("sock", "u")
    sock = ctx.udp(name)
    proc = ctx.supervisor.proc
    got = sock.recvfrom(ctx.step_deadline(a.get("timeout")), lambda: proc is None or not proc.alive())
    if got is None:
        raise CheckFailed(f"expected a reply datagram, got none before the deadline{ctx.died_note()}")
    data, src = got
    port = ctx.supervisor.udp_port
    if src[1] != port:
        raise CheckFailed(
            f"expected the reply to come from port {port} (where the request was sent), got it from port "
            f"{src[1]}",
            hint="Reply with sendto() on the same socket that received the request (the one bound to the port).",
        )
    if "any" in a:
        return
    if "echo" in a:
        queue: list[bytes] = ctx.values.get(f"udp:{name}", [])
        if not queue:
            raise SpecError(a.where, f"udp_expect echo: socket {name!r} has sent no datagram left to compare with")
        expected = queue.pop(0)
    elif "uint" in a:
        u = Args(a.get("uint"), a.where)
        low, high = uint_bounds(u)
        verdict = judge_uint_be(data, u.int("size"), low, high, u.str("judge", "number"))
        if not verdict.ok:
            raise CheckFailed(verdict.message)
        return
    elif "length" in a:
        if len(data) != a.int("length"):
            raise CheckFailed(f"expected a datagram of {a.int('length')} bytes, got {len(data)}: {show(data)}")
        return
    else:
        expected = payload(a, ctx.shared.spec.directory, ctx.rng) or b""
    if data != expected:
        raise CheckFailed(f"the reply datagram differs: {describe_mismatch(expected, data)}")
