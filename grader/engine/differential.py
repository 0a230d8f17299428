"""The reference program beside the submission: the same probe (same seed, same fragments) run against both.

For a failed check, :class:`ReferenceRunner` runs the same check against the lab's reference program (once per
check and seed within a grading run, and only when a check fails), and :func:`compare` lines the two
transcripts up connection by connection: the bytes each program sent, and the bytes the grader could send it,
with the first byte where they part marked. The reference is built and started lazily, in its own work folder,
on its own port, and stopped with the grading run.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from grader.driver.backend import LocalBackend
from grader.engine.supervisor import Supervisor
from grader.engine.transcript import GRADER, PROGRAM, Exchange, Transcript
from grader.errors import GraderError
from grader.judge.show import escape, first_difference
from grader.report.model import CheckResult, Differential
from grader.spec.model import Check, Spec

CONTEXT = 24  # bytes shown before the first difference
WIDTH = 72  # bytes shown from there on
LINE = 80  # bytes of the line shown in the one-line summary
SAME = 60  # bytes shown of a direction where both programs agree
MAX_CONNECTIONS = 4  # connections shown side by side (the one where the programs part first among them)

RunCheck = Callable[..., CheckResult]  # grader.engine.runner.run_check (passed in: no import cycle)


@dataclass(frozen=True)
class Divergence:
    """Where two exchanges first part: the connection, who sent the bytes, and the offset."""

    connection: str
    direction: str
    offset: int
    reference: bytes
    yours: bytes


def divergences(reference: list[Exchange], yours: list[Exchange]) -> list[Divergence]:
    """Every connection and direction on which the two runs differ, in the reference's order of connections
    (then the submission's extra ones); within a connection, the program's bytes before the grader's."""
    ref = {e.label: e for e in reference}
    mine = {e.label: e for e in yours}
    labels = [e.label for e in reference] + [e.label for e in yours if e.label not in ref]
    found: list[Divergence] = []
    for label in labels:
        for direction in (PROGRAM, GRADER):
            r = ref[label].data(direction) if label in ref else b""
            y = mine[label].data(direction) if label in mine else b""
            offset = first_difference(r, y)
            if offset is not None:
                found.append(Divergence(label, direction, offset, r, y))
    return found


def first_divergence(reference: list[Exchange], yours: list[Exchange]) -> Divergence | None:
    """What the programs sent counts first (a different answer), then what the grader could send (one stopped
    reading); None when both exchanges are the same byte for byte."""
    found = divergences(reference, yours)
    for d in found:
        if d.direction == PROGRAM:
            return d
    return found[0] if found else None


def _line_at(data: bytes, offset: int) -> bytes:
    """The line of ``data`` holding byte ``offset`` (its line end included)."""
    start = data.rfind(b"\n", 0, offset) + 1
    end = data.find(b"\n", offset)
    return data[start : len(data) if end < 0 else end + 1]


def summary_line(d: Divergence) -> str:
    """'reference sent `HTTP/1.0 404 Not Found\\r\\n`, yours sent `HTTP/1.0 200 OK\\r\\n`' and the like."""
    where = f"(connection {d.connection}, byte {d.offset})"
    if d.direction == PROGRAM:
        ref = f"`{escape(_line_at(d.reference, d.offset), LINE)}`" if d.offset < len(d.reference) else ""
        mine = f"`{escape(_line_at(d.yours, d.offset), LINE)}`" if d.offset < len(d.yours) else ""
        if not d.yours:
            return f"reference sent {ref}, yours sent nothing {where}"
        if not mine:
            return (f"reference sent {ref}, yours sent nothing more: its {len(d.yours)} bytes end there "
                    f"{where}")
        if not ref:
            return (f"reference sent nothing more after its {len(d.reference)} bytes, yours went on with {mine} "
                    f"{where}")
        sizes = "" if len(d.reference) == len(d.yours) else (
            f"; in all the reference sent {len(d.reference)} bytes, yours {len(d.yours)}")
        return f"reference sent {ref}, yours sent {mine} {where}{sizes}"
    if len(d.yours) < len(d.reference):
        return (f"the grader could send the reference all {len(d.reference)} bytes, but yours only "
                f"{len(d.yours)}: it stopped reading (or closed) before `{escape(d.reference[d.offset:], LINE)}` "
                f"{where}")
    return (f"the grader sent yours {len(d.yours)} bytes and the reference {len(d.reference)}: the probes "
            f"parted at byte {d.offset} {where}")


def _window(data: bytes, start: int) -> tuple[str, str]:
    """The escaped prefix marker and the text of ``data`` from ``start`` (at most WIDTH bytes)."""
    lead = "…" if start > 0 else ""
    chunk = data[start : start + WIDTH]
    tail = "…" if start + WIDTH < len(data) else ""
    return lead, escape(chunk, WIDTH) + tail


def render(reference: list[Exchange], yours: list[Exchange], chosen: Divergence | None) -> str:
    """Both exchanges, connection by connection, one above the other; the first differing byte marked."""
    ref = {e.label: e for e in reference}
    mine = {e.label: e for e in yours}
    labels = [e.label for e in reference] + [e.label for e in yours if e.label not in ref]
    who = {GRADER: "the grader sent", PROGRAM: "the program sent"}
    lines: list[str] = []
    if len(labels) > MAX_CONNECTIONS:  # many clients at once: the one that parts first, and a few more
        keep = [chosen.connection] if chosen is not None else []
        keep += [lb for lb in labels if lb not in keep][: MAX_CONNECTIONS - len(keep)]
        omitted = len(labels) - len(keep)
        labels = [lb for lb in labels if lb in keep]
    else:
        omitted = 0
    for label in labels:
        for direction in (GRADER, PROGRAM):
            r = ref[label].data(direction) if label in ref else b""
            y = mine[label].data(direction) if label in mine else b""
            if not r and not y:
                continue
            head = f"  [{label}] {who[direction]}"
            offset = first_difference(r, y)
            if offset is None:
                lines.append(f"{head}: the same {len(r)} bytes to both: {escape(r, SAME)}")
                continue
            start = max(0, offset - CONTEXT)
            mark = " <-- first difference" if chosen is not None and (chosen.connection, chosen.direction) == (
                label, direction) else ""
            lines.append(f"{head}:{mark}")
            prefix_ref = f"    reference {len(r):>6} bytes: "
            prefix_you = f"    yours     {len(y):>6} bytes: "
            lead_r, text_r = _window(r, start)
            lead_y, text_y = _window(y, start)
            lines.append(prefix_ref + lead_r + (text_r or "(nothing)"))
            lines.append(prefix_you + lead_y + (text_y or "(nothing)"))
            column = len(prefix_you) + len(lead_y) + len(escape(y[start:offset], WIDTH))
            lines.append(" " * column + f"^ byte {offset}")
    if omitted:
        lines.append(f"  … {omitted} more connections not shown")
    return "\n".join(lines)


def differential(reference_dir: Path, ref_result: CheckResult, ref: Transcript, yours: Transcript) -> Differential:
    """Compare the submission's transcript of a failed check with the reference's on the same probe."""
    r, y = ref.exchanges(), yours.exchanges()
    for ref_port, your_port in zip(ref.ports, yours.ports, strict=False):
        r = [_renumber(e, ref_port, your_port) for e in r]
    chosen = first_divergence(r, y)
    how = {"passed": "which passes this check", "failed": f"which FAILS this check too ({ref_result.message})",
           "error": f"which met a harness error ({ref_result.message})"}.get(ref_result.outcome, ref_result.outcome)
    head = f"Beside the reference program ({reference_dir.name}, same seed {ref_result.seed}, same fragments), {how}:"
    if chosen is None:
        summary = "on the wire, yours sent the same bytes as the reference program (and was sent the same)"
        return Differential(str(reference_dir), ref_result.outcome, summary, f"{head}\n{render(r, y, None)}\n{summary}")
    summary = summary_line(chosen)
    start = max(0, chosen.offset - CONTEXT)
    return Differential(
        reference=str(reference_dir),
        reference_outcome=ref_result.outcome,
        summary=summary,
        text=f"{head}\n{render(r, y, chosen)}\n{summary}",
        connection=chosen.connection,
        direction=chosen.direction,
        offset=chosen.offset,
        reference_bytes=escape(chosen.reference[start : start + WIDTH], WIDTH),
        yours_bytes=escape(chosen.yours[start : start + WIDTH], WIDTH),
    )


def _renumber(ex: Exchange, ref_port: int, your_port: int) -> Exchange:
    """The reference's exchange with the port the grader listened on for it written as the submission's (a client
    writes it in its Host header): ports are picked at run time and are no difference between the programs."""
    if ref_port == your_port:
        return ex
    old, new = f":{ref_port}".encode(), f":{your_port}".encode()
    return dataclasses.replace(ex, grader=bytearray(bytes(ex.grader).replace(old, new)),
                               program=bytearray(bytes(ex.program).replace(old, new)))


class ReferenceRunner:
    """Runs checks against the reference program, built and started on first use; results cached per
    (lab, check, seed) for the grading run. Call :meth:`close` at the end."""

    def __init__(self, spec: Spec, seed: int, run_check: RunCheck) -> None:
        self.spec = spec
        self.seed = seed
        self._run_check = run_check
        self._cache: dict[tuple[str, str, int], tuple[CheckResult, Transcript]] = {}
        self._tmp: Path | None = None
        self._backend: LocalBackend | None = None
        self._supervisor: Supervisor | None = None
        self._placeholders: dict[str, str] = {}
        self.unavailable = "" if spec.reference is not None else "the spec names no reference program"

    def _start(self) -> None:
        assert self.spec.reference is not None
        self._tmp = Path(tempfile.mkdtemp(prefix="grader-reference-"))
        try:
            self._backend = LocalBackend(self.spec.reference, self._tmp)
            if self.spec.submission.build:
                self._backend.build(self.spec.submission.build)
            self._placeholders = {k: self._backend.expose(v) for k, v in self.spec.files.items()}
            self._placeholders["outfile"] = self._backend.output_file("outfile")[1]
            if "none" not in self.spec.submission.ready:
                self._supervisor = Supervisor(self._backend, self.spec.submission.run, self._placeholders,
                                              self.spec.submission.ready, self.spec.submission.ready_timeout)
                self._supervisor.start()
        except GraderError as exc:
            self.unavailable = f"the reference program {self.spec.reference} could not run: {exc}"

    def run(self, check: Check) -> tuple[CheckResult, Transcript] | None:
        """The reference's result and transcript for ``check`` (None when it cannot run: see unavailable)."""
        key = (self.spec.lab, check.id, self.seed)
        if key in self._cache:
            return self._cache[key]
        if self.unavailable:
            return None
        if self._backend is None:
            self._start()
            if self.unavailable or self._backend is None or self._tmp is None:
                return None
        transcript = Transcript()
        result = self._run_check(self.spec, check, self._backend, self._supervisor, self.seed, self._tmp,
                                 self.spec.submission.run, self._placeholders, transcript=transcript)
        self._cache[key] = (result, transcript)
        return result, transcript

    def close(self) -> None:
        if self._supervisor is not None:
            self._supervisor.stop()
        if self._backend is not None:
            self._backend.close()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
        self._supervisor = self._backend = None
        self._tmp = None
