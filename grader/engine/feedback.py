"""Feedback on a failed check beyond its verdict: the reference's bytes beside the submission's, the smallest
fault injection that still fails, and a packet capture of the check's traffic.

:class:`Feedback` wraps each run of a check for the runner. Nothing here runs for a passing check (apart from
the packet capture, which only runs with ``--pcap`` and is deleted when the check passes).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from grader.driver.backend import Backend
from grader.driver.capture import Capture, merge
from grader.engine.context import Shared
from grader.engine.differential import ReferenceRunner, RunCheck, differential
from grader.engine.shrink import shrink_short_io, shrink_split, split_sites
from grader.engine.supervisor import Supervisor
from grader.engine.transcript import Transcript
from grader.errors import GraderError, HarnessError
from grader.report.model import CheckResult
from grader.spec.model import Check, Spec


@dataclass(frozen=True)
class FeedbackOptions:
    """Which feedback to give on failed checks. The library's default is none (selftest, tests and benches
    grade many programs that fail on purpose); ``grader check`` turns the differential and the shrinking on."""

    differential: bool = False
    shrink: bool = False
    pcap: Path | None = None


NO_FEEDBACK = FeedbackOptions()
CHECK_DEFAULTS = FeedbackOptions(differential=True, shrink=True)  # what `grader check` gives unless told not to


class CheckCapture:
    """The packet capture of one check: tcpdump on the server's ports from just before the first step, and on
    each port a step opens (a harness listener) from the moment it is opened, before any program knows it."""

    def __init__(self, directory: Path, name: str, transcript: Transcript) -> None:
        self.directory = directory
        self.name = name
        self.transcript = transcript
        self.parts: list[Capture] = []
        self.ports: set[int] = set()
        self.problem = ""
        self._lock = threading.Lock()

    def ready(self, shared: Shared) -> None:
        """The runner's on_ready hook: capture the server's ports, and every port the check opens later."""
        sup = shared.supervisor
        if sup is not None:
            self.add((sup.port, sup.tcp_port, sup.udp_port))
        shared.transcript.on_port = lambda port: self.add((port,))

    def add(self, ports: Iterable[int]) -> None:
        with self._lock:
            new = set(ports) - self.ports
            if not new or self.problem:
                return
            self.ports |= new
            path = self.directory / f"{self.name}.part{len(self.parts) + 1}.pcap"
            try:
                self.parts.append(Capture(path, new))
            except HarnessError as exc:  # a capture that fails never changes the verdict
                self.problem = str(exc)
                self.transcript.note(f"no packet capture: {exc}")

    def finish(self, keep: bool) -> str:
        """Stop capturing; keep the pcap (its path, or paths) or delete it."""
        with self._lock:
            parts, self.parts = self.parts, []
            if not keep:
                for cap in parts:
                    cap.discard()
                return ""
            done: list[Path] = []
            for cap in parts:
                try:
                    done.append(cap.stop())
                except HarnessError as exc:
                    self.problem = str(exc)
                    cap.discard()
            if self.problem or not done:
                for p in done:
                    p.unlink(missing_ok=True)
                return ""
            return ", ".join(str(p) for p in merge(done, self.directory / f"{self.name}.pcap"))


def _noted(result: CheckResult, note: str) -> CheckResult:
    return dataclasses.replace(result, transcript=f"{result.transcript}\n  -- {note}".lstrip("\n"))


class Feedback:
    """Runs a grading run's checks with the feedback its options ask for."""

    def __init__(
        self,
        spec: Spec,
        options: FeedbackOptions,
        seed: int,
        backend: Backend,
        supervisor: Supervisor | None,
        workdir: Path,
        template: str,
        placeholders: dict[str, str],
        run_check: RunCheck,
    ) -> None:
        self.spec = spec
        self.options = options
        self.seed = seed
        self.backend = backend
        self.supervisor = supervisor
        self.workdir = workdir
        self.template = template
        self.placeholders = placeholders
        self._run_check = run_check
        self._reference: ReferenceRunner | None = None

    def _run(self, check: Check, transcript: Transcript | None = None,
             on_ready: Callable[[Shared], None] | None = None) -> CheckResult:
        return self._run_check(self.spec, check, self.backend, self.supervisor, self.seed, self.workdir,
                               self.template, self.placeholders, transcript=transcript, on_ready=on_ready)

    def run(self, check: Check) -> CheckResult:
        """Run ``check`` once and, when it fails, add what the options ask for."""
        transcript = Transcript()
        capture = None
        if self.options.pcap is not None:
            capture = CheckCapture(self.options.pcap, f"{self.spec.lab}.{check.id}", transcript)
        try:
            result = self._run(check, transcript, capture.ready if capture is not None else None)
        except BaseException:
            if capture is not None:
                capture.finish(keep=False)
            raise
        if capture is not None:
            result = dataclasses.replace(result, pcap=capture.finish(keep=result.outcome == "failed"))
            if capture.problem and result.outcome == "failed":
                result = _noted(result, f"no packet capture: {capture.problem}")
        if result.outcome != "failed":
            return result
        if self.options.differential and check.differential:
            result = self._guarded(result, "no comparison with the reference program",
                                   lambda: self._differential(check, result, transcript))
        if self.options.shrink:
            result = self._guarded(result, "no search for the smallest failing case",
                                   lambda: self._shrink(check, result))
        return result

    @staticmethod
    def _guarded(result: CheckResult, what: str, give: Callable[[], CheckResult]) -> CheckResult:
        """Feedback never changes a verdict: a fault while giving it is noted in the transcript, nothing more."""
        try:
            return give()
        except GraderError as exc:
            return _noted(result, f"{what}: {exc}")
        except Exception as exc:  # a bug of ours: say so, keep the verdict
            return _noted(result, f"{what}: internal error: {type(exc).__name__}: {exc}")

    def _trial(self, variant: Check, timeout: float) -> str:
        return self._run(dataclasses.replace(variant, timeout=timeout)).outcome

    def _shrink(self, check: Check, result: CheckResult) -> CheckResult:
        sites = split_sites(check, self.spec.directory)
        if sites:
            smallest = shrink_split(check, sites, self._trial)
        elif check.short_io is not None:
            smallest = shrink_short_io(check, self._trial)
        else:
            return result
        if self.supervisor is not None:
            self.supervisor.stop()  # the next check meets a fresh server, whatever the variations did to this one
        return result if smallest is None else dataclasses.replace(result, smallest=smallest)

    def _differential(self, check: Check, result: CheckResult, transcript: Transcript) -> CheckResult:
        if self._reference is None:
            self._reference = ReferenceRunner(self.spec, self.seed, self._run_check)
        ran = self._reference.run(check)
        if ran is None:
            return _noted(result, f"no comparison with the reference program: {self._reference.unavailable}")
        ref_result, ref_transcript = ran
        assert self.spec.reference is not None
        return dataclasses.replace(result, differential=differential(self.spec.reference, ref_result,
                                                                      ref_transcript, transcript))

    def close(self) -> None:
        if self._reference is not None:
            self._reference.close()
