"""The unit of work of a batch, as plain data: what crosses an executor's seam (a process pool today, a task
queue later) is a :class:`Job` (spec by name or path, submission path) going out and a JSON-ready dict
coming back, which :func:`outcome_result` reads back into the same :class:`RunResult`."""

from __future__ import annotations

import functools
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grader import catalog, isolation
from grader.driver.limits import Limits
from grader.engine.runner import Options, check_seed, select_checks
from grader.report.jsonout import to_dict
from grader.report.model import CheckResult, RunResult
from grader.spec.loader import load_spec
from grader.spec.model import Spec

# What a submission folder may hold that is not the student's work.
IGNORED_NAMES = frozenset({".git", "__MACOSX", ".DS_Store", "__pycache__", ".gitignore"})
_SNIFF = 8192


@dataclass(frozen=True)
class Job:
    """Grade one student's submission against a spec."""

    student: str
    spec: str  # a spec file's path, or the name of a shipped spec
    submission: str  # the submission's folder
    student_mode: bool = False  # only the visible checks
    seed: int | None = None
    backend: str = "local"  # where the submission runs (grader.isolation)
    limits: tuple[str, ...] = ()  # NAME=VALUE resource limits over the spec's

    def to_dict(self) -> dict[str, Any]:
        return {"student": self.student, "spec": self.spec, "submission": self.submission,
                "student_mode": self.student_mode, "seed": self.seed, "backend": self.backend,
                "limits": list(self.limits)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Job:
        seed = d.get("seed")
        return cls(str(d["student"]), str(d["spec"]), str(d["submission"]), bool(d.get("student_mode", False)),
                   None if seed is None else int(seed), str(d.get("backend", "local")),
                   tuple(str(x) for x in d.get("limits", ())))


SCRATCH: list[str] = []  # the private folders of the job running in this process (removed if it is killed)


@contextmanager
def scratch_space() -> Iterator[str]:
    """A private folder for everything a job writes to temporary files, the grading's own and those of the
    programs it runs (a compiler killed mid-build leaves its temporary files): TMPDIR and Python's temporary
    folder point into it while the job runs, and it is removed afterwards, or by
    :func:`grader.batch.executor.sweep_and_exit` when the job is cut short."""
    # Named and recorded before it exists: a job cut short between the two still has its folder swept.
    base = os.path.join(tempfile.gettempdir(), f"grader-job-{secrets.token_hex(8)}")
    SCRATCH.append(base)
    os.mkdir(base, 0o700)
    saved_env, saved_tempdir = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"] = tempfile.tempdir = base
    try:
        yield base
    finally:
        tempfile.tempdir = saved_tempdir
        if saved_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved_env
        shutil.rmtree(base, ignore_errors=True)
        SCRATCH.remove(base)


@functools.lru_cache(maxsize=16)
def _spec(ref: str) -> Spec:
    return load_spec(catalog.resolve(ref))


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Grade one job (a :meth:`Job.to_dict`); returns ``{"student", "result"}`` with the JSON report, or
    ``{"student", "error"}`` when the harness itself failed (the student is then graded again next run)."""
    j = Job.from_dict(job)
    try:
        with scratch_space():
            spec = _spec(j.spec)
        limits = Limits.parse(list(j.limits), spec.submission.limits) if j.limits else None
        run = grade_submission(spec, Path(j.submission), Options(student=j.student_mode, seed=j.seed, limits=limits),
                               j.backend)
    except Exception as exc:  # a fault of ours or the machine's: reported, and the batch goes on
        return {"student": j.student, "error": f"{type(exc).__name__}: {exc}"}
    return {"student": j.student, "result": to_dict(run)}


def outcome_result(outcome: dict[str, Any]) -> RunResult:
    return RunResult.from_dict(outcome["result"])


def grade_submission(spec: Spec, submission: Path, options: Options, backend: str = "local") -> RunResult:
    """Grade a submission, first saying so plainly when the folder holds nothing to grade: it is empty,
    or holds only binary files (a compiled program handed in instead of its source)."""
    problem = unfit(submission)
    if problem is not None:
        status, message = problem
        return not_graded(spec, submission, options, status, message)
    return isolation.get(backend).grade(spec, submission, options)


def student_files(folder: Path) -> list[Path]:
    found: list[Path] = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if any(part in IGNORED_NAMES for part in rel.parts):
            continue
        if path.is_file() or path.is_symlink():
            found.append(path)
    return found


def _is_binary(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            head = f.read(_SNIFF)
    except OSError:
        return False
    return head.startswith(b"\x7fELF") or b"\0" in head


def unfit(folder: Path) -> tuple[str, str] | None:
    """``(status, message)`` when ``folder`` holds nothing gradable, else None."""
    if not folder.is_dir():
        return "empty", f"the submission {folder.name} is not a folder"
    files = student_files(folder)
    if not files:
        return "empty", "the submission folder is empty: nothing was handed in"
    if all(not p.is_symlink() and _is_binary(p) for p in files):
        names = ", ".join(str(p.relative_to(folder)) for p in files[:5])
        kind = "a compiled program (ELF)" if any(_is_elf(p) for p in files) else "binary data"
        return "binary-only", (f"the submission holds only binary files ({names}: {kind}) and no source code: "
                               "hand in the source files (.c and a Makefile, or the .py program), not a build")
    return None


def _is_elf(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def not_graded(spec: Spec, submission: Path, options: Options, status: str, message: str) -> RunResult:
    """A result for a submission that could not be graded at all: every check failed with ``message``."""
    seed = options.seed if options.seed is not None else 0
    checks = tuple(
        CheckResult(c.id, c.title, c.category, c.points, c.visibility, "failed", message, c.hint, "", 0.0,
                    check_seed(seed, c.id))
        for c in select_checks(spec, options)
    )
    return RunResult(spec.lab, spec.title, str(submission), checks, 0.0, seed, status, message)
