"""Process steps: the submission's liveness, exit, output, open sockets, and restarts; starting a client."""

from __future__ import annotations

import re
import time
from pathlib import Path

from grader.driver import netns, procfs
from grader.driver.poll import Poll
from grader.driver.preload import PreloadBuildError, ShortIO, build_preload
from grader.driver.process import DATA_CAP, SIGPIPE_HINT, Proc
from grader.engine.context import CheckContext
from grader.engine.supervisor import fill
from grader.errors import CheckFailed, HarnessError, SpecError, SubmissionError
from grader.judge.show import describe_mismatch, show
from grader.spec.model import Args, Step
from grader.steps.common import NAME, PAYLOAD_PROPS, SECONDS, check_payload, obj, payload
from grader.steps.registry import LoadContext, step

WAIT_CLOSED_S = 5.0
STDIN_PROPS = {f"stdin_{k}": v for k, v in PAYLOAD_PROPS.items()}


@step(
    "expect_alive",
    group="process",
    summary="The server submission is still running; if not, say how it ended (exit status or signal).",
    schema=obj({}),
    example="- expect_alive: {}",
)
def expect_alive(ctx: CheckContext, st: Step) -> None:
    sup = ctx.supervisor
    status = "is not running" if sup.proc is None else sup.died()
    if status is not None:
        hint = SIGPIPE_HINT if sup.proc is not None and sup.proc.poll() == -13 else ""
        raise CheckFailed(f"expected the server to keep running, but it {status}", hint=hint)


@step(
    "wait_closed",
    group="process",
    summary=(
        "Wait until the submission has closed its socket of a connection (gone from its process tree's open "
        "files in /proc), or has ended, or timeout seconds (default 5) have passed. It judges nothing: put it "
        "after a reset or close and before expect_alive or expect_sockets, so their verdict never depends on "
        "how soon the submission gets round to that connection."
    ),
    schema=obj({"conn": NAME, "timeout": SECONDS}),
    example="- wait_closed: {conn: rude}",
)
def wait_closed(ctx: CheckContext, st: Step) -> None:
    conn = ctx.conn(st.args.str("conn", "c"))
    proc = ctx.observed()
    deadline = ctx.step_deadline(st.args.float("timeout", WAIT_CLOSED_S))
    inode = conn.peer_inode_at_close
    poll = Poll()
    while True:
        if proc is None or not proc.alive():
            ctx.transcript.note("the submission has ended", conn.label)
            return
        if not inode:
            found = conn.peer_socket()
            if found is None:  # reset or closed before the program accepted it: nothing of it to follow
                ctx.transcript.note("the submission never accepted this connection", conn.label)
                return
            inode = found[1]
        if inode and inode not in ctx.observer.socket_inodes(ctx.observer.processes(proc.pid)):
            sup = ctx.shared.supervisor
            if sup is not None and sup.proc is proc and sup.died() is not None:
                ctx.transcript.note("the submission has ended", conn.label)  # its sockets closed as it died
            else:
                ctx.transcript.note("the submission has closed its socket of this connection", conn.label)
            return
        if time.monotonic() > deadline:
            ctx.transcript.note("the submission still holds its socket of this connection", conn.label)
            return
        poll.pause(deadline)


