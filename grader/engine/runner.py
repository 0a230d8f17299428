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

from grader.driver.backend import LocalBackend
from grader.driver.net import free_port
from grader.driver.process import SIGPIPE_HINT
from grader.engine.context import CheckContext, Shared
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


def check_seed(seed: int, check_id: str) -> int:
    return zlib.crc32(f"{seed}:{check_id}".encode()) or 1


def grade(
    spec: Spec,
    submission: Path,
    options: Options | None = None,
    progress: Callable[[CheckResult], None] | None = None,
) -> RunResult:
    """Grade one submission. Raises only for usage errors; everything else is in the result."""
    options = options or Options()
    if not submission.is_dir():
        raise UsageError(f"the submission {submission} is not a folder")
    checks = select_checks(spec, options)
    seed = options.seed if options.seed is not None else secrets.randbelow(2**31)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="grader-") as tmp:
        workdir = Path(tmp)
        try:
            backend = LocalBackend(submission, workdir)
        except SubmissionError as exc:
            return _all_failed(spec, submission, checks, seed, t0, "build-failed", exc)
        try:
            return _grade(spec, submission, options, checks, seed, backend, workdir, t0, progress)
        finally:
            backend.stop_all()


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
    backend: LocalBackend,
    workdir: Path,
    t0: float,
    progress: Callable[[CheckResult], None] | None,
) -> RunResult:
    build = options.build if options.build is not None else spec.submission.build
    if build and not options.skip_build:
        try:
            backend.build(build)
        except SubmissionError as exc:
            return _all_failed(spec, submission, checks, seed, t0, "build-failed", exc)
    template = options.run or spec.submission.run
    server = "none" not in spec.submission.ready
    placeholders = {k: str(v) for k, v in spec.files.items()}
    placeholders["outfile"] = str(workdir / "outfile")
    supervisor: Supervisor | None = None
    if server:
        try:
            supervisor = Supervisor(backend, template, placeholders, free_port(backend.host), spec.submission.ready,
                                    spec.submission.ready_timeout)
        except (KeyError, ValueError, IndexError) as exc:
            raise UsageError(f"the run command {template!r} has a bad placeholder: {exc}") from None
        try:
            supervisor.start()
        except SubmissionError as exc:
            return _all_failed(spec, submission, checks, seed, t0, "start-failed", exc)
    results: list[CheckResult] = []
    try:
        for check in checks:
            result = run_check(spec, check, backend, supervisor, seed, workdir, template, placeholders)
            if result.outcome == "error":
                # Only a fault of the harness itself is retried (once, with a fresh server); whatever the
                # submission caused stands as it is.
                if supervisor is not None:
                    supervisor.stop()
                result = run_check(spec, check, backend, supervisor, seed, workdir, template, placeholders)
            results.append(result)
            if progress is not None:
                progress(result)
    finally:
        if supervisor is not None:
            supervisor.stop()
    return RunResult(spec.lab, spec.title, str(submission), tuple(results), time.monotonic() - t0, seed, "graded")


def run_check(
    spec: Spec,
    check: Check,
    backend: LocalBackend,
    supervisor: Supervisor | None,
    seed: int,
    workdir: Path,
    template: str,
    placeholders: dict[str, str],
) -> CheckResult:
    cseed = check_seed(seed, check.id)
    transcript = Transcript()
    t0 = time.monotonic()

    def result(outcome: str, message: str = "", hint: str = "") -> CheckResult:
        hints = [check.hint] + ([hint] if hint and hint not in check.hint else [])
        return CheckResult(check.id, check.title, check.category, check.points, check.visibility, outcome,
                           message, " ".join(h for h in hints if h), transcript.render() if outcome != "passed" else "",
                           round(time.monotonic() - t0, 4), cseed,
                           transcript.structured() if outcome != "passed" else ())

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
