"""Run a spec's checks against one submission: build once, start, judge each check, stop everything."""

from __future__ import annotations

import secrets
import tempfile
import time
import traceback
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from grader.driver import procfs
from grader.driver.backend import Backend, LocalBackend
from grader.driver.limits import Limits
from grader.driver.poll import Poll
from grader.driver.process import SIGPIPE_HINT, Proc
from grader.engine.context import CheckContext, Shared
from grader.engine.feedback import NO_FEEDBACK, Feedback, FeedbackOptions
from grader.engine.supervisor import Supervisor
from grader.engine.transcript import Transcript
from grader.errors import CheckFailed, GraderError, HarnessError, SubmissionError, UsageError
from grader.judge.show import show
from grader.report.model import CheckResult, RunResult
from grader.spec.model import Check, Spec
from grader.steps.flow import run_steps


@dataclass(frozen=True)
class Options:
    """How to grade: command overrides, which checks, and the fault-injection seed."""

    run: str | None = None
    build: str | None = None
    student: bool = False
    only: tuple[str, ...] = ()
    seed: int | None = None
    skip_build: bool = False
    limits: Limits | None = None  # None: the spec's, else the defaults
    feedback: FeedbackOptions = NO_FEEDBACK  # on failed checks: reference diff, smallest case, pcap


BackendFactory = Callable[[Path, Path, Limits], Backend]
"""Makes the backend for one grading: (the submission's folder, a private work folder, the limits)."""


def local_backend(submission: Path, workdir: Path, limits: Limits) -> Backend:
    return LocalBackend(submission, workdir, limits)


def select_checks(spec: Spec, options: Options) -> list[Check]:
    checks = [c for c in spec.checks if not (options.student and c.visibility == "hidden")]
    if options.only:
        known = {c.id for c in checks}
        unknown = [i for i in options.only if i not in known]
        if unknown:
            raise UsageError(f"--only: no {'visible ' if options.student else ''}check named "
                             f"{', '.join(unknown)} in {spec.lab}")
        checks = [c for c in checks if c.id in options.only]
    return checks


BUILD_TIMEOUT_S = 120.0


def check_seed(seed: int, check_id: str) -> int:
    return zlib.crc32(f"{seed}:{check_id}".encode()) or 1


def grade(
    spec: Spec,
    submission: Path,
    options: Options | None = None,
    progress: Callable[[CheckResult], None] | None = None,
    make_backend: BackendFactory = local_backend,
) -> RunResult:
    """Grade one submission. Raises only for usage errors; everything else is in the result."""
    options = options or Options()
    if not submission.is_dir():
        raise UsageError(f"the submission {submission} is not a folder")
    checks = select_checks(spec, options)
    seed = options.seed if options.seed is not None else secrets.randbelow(2**31)
    t0 = time.monotonic()
    limits = options.limits or spec.submission.limits
    with tempfile.TemporaryDirectory(prefix="grader-") as tmp:
        workdir = Path(tmp)
        try:
            backend = make_backend(submission, workdir, limits)
        except SubmissionError as exc:
            return _all_failed(spec, submission, checks, seed, t0, "build-failed", exc)
        try:
            return _grade(spec, submission, options, checks, seed, backend, workdir, t0, progress)
        finally:
            backend.close()


def _all_failed(spec: Spec, submission: Path, checks: list[Check], seed: int, t0: float,
                status: str, exc: SubmissionError) -> RunResult:
    results = tuple(
        CheckResult(c.id, c.title, c.category, c.points, c.visibility, "failed", str(exc), c.hint,
                    exc.output[-3000:], 0.0, check_seed(seed, c.id))
        for c in checks
    )
    return RunResult(spec.lab, spec.title, str(submission), results, time.monotonic() - t0, seed, status,
                     str(exc), exc.output)