@step(
    "expect_sockets",
    group="process",
    summary=(
        "Count the sockets held open by the submission's whole process tree (from /proc), polling until "
        "the limits hold or the timeout passes: at most max_open sockets in all, at most max_close_wait in "
        "CLOSE_WAIT (accepted connections the client closed but the program never closed)."
    ),
    schema=obj({"max_open": {"type": "integer", "minimum": 0}, "max_close_wait": {"type": "integer", "minimum": 0},
                "timeout": SECONDS}),
    example="- expect_sockets: {max_close_wait: 0, max_open: 4, timeout: 2}",
)
def expect_sockets(ctx: CheckContext, st: Step) -> None:
    a = st.args
    proc = ctx.observed()
    if proc is None:
        raise CheckFailed("the submission is not running")
    deadline = ctx.step_deadline(a.get("timeout"))
    max_open = a.get("max_open")
    max_cw = a.get("max_close_wait")
    poll = Poll()
    while True:
        socks = [s for s in ctx.observer.sockets(proc.pid) if s.proto.startswith("tcp")]
        close_wait = [s for s in socks if s.state == procfs.TcpState.CLOSE_WAIT]
        ok = (max_open is None or len(socks) <= int(max_open)) and (
            max_cw is None or len(close_wait) <= int(max_cw)
        )
        if ok:
            return
        if time.monotonic() > deadline:
            break
        poll.pause(deadline)
    if max_cw is not None and len(close_wait) > int(max_cw):
        raise CheckFailed(
            f"expected at most {max_cw} sockets in CLOSE_WAIT, found {len(close_wait)}: the clients closed "
            "these connections but the program never closed its side",
            hint="close() every accepted socket when you are done with the client (also on error paths).",
        )
    raise CheckFailed(
        f"expected at most {max_open} open TCP sockets, found {len(socks)} "
        f"({', '.join(sorted({procfs.TcpState(s.state).name for s in socks}))})",
        hint="close() every accepted socket when you are done with the client.",
    )


@step(
    "restart",
    group="process",
    summary=(
        "Kill the server and start it again at once on the same port, while its old connections may sit in "
        "TIME_WAIT: a server that does not set SO_REUSEADDR fails to bind."
    ),
    schema=obj({}),
    example="- restart: {}",
)
def restart(ctx: CheckContext, st: Step) -> None:
    sup = ctx.supervisor
    tw = [s for s in ctx.observer.tcp_table(ports=(sup.tcp_port,), states=(procfs.TcpState.TIME_WAIT,))
          if s.local[1] == sup.tcp_port]
    ctx.transcript.note(f"killing the server ({len(tw)} connections on its port in TIME_WAIT) and restarting it")
    try:
        sup.restart()
    except SubmissionError as exc:
        raise CheckFailed(
            f"the restarted server did not come up: {exc}",
            detail=exc.output,
            hint="Set SO_REUSEADDR on the listening socket before bind(), so a restart can bind while old "
            "connections are in TIME_WAIT.",
        ) from None
    ctx.transcript.note("the restarted server is listening again")


def _check_start(args: Args, load: LoadContext) -> None:
    check_payload(args, load, required=False, prefix="stdin_")
    targets = [k for k in ("listener", "refused", "unknown_host") if k in args]
    if len(targets) > 1:
        raise SpecError(args.where, f"give at most one of listener, refused, unknown_host; got {targets}")
    if args.get("network") == "none" and "unknown_host" not in args and "url" not in args:
        raise SpecError(
            args.where,
            "network: none cuts the client off from the harness's listener: give unknown_host or a url",
        )


UNKNOWN_HOST = "no-such-host.invalid"  # RFC 6761: .invalid never resolves


