"""Resource limits for a submission's processes: what each limit means, its default, and how it is applied.

The defaults are the one place they are written: the spec schema (``submission.limits``), the command line
(``--limit NAME=VALUE``) and the README table are made from :data:`LIMITS`. They are chosen so that a class of
100 graded two at a time on two cores lives with them: a correct lab program uses a fraction of each.

Limits are applied with ``prlimit`` (util-linux) in front of the program, so no code runs in the forked child
before exec (``preexec_fn`` is unsafe in a threaded harness). ``processes`` is RLIMIT_NPROC, which Linux counts
per user and does not enforce for root: the local backend adds it to what the user already runs; the sandbox
and docker backends run each submission as a user of its own, where it is exact.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from dataclasses import dataclass, field
from typing import Any

from grader.errors import HarnessError, UsageError


def _limit(default: float, unit: str, doc: str, minimum: float = 1) -> Any:
    return field(default=default, metadata={"unit": unit, "doc": doc, "minimum": minimum})


@dataclass(frozen=True)
class Limits:
    """Limits for every process of one submission (its build included) and the whole grading's deadline."""

    cpu_seconds: int = _limit(30, "s", "CPU time of each process (RLIMIT_CPU); a busy loop is killed by SIGXCPU")
    memory_mb: int = _limit(1024, "MiB", "writable memory of each process (RLIMIT_DATA: heap, stacks, mappings)",
                            minimum=16)
    processes: int = _limit(128, "", "processes and threads at once (RLIMIT_NPROC): stops a fork bomb")
    file_size_mb: int = _limit(64, "MiB", "size of any one file written (RLIMIT_FSIZE): SIGXFSZ past it")
    open_files: int = _limit(1024, "", "open file descriptors of each process (RLIMIT_NOFILE)", minimum=16)
    disk_mb: int = _limit(1024, "MiB", "space for the grading's files, the submission's copy and build included "
                                      "(sandbox and docker: the size of their private /tmp)", minimum=64)
    wall_seconds: float = _limit(900, "s", "wall-clock time of the whole grading, build included", minimum=5)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < f.metadata["minimum"]:
                raise UsageError(f"limit {f.name}: expected a number of at least {f.metadata['minimum']:g}, "
                                 f"got {value!r}")

    def replace(self, **changes: Any) -> Limits:
        return dataclasses.replace(self, **changes)

    @classmethod
    def parse(cls, items: list[str], base: Limits | None = None) -> Limits:
        """``NAME=VALUE`` pairs (from the command line) over ``base``; UsageError for a bad one."""
        names = {f.name: f.type for f in dataclasses.fields(cls)}
        changes: dict[str, Any] = {}
        for item in items:
            name, sep, value = item.partition("=")
            name = name.strip().replace("-", "_")
            if not sep or name not in names:
                raise UsageError(f"--limit {item!r}: expected NAME=VALUE with NAME one of {', '.join(names)}")
            try:
                changes[name] = float(value) if name == "wall_seconds" else int(value)
            except ValueError:
                raise UsageError(f"--limit {item!r}: {value!r} is not a number") from None
        return (base or cls()).replace(**changes)

    def prlimit_args(self, nproc_base: int = 0) -> list[str]:
        """The ``prlimit`` options that apply these limits to the program it runs (soft = hard)."""
        mib = 1024 * 1024
        return [
            f"--cpu={self.cpu_seconds}",
            f"--data={self.memory_mb * mib}",
            f"--nproc={nproc_base + self.processes}",
            f"--fsize={self.file_size_mb * mib}",
            f"--nofile={self.open_files}",
        ]


def schema() -> dict[str, Any]:
    """The JSON Schema of ``submission.limits`` (and the docs' table), from the dataclass."""
    props: dict[str, Any] = {}
    for f in dataclasses.fields(Limits):
        kind = "number" if f.name == "wall_seconds" else "integer"
        unit = f" ({f.metadata['unit']})" if f.metadata["unit"] else ""
        props[f.name] = {"type": kind, "minimum": f.metadata["minimum"],
                         "description": f"{f.metadata['doc']}{unit}; default {f.default}"}
    return {"type": "object", "additionalProperties": False, "properties": props}


def user_tasks(uid: int, proc: str = "/proc") -> int:
    """How many processes and threads ``uid`` runs now (what RLIMIT_NPROC counts)."""
    count = 0
    try:
        names = os.listdir(proc)
    except OSError:
        return 0
    for name in names:
        if not name.isdigit():
            continue
        try:
            if os.stat(os.path.join(proc, name)).st_uid == uid:
                count += len(os.listdir(os.path.join(proc, name, "task")))
        except OSError:
            continue
    return count


def prlimit_prefix(limits: Limits, uid: int | None = None) -> list[str]:
    """``prlimit --cpu=... --`` for a program about to run as ``uid`` (default: this process's user).

    RLIMIT_NPROC counts all of a user's tasks: for a user other than a dedicated one, the limit is what they
    already run plus ``limits.processes``.
    """
    tool = shutil.which("prlimit")
    if tool is None:
        raise HarnessError("the prlimit command (util-linux) is not installed: it applies the resource limits")
    base = user_tasks(os.geteuid()) if uid is None else 0
    return [tool, *limits.prlimit_args(base), "--"]
