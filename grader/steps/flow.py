"""Group and escape-hatch steps: run branches at once, wait deliberately, call a Python function."""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Callable
from typing import Any

from grader.engine.context import CheckContext
from grader.errors import CheckFailed, HarnessError, SpecError
from grader.spec.model import Args, Step
from grader.steps.common import SECONDS, obj
from grader.steps.registry import REGISTRY, LoadContext, step


def run_steps(ctx: CheckContext, steps: tuple[Step, ...]) -> None:
    """Run steps in order; a failure names the step and its line in the spec."""
    for i, st in enumerate(steps, 1):
        try:
            REGISTRY.get(st.kind).run(ctx, st)
        except CheckFailed as exc:
            if not exc.step:
                exc.step = f"step {i} ({st.kind}, line {st.where.line})"
            raise


@step(
    "parallel",
    group="flow",
    summary=(
        "Run the nested steps in `count` branches at the same time, each with its own connections; every "
        "branch must succeed. Use it for N clients at once."
    ),
    schema=obj({"count": {"type": "integer", "minimum": 1, "maximum": 64}, "steps": {"type": "array"}},
               required=("count", "steps")),
    example="- parallel:\n    count: 8\n    steps:\n      - connect: {}\n      - send: {size: 100000}\n"
    "      - shutdown_write: {}\n      - expect_bytes: {echo: true, eof: true}",
    nested=True,
)
def parallel(ctx: CheckContext, st: Step) -> None:
    count = st.args.int("count")
    errors: list[tuple[int, BaseException]] = []
    lock = threading.Lock()
    start = threading.Barrier(count)  # all branches start together
    group = threading.Barrier(count)  # and meet again at each barrier step

    def branch(i: int) -> None:
        with ctx.branch(i, group) as sub:
            try:
                try:
                    start.wait(timeout=max(0.1, ctx.deadline - time.monotonic()))
                except threading.BrokenBarrierError:
                    raise HarnessError(f"the {count} branches could not start before the check's deadline") from None
                run_steps(sub, st.nested)
            except BaseException as exc:  # collected and re-raised in the main thread
                group.abort()  # no branch waits at a barrier for this one
                with lock:
                    errors.append((i, exc))

    threads = [threading.Thread(target=branch, args=(i,), daemon=True) for i in range(1, count + 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.1, ctx.deadline - time.monotonic()) + 5)
    if any(t.is_alive() for t in threads):
        raise HarnessError("a parallel branch did not finish after the check's deadline")
    if errors:
        # A branch's own failure comes before the barrier it broke for the others.
        errors.sort(key=lambda e: (isinstance(e[1], GroupBroken), e[0]))
        i, exc = errors[0]
        failed = [n for n, e in errors if isinstance(e, CheckFailed) and not isinstance(e, GroupBroken)]
        if isinstance(exc, CheckFailed):
            raise CheckFailed(
                f"{len(failed)} of {count} concurrent clients failed; client {i}: {exc.message}",
                detail=exc.detail,
                hint=exc.hint,
            )
        raise exc


class GroupBroken(CheckFailed):
    """A barrier step gave up because another branch of the group failed first."""


@step(
    "barrier",
    group="flow",
    summary=(
        "Inside parallel: wait until every branch has reached this step, so that, say, all clients have "
        "sent half a request before any sends the rest. A branch that fails releases the others."
    ),
    schema=obj({"timeout": SECONDS}),
    example="- parallel:\n    count: 8\n    steps:\n      - connect: {}\n"
    '      - send: {text: "GET / HTTP/1.0\\r\\n", wait_read: true, timeout: 5}\n      - barrier: {}\n'
    '      - send: {text: "\\r\\n"}\n      - expect_http: {status: 200}',
)
def barrier(ctx: CheckContext, st: Step) -> None:
    if ctx.group is None:
        raise SpecError(st.where, "barrier is only meaningful inside the steps of a parallel step")
    try:
        ctx.group.wait(timeout=max(0.01, ctx.step_deadline(st.args.get("timeout")) - time.monotonic()))
    except threading.BrokenBarrierError:
        raise GroupBroken("another client of the group failed, or did not reach this point in time") from None


@step(
    "pause",
    group="flow",
    summary="Wait a deliberate time (a protocol delay, such as a client that stalls); never for synchronisation.",
    schema=obj({"seconds": SECONDS}, required=("seconds",)),
    example="- pause: {seconds: 0.5}",
)
def pause(ctx: CheckContext, st: Step) -> None:
    time.sleep(max(0.0, min(st.args.float("seconds"), ctx.deadline - time.monotonic())))


def _resolve(path: str) -> Callable[..., Any]:
    module, _, name = path.replace(":", ".").rpartition(".")
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


def _check_call(args: Args, load: LoadContext) -> None:
    try:
        fn = _resolve(args.str("function"))
    except (ImportError, AttributeError, ValueError) as exc:
        raise SpecError(args.where, f"function {args.str('function')!r} cannot be imported: {exc}") from None
    if not callable(fn):
        raise SpecError(args.where, f"{args.str('function')!r} is not callable")


@step(
    "call",
    group="flow",
    summary=(
        "The escape hatch: call a Python function `fn(ctx, args)` named by a dotted path (module.name or "
        "module:name), with the same context and transcript as the built-in steps. It fails the check by "
        "raising grader.errors.CheckFailed."
    ),
    schema=obj({"function": {"type": "string"}, "args": {"type": "object"}}, required=("function",)),
    example="- call: {function: mylab.checks:greeting_is_polite, args: {conn: c}}",
    validate=_check_call,
)
def call(ctx: CheckContext, st: Step) -> None:
    fn = _resolve(st.args.str("function"))
    fn(ctx, Args(st.args.get("args") or {}, st.where))