@step(
    "start",
    group="client program",
    summary=(
        "Start the client submission with the run template. {host} {port} {url} point at a harness listener "
        "(listener: srv) with url_path, at a port where nothing listens (refused: true), or at a host name "
        "that never resolves (unknown_host: true, " + UNKNOWN_HOST + " port 80). {outfile} is a fresh file "
        "path. Standard input comes from stdin_text, stdin_hex, stdin_file or stdin_size. network: none runs "
        "the client in its own network namespace with no way off the machine (implied by unknown_host, so "
        "its DNS lookup fails at once and never leaves the machine)."
    ),
    schema=obj(
        {
            "listener": NAME,
            "url_path": {"type": "string", "pattern": "^/"},
            "url": {"type": "string"},
            "refused": {"const": True},
            "unknown_host": {"const": True},
            "network": {"enum": ["none"]},
            **STDIN_PROPS,
        }
    ),
    example='- start: {listener: srv, url_path: /index.html}',
    validate=_check_start,
)
def start(ctx: CheckContext, st: Step) -> None:
    a = st.args
    values = dict(ctx.values.get("placeholders", {}))
    isolated = a.get("network") == "none" or a.bool("unknown_host")
    if a.bool("refused"):
        host, port = ctx.host, ctx.backend.ports.lease(avoid_swapped=False)  # reserved: nobody listens there
    elif a.bool("unknown_host"):
        host, port = UNKNOWN_HOST, 80
    elif isolated:
        host, port = ctx.host, 80  # cut off from every listener: only the spec's url means anything
    else:
        lst = ctx.listener(a.str("listener", "srv"))
        host, port = lst.host, lst.port
    hostpart = f"[{host}]" if ":" in host else host
    values.update(host=host, port=str(port))
    default_url = f"http://{hostpart}{a.str('url_path', '/')}" if port == 80 else (
        f"http://{hostpart}:{port}{a.str('url_path', '/')}"
    )
    url = a.str("url") or default_url
    values["url"] = url.format_map(values)
    outfile, told = ctx.backend.output_file(f"out-{ctx.shared.check.id}")
    outfile.unlink(missing_ok=True)
    values["outfile"] = told
    ctx.values["outfile"] = outfile
    ctx.values["placeholders"] = values
    argv = fill(ctx.shared.run_template, values)
    prefix = netns.isolated_prefix() if isolated else []
    stdin = payload(a, ctx.shared.spec.directory, ctx.rng, prefix="stdin_")
    ctx.values["stdin"] = stdin or b""
    env: dict[str, str] = {}
    sio = ctx.shared.check.short_io
    if sio is not None:
        try:
            lib = build_preload()
        except PreloadBuildError as exc:
            raise HarnessError(f"cannot build the short-I/O preload library: {exc}") from exc
        env = ShortIO(ctx.shared.seed, sio.max_chunk, sio.eintr, sio.writes, sio.reads).env(
            Path(ctx.backend.expose(lib)))
    ctx.transcript.note(
        f"started: {' '.join(argv)}"
        + (" in a network namespace of its own (no network)" if isolated else "")
        + (f" with {len(stdin)} bytes on stdin" if stdin else "")
        + (f"; short reads/writes of at most {sio.max_chunk} bytes (seed {ctx.shared.seed})" if sio else "")
    )
    try:
        ctx.shared.client = ctx.shared.backend.start(
            prefix + argv, env, stdin=stdin if stdin is not None else b"", label="client", stdout_cap=DATA_CAP
        )
    except SubmissionError as exc:
        raise CheckFailed(str(exc)) from None


def client(ctx: CheckContext) -> Proc:
    if ctx.shared.client is None:
        raise SpecError(ctx.shared.check.where, "this step needs a client started by an earlier start step")
    return ctx.shared.client


@step(
    "expect_exit",
    group="client program",
    summary="The client program exits within the timeout, with status 0 (code: 0) or any failure (nonzero: true).",
    schema=obj({"code": {"type": "integer"}, "nonzero": {"const": True}, "timeout": SECONDS}),
    example="- expect_exit: {code: 0, timeout: 5}",
)
def expect_exit(ctx: CheckContext, st: Step) -> None:
    a = st.args
    proc = client(ctx)
    code = proc.wait(ctx.step_deadline(a.get("timeout")) - time.monotonic())
    if code is None:
        raise CheckFailed(
            f"expected the program to exit, but it was still running after {a.float('timeout', 5):g}s",
            hint="Does it wait for more data after the server closed? recv() returns 0 at end of stream.",
        )
    ctx.transcript.note(f"the client {proc.status_text()}")
    stderr = proc.output("stderr", 400).strip()
    if code < 0:
        raise CheckFailed(f"the program {proc.status_text()}" + (f"; stderr: {stderr}" if stderr else ""))
    if "code" in a and code != a.int("code"):
        raise CheckFailed(
            f"expected exit status {a.int('code')}, got {code}" + (f"; stderr: {stderr}" if stderr else "")
        )
    if a.bool("nonzero") and code == 0:
        raise CheckFailed("expected a non-zero exit status (failure), got 0")