def _grade(
    spec: Spec,
    submission: Path,
    options: Options,
    checks: list[Check],
    seed: int,
    backend: Backend,
    workdir: Path,
    t0: float,
    progress: Callable[[CheckResult], None] | None,
) -> RunResult:
    build = options.build if options.build is not None else spec.submission.build
    wall = backend.limits.wall_seconds
    if build and not options.skip_build:
        try:
            backend.build(build, timeout=min(BUILD_TIMEOUT_S, wall))
        except SubmissionError as exc:
            return _all_failed(spec, submission, checks, seed, t0, "build-failed", exc)
    template = options.run or spec.submission.run
    server = "none" not in spec.submission.ready
    placeholders = {k: backend.expose(v) for k, v in spec.files.items()}
    placeholders["outfile"] = backend.output_file("outfile")[1]
    supervisor: Supervisor | None = None
    if server:
        try:
            supervisor = Supervisor(backend, template, placeholders, spec.submission.ready,
                                    spec.submission.ready_timeout)
        except (KeyError, ValueError, IndexError) as exc:
            raise UsageError(f"the run command {template!r} has a bad placeholder: {exc}") from None
        try:
            supervisor.start()
        except SubmissionError as exc:
            return _all_failed(spec, submission, checks, seed, t0, "start-failed", exc)
    results: list[CheckResult] = []
    feedback = Feedback(spec, options.feedback, seed, backend, supervisor, workdir, template, placeholders, run_check)
    try:
        for check in checks:
            if time.monotonic() - t0 > wall:
                results.append(_not_run(check, seed, f"not run: the grading took longer than its wall-clock limit "
                                                     f"of {wall:g}s (limit wall_seconds)"))
                continue
            result = feedback.run(check)
            if result.outcome == "error":
                # Only a fault of the harness itself is retried (once, with a fresh server); whatever the
                # submission caused stands as it is.
                if supervisor is not None:
                    supervisor.stop()
                result = feedback.run(check)
            results.append(result)
            if progress is not None:
                progress(result)
    finally:
        feedback.close()
        if supervisor is not None:
            supervisor.stop()
    return RunResult(spec.lab, spec.title, str(submission), tuple(results), time.monotonic() - t0, seed, "graded")


def _not_run(check: Check, seed: int, message: str) -> CheckResult:
    return CheckResult(check.id, check.title, check.category, check.points, check.visibility, "failed", message,
                       check.hint, "", 0.0, check_seed(seed, check.id))


def run_check(
    spec: Spec,
    check: Check,
    backend: Backend,
    supervisor: Supervisor | None,
    seed: int,
    workdir: Path,
    template: str,
    placeholders: dict[str, str],
    transcript: Transcript | None = None,
    on_ready: Callable[[Shared], None] | None = None,
) -> CheckResult:
    """Run one check. ``transcript`` records it (a new one when None); ``on_ready`` is called once the server
    runs for it, just before its first step (the feedback's packet capture starts there)."""
    cseed = check_seed(seed, check.id)
    transcript = transcript if transcript is not None else Transcript()
    t0 = time.monotonic()

    def result(outcome: str, message: str = "", hint: str = "") -> CheckResult:
        hints = [check.hint] + ([hint] if hint and hint not in check.hint else [])
        return CheckResult(check.id, check.title, check.category, check.points, check.visibility, outcome,
                           message, " ".join(h for h in hints if h), transcript.render() if outcome != "passed" else "",
                           round(time.monotonic() - t0, 4), cseed,
                           events=transcript.structured() if outcome != "passed" else ())

    if supervisor is not None:
        try:
            supervisor.ensure(check.short_io, cseed, fresh=check.fresh)
        except SubmissionError as exc:
            transcript.note(exc.output[-1500:] or "(no output)", "server output")
            return result("failed", f"the server could not be (re)started for this check: {exc}")
        except HarnessError as exc:
            return result("error", f"harness error: {exc}")
        if check.short_io is not None:
            transcript.note(f"server runs with short reads/writes of at most {check.short_io.max_chunk} bytes "
                            f"(seed {cseed})")
    held = held_sockets(supervisor)
    baseline = supervisor.left_open & held if supervisor is not None else frozenset()
    shared = Shared(spec, check, backend, supervisor, transcript, time.monotonic() + check.timeout, cseed,
                    workdir, template)
    ctx = CheckContext(shared)
    ctx.values["placeholders"] = placeholders
    outcome, message, hint = "passed", "", ""
    client_end: int | None = None
    try:
        if on_ready is not None:
            on_ready(shared)
        run_steps(ctx, check.steps)
    except CheckFailed as exc:
        outcome, message, hint = "failed", exc.message, exc.hint
        if exc.detail:
            transcript.note(exc.detail[-1500:], "output")
        if exc.step:
            transcript.note(f"failed at {exc.step}")
    except GraderError as exc:  # the harness's or the spec's fault, never the student's
        outcome, message = "error", f"harness error: {exc}"
    except Exception as exc:  # a bug of ours: an error, never the student's failure
        outcome, message = "error", f"internal error: {type(exc).__name__}: {exc}"
        transcript.note(traceback.format_exc()[-2000:], "traceback")
    finally:
        # Whether the client had ended by itself, seen before the harness closes its connections: a death
        # that comes of that cleanup (a client crashing on the EOF) is the harness's doing, not the cause.
        client_end = shared.client.poll() if shared.client is not None else None
        # the server's connections, the check's among them, and the sockets it has made since the check began
        # (one of them reset: out of the kernel's tables, and written to next)
        left = (open_connections(supervisor, held_sockets(supervisor) - held - supervisor.ready_inodes)
                if supervisor is not None and outcome != "error" else frozenset())
        ctx.close_all()
        if shared.client is not None:
            if shared.client.alive():
                transcript.note("the client was still running at the end of the check; killed it")
            backend.stop(shared.client)
            err = shared.client.output("stderr", 800).strip()
            if outcome != "passed" and err:
                transcript.note(err, "client stderr")
            out = shared.client.stdout.value()
            if outcome != "passed" and out:
                transcript.note(show(out, 400), "client stdout")
    if supervisor is not None and outcome == "error":  # not settled: what it left open is not the next check's
        supervisor.left_open = held_sockets(supervisor) - supervisor.ready_inodes
    if supervisor is not None and supervisor.proc is not None and outcome != "error":
        supervisor.left_open = baseline | settle(supervisor, left, baseline, transcript)
        died = supervisor.died()
        if died is not None:
            err = supervisor.proc.output("stderr", 800).strip()
            if err:
                transcript.note(err, "server stderr")
            note = f"the server {death_cause(supervisor.proc)} during this check"
            if supervisor.proc.poll() == -13:
                hint = SIGPIPE_HINT
            elif supervisor.proc.poll() == 0:
                hint = EXITED_HINT
            if outcome == "passed":
                outcome, message = "failed", note
            else:  # the death is the cause: it leads, whatever the check was probing
                rest = message.replace(f" (the server {died})", "")
                message = note if rest.endswith(f"it {died}") else f"{note}: {rest}"  # (expect_alive said only that)
    elif outcome == "failed" and shared.client is not None and client_end is not None:
        # the client ended by itself: a signal or an uncaught exception is the cause, whatever the check probed
        cause = death_cause(shared.client) if client_end < 0 or traceback_line(shared.client) else ""
        if cause and not message.startswith(f"the client {cause}"):
            message = f"the client {cause}: {message}"
            if client_end == -13:
                hint = SIGPIPE_HINT
    return result(outcome, message, hint)


