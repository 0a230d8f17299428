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

from grader.driver.backend import Backend, LocalBackend
from grader.driver.limits import Limits
from grader.driver.process import SIGPIPE_HINT
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
                           round(time.monotonic() - t0, 4), cseed)

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
    shared = Shared(spec, check, backend, supervisor, transcript, time.monotonic() + check.timeout, cseed,
                    workdir, template)
    ctx = CheckContext(shared)
    ctx.values["placeholders"] = placeholders
    outcome, message, hint = "passed", "", ""
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
    if supervisor is not None and supervisor.proc is not None and outcome != "error":
        died = supervisor.died()
        if died is not None:
            err = supervisor.proc.output("stderr", 800).strip()
            if err:
                transcript.note(err, "server stderr")
            note = f"the server {died} during this check"
            if outcome == "passed":
                outcome, message = "failed", note
                if supervisor.proc.poll() == -13:
                    hint = SIGPIPE_HINT
            elif f"the server {died}" not in message:
                message = f"{message} ({note})"
    return result(outcome, message, hint)