def _check_output(args: Args, load: LoadContext) -> None:
    check_payload(args, load, required=False)
    if "regex" in args:
        try:
            re.compile(args.str("regex"))
        except re.error as exc:
            raise SpecError(args.where, f"regex: {exc}") from None


OUTPUT_SCHEMA = obj(
    {
        **PAYLOAD_PROPS,
        "stdin_echo": {"const": True},
        "empty": {"type": "boolean"},
        "nonempty": {"const": True},
        "regex": {"type": "string"},
        "absent": {"const": True},
        "timeout": SECONDS,
    }
)


def _judge_output(ctx: CheckContext, a: Args, got: bytes | None, what: str) -> None:
    if a.bool("absent"):
        if got:
            raise CheckFailed(f"expected nothing in {what}, got {len(got)} bytes: {show(got)}")
        return
    if got is None:
        raise CheckFailed(f"expected {what}, but it was never written")
    if a.bool("nonempty") and not got.strip():
        raise CheckFailed(f"expected a message on {what}, got nothing")
    if "empty" in a and a.bool("empty") and got:
        raise CheckFailed(f"expected {what} to be empty, got {show(got)}")
    if "regex" in a and not re.search(a.str("regex").encode(), got):
        raise CheckFailed(f"expected {what} matching /{a.str('regex')}/, got {show(got)}")
    expected = ctx.values.get("stdin", b"") if a.bool("stdin_echo") else payload(
        a, ctx.shared.spec.directory, ctx.rng
    )
    if expected is not None and got != expected:
        raise CheckFailed(f"{what} differs from what was expected: {describe_mismatch(expected, got)}")


def _wait_exit(ctx: CheckContext, a: Args) -> Proc:
    proc = client(ctx)
    if proc.wait(ctx.step_deadline(a.get("timeout")) - time.monotonic()) is None:
        raise CheckFailed("the program was still running; its output is judged once it exits")
    proc.stdout.join(2)
    proc.stderr.join(2)
    return proc


@step(
    "expect_stdout",
    group="client program",
    summary="Once the client exits, judge its standard output: exact bytes, stdin_echo, regex, empty.",
    schema=OUTPUT_SCHEMA,
    example="- expect_stdout: {stdin_echo: true}",
    validate=_check_output,
)
def expect_stdout(ctx: CheckContext, st: Step) -> None:
    proc = _wait_exit(ctx, st.args)
    if proc.stdout.truncated:
        raise CheckFailed(f"the program wrote {proc.stdout.total} bytes to standard output, more than the "
                          f"{DATA_CAP} bytes the grader keeps")
    _judge_output(ctx, st.args, proc.stdout.value(), "standard output")


@step(
    "expect_stderr",
    group="client program",
    summary="Once the client exits, judge its standard error (nonempty: true for 'prints an error message').",
    schema=OUTPUT_SCHEMA,
    example="- expect_stderr: {nonempty: true}",
    validate=_check_output,
)
def expect_stderr(ctx: CheckContext, st: Step) -> None:
    proc = _wait_exit(ctx, st.args)
    _judge_output(ctx, st.args, proc.stderr.value(), "standard error")


@step(
    "expect_outfile",
    group="client program",
    summary="Once the client exits, judge the file it wrote at {outfile}: byte-equal to a file or text, or absent.",
    schema=OUTPUT_SCHEMA,
    example="- expect_outfile: {file: files/www/photo.png}",
    validate=_check_output,
)
def expect_outfile(ctx: CheckContext, st: Step) -> None:
    _wait_exit(ctx, st.args)
    path: Path | None = ctx.values.get("outfile")
    got = path.read_bytes() if path is not None and path.exists() else None
    _judge_output(ctx, st.args, got, "the output file")