EXITED_HINT = ("A server runs until it is stopped: accept() in a loop, and never exit when a client leaves or "
               "when something goes wrong with one client.")
LEAK_S = 0.005  # how long a server must wait with the connections still open to be seen leaking them
SETTLE_S = 1.0  # how long, after a check, the server may take to finish with the connections the check closed


OPEN_STATES = (procfs.TcpState.ESTABLISHED, procfs.TcpState.FIN_WAIT1, procfs.TcpState.FIN_WAIT2,
               procfs.TcpState.CLOSE_WAIT, procfs.TcpState.LAST_ACK, procfs.TcpState.CLOSING)
QUEUED_STATES = (procfs.TcpState.ESTABLISHED, procfs.TcpState.CLOSE_WAIT)  # of a socket no process holds yet

# One of the server's connections: the socket it holds (its inode), or one still in its accept queue (no process
# holds it yet; its client's address).
Connection = int | tuple[str, int]


def held_sockets(supervisor: Supervisor | None) -> frozenset[int]:
    """The inodes of every socket the server's processes hold."""
    if supervisor is None or supervisor.proc is None or not supervisor.proc.alive():
        return frozenset()
    observer = supervisor.backend.observer
    return frozenset(observer.socket_inodes(observer.processes(supervisor.proc.pid)))


