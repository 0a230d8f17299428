"""The executor seam: how a batch's jobs get graded. Every executor is declared in :data:`EXECUTORS`.

An executor takes plain-data jobs (:meth:`grader.batch.jobs.Job.to_dict`) and yields plain-data outcomes
(:func:`grader.batch.jobs.run_job`'s dicts) as they finish, in any order. :class:`LocalExecutor` grades
them in a pool of local processes; a task-queue executor (Celery) fits the same seam.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, NoReturn, Protocol

from grader.batch.jobs import SCRATCH, run_job
from grader.driver import procfs
from grader.driver.procfs import process_tree
from grader.errors import UsageError


class Executor(Protocol):
    """Grades jobs; yields each outcome as soon as it is ready."""

    name: str

    def run(self, jobs: Sequence[dict[str, Any]]) -> Iterator[dict[str, Any]]: ...


ORPHAN_GRACE_S = 10.0


class _Orphaned(BaseException):
    """Raised in a pool worker whose batch process has gone (killed): unwinds the grading so it stops the
    programs it started, then the worker exits."""


def _watch_parent(parent: int) -> None:
    def on_term(signum: int, frame: object) -> None:
        raise _Orphaned

    signal.signal(signal.SIGTERM, on_term)

    def watch() -> None:
        while os.getppid() == parent:
            threading.Event().wait(0.2)
        os.kill(os.getpid(), signal.SIGTERM)
        # The grading unwinds and exits at once; should the signal land where it cannot (between two jobs, in
        # the pool's own code), leave anyway once the grading has had the time to stop what it started.
        threading.Event().wait(ORPHAN_GRACE_S)
        sweep_and_exit()

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def sweep_and_exit() -> NoReturn:
    """Kill every program this process started that still runs (a grading interrupted at any point, even
    between starting a program and recording it), with their own descendants, remove the job's private
    folders, then leave."""
    me = os.getpid()
    try:
        doomed: set[int] = set()
        for child in process_tree(me):
            if child != me:
                doomed.update(process_tree(child))  # with what it left in its own session
        for pid in doomed - {me}:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        # SIGKILL takes effect a moment later: a killed compiler may still write its temporary files. Remove
        # the folders only once every killed program is gone (or 3 s have passed), and once more after.
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline and any(procfs.alive(pid) for pid in doomed - {me}):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(-1, os.WNOHANG)  # reap our own children, which would stay zombies
            time.sleep(0.01)
        for _ in range(2):
            for folder in SCRATCH:
                shutil.rmtree(folder, ignore_errors=True)
    finally:
        os._exit(70)


def _run_in_worker(job: dict[str, Any]) -> dict[str, Any]:
    try:
        return run_job(job)
    except _Orphaned:
        sweep_and_exit()


class LocalExecutor:
    """A pool of ``jobs`` local processes (spawned, so no thread or lock of the batch leaks into them)."""

    name = "local"

    def __init__(self, jobs: int, broker: str | None = None) -> None:
        if broker:
            raise UsageError("--broker is for --executor celery")
        if jobs < 1:
            raise UsageError(f"--jobs must be at least 1, not {jobs}")
        self.jobs = jobs

    def run(self, jobs: Sequence[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        if not jobs:
            return
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(self.jobs, len(jobs)), mp_context=context,
                                 initializer=_watch_parent, initargs=(os.getpid(),)) as pool:
            pending: dict[Future[dict[str, Any]], dict[str, Any]] = {
                pool.submit(_run_in_worker, job): job for job in jobs
            }
            try:
                while pending:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        job = pending.pop(future)
                        try:
                            yield future.result()
                        except Exception as exc:  # the worker died (e.g. killed): that job is not graded
                            yield {"student": job["student"], "error": f"the grading process failed: {exc}"}
            finally:
                for future in pending:
                    future.cancel()


def _celery(jobs: int, broker: str | None = None) -> Executor:
    from grader.batch.celery_exec import CeleryExecutor  # Celery is imported only when asked for

    return CeleryExecutor(jobs, broker)


EXECUTORS: dict[str, Callable[..., Executor]] = {
    "local": LocalExecutor,
    "celery": _celery,
}


def make_executor(name: str, **options: Any) -> Executor:
    try:
        factory = EXECUTORS[name]
    except KeyError:
        raise UsageError(f"--executor: no executor named {name!r} (known: {', '.join(sorted(EXECUTORS))})") from None
    return factory(**options)