def open_connections(supervisor: Supervisor | None, listed: frozenset[Connection] = frozenset()
                     ) -> frozenset[Connection]:
    """The server's TCP connections not yet closed: the sockets of its side of its port (one it is accepting,
    out of the queue but not yet a descriptor, too), and those still in its accept queue; with those of
    ``listed`` it still holds although the kernel's tables no longer list them (a socket that an RST has reset
    is in state CLOSE, out of the tables, until the program closes it).
    The connections' table is read only when a connection waits in an accept queue of the server, or did
    (``listed`` names one: it may have been accepted since, as a socket not listed): the listeners alone cost the
    kernel little, a dump of the connections walks its whole hash table (about a millisecond a family). Without
    it the sockets held since before the check are left out: those are the ones earlier checks left open."""
    if supervisor is None or supervisor.proc is None or not supervisor.proc.alive():
        return frozenset()
    port = supervisor.tcp_port
    observer = supervisor.backend.observer
    held = observer.socket_inodes(observer.processes(supervisor.proc.pid))
    found: set[Connection] = {c for c in listed if isinstance(c, int) and c in held}
    if all(isinstance(c, int) for c in listed) and not any(
            e.rx_queue > 0 and e.inode in held and e.local[1] == port  # (a listener's accept queue)
            for e in observer.tcp_table(ports=(port,), states=(procfs.TcpState.LISTEN,))):
        return frozenset(found)
    for e in observer.tcp_table(ports=(port,), states=OPEN_STATES):
        if e.local[1] != port:
            continue  # the client's side
        if e.inode:  # held, or being accepted (out of the queue, its descriptor not yet read above)
            found.add(e.inode)
        elif e.state in QUEUED_STATES:
            found.add(e.remote)
    return frozenset(found)


def settle(supervisor: Supervisor, left: frozenset[Connection], baseline: frozenset[int],
           transcript: Transcript) -> frozenset[int]:
    """After a check has closed its connections (``left``: the server's, seen just before), let the server finish
    with them (close its sockets, or die of what it does with them, such as a send() raising SIGPIPE), at most
    SETTLE_S: a death that comes of a check is then this check's, never the next one's. It is done with them once
    it has closed them and every thread of it waits again (in accept(), recv()...) or it has ended, or once
    every thread of it has waited for LEAK_S with them still open: it leaks them.
    Sockets of earlier checks it keeps open (``baseline``) are not waited for. Returns the sockets it keeps.
    The server's sockets are followed by their file descriptors, not by the kernel's tables: a socket that an RST
    took out of the tables may still be written to, and that write is the one that raises SIGPIPE. The tables are
    read again only while a connection waits in the accept queue (one accepted then is a socket not yet known)."""
    deadline = time.monotonic() + SETTLE_S
    poll = Poll(0.001)  # (a server that closes at once has mostly done so within a millisecond)
    seen: frozenset[Connection] | None = None
    seen_at = 0.0
    queued = any(not isinstance(c, int) for c in left)
    observer = supervisor.backend.observer
    while True:
        pending = (open_connections(supervisor, left) if queued else still_held(supervisor, left)) - baseline
        kept = frozenset(c for c in pending if isinstance(c, int))
        proc = supervisor.proc
        waiting = proc is None or not proc.alive() or observer.waiting(proc.pid)
        now = time.monotonic()
        if not pending and waiting:  # done with them, and waiting again (in accept()...), or ended
            return frozenset()
        if pending and waiting and pending == seen and now - seen_at >= LEAK_S:
            # every thread has waited, the sockets unchanged, for a while: it has done all it will with them
            transcript.note(f"the server keeps {len(pending)} connection(s) this check closed open")
            return kept
        if not (waiting and pending == seen):
            seen, seen_at = (pending, now) if waiting else (None, 0.0)
        if now > deadline:
            if pending:
                transcript.note(f"the server still holds {len(pending)} connection(s) this check closed")
            else:
                transcript.note(f"the server was still running {SETTLE_S:g} s after the check")
            return kept
        poll.pause(deadline)


def still_held(supervisor: Supervisor, sockets: frozenset[Connection]) -> frozenset[Connection]:
    """Those of ``sockets`` the server still holds (its file descriptors only: no socket tables)."""
    return frozenset(c for c in sockets if isinstance(c, int)) & held_sockets(supervisor)


def traceback_line(proc: Proc) -> str:
    """The last line of a Python traceback in the process's standard error (the exception), or ''."""
    proc.stderr.join(0.5)
    text = proc.output("stderr", 4000)
    if "Traceback (most recent call last):" not in text:
        return ""
    lines = [line.strip() for line in text.split("Traceback (most recent call last):")[-1].splitlines()]
    exception = [line for line in lines if line and not line.startswith(("File ", "^", "~", "[output capped"))]
    return exception[-1] if exception else ""


def death_cause(proc: Proc) -> str:
    """How the process ended, with its uncaught exception if it raised one: 'was killed by SIGPIPE (signal 13)',
    'exited with status 1 (uncaught ConnectionResetError: [Errno 104] Connection reset by peer)'."""
    status = proc.status_text()
    line = traceback_line(proc) if (proc.poll() or 0) > 0 else ""
    return f"{status} (uncaught {line})" if line else status
