"""The Celery executor: one task per submission on a Redis broker, graded by ``grader worker`` processes on any
number of machines, results back through Redis exactly as a local run gets them.

What crosses the queue is plain JSON: the job with the submission as a base64 zip, and the JSON result. A spec
shipped with the grader goes by name; any other (a path, a ``GRADER_SPECS_DIR`` spec) goes by content: its
folder, zipped, is stored once in Redis under its SHA-256 and each task names that digest, so a worker on another
machine grades with exactly the spec the batch was started with, and unpacks it once. A task is acknowledged only
once it is done (``acks_late``); a worker process that dies mid-task has its task rejected and requeued
(``reject_on_worker_lost``), and a whole worker lost has its unacknowledged task restored after the broker's
visibility timeout; a task has a hard time limit (``GRADER_TASK_TIME_LIMIT`` seconds, default 600), past which
its student is reported as not graded (a re-run grades them); ten seconds later the worker process is killed
if it has not stopped by itself.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import shutil
import signal
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from billiard.util import set_pdeathsig
from celery import Celery, signals, states

from grader import catalog
from grader.batch.executor import _Orphaned, _watch_parent, sweep_and_exit
from grader.batch.intake import extract_zip
from grader.batch.jobs import IGNORED_NAMES, run_job, scratch_space
from grader.driver.backend import MAX_SUBMISSION_BYTES
from grader.errors import UsageError

TASK = "grader.grade"
SPEC_KEY = "grader:spec:"  # + the SHA-256 of a spec folder's zip: the spec, for the workers
SPEC_TTL_S = 7 * 24 * 3600
_APP: list[Celery] = []  # this process's app (a worker's), whose Redis holds the specs sent by content
DEFAULT_TIME_LIMIT = 600.0
HARD_MARGIN = 10.0  # after the time limit, the worker process is killed if it has not stopped by itself


class _TimeUp(BaseException):
    """The task's time limit: unwinds the grading (stopping what it started), never caught as a check's error."""


def _time_up(signum: int, frame: object) -> None:
    raise _TimeUp


def time_limit() -> float:
    return float(os.environ.get("GRADER_TASK_TIME_LIMIT", DEFAULT_TIME_LIMIT))


def make_app(broker: str) -> Celery:
    if not broker.startswith(("redis://", "rediss://", "unix://")):
        raise UsageError(f"--broker: expected a Redis URL such as redis://127.0.0.1:6379/0, not {broker!r}")
    limit = time_limit()
    hard = limit + HARD_MARGIN
    app = Celery("grader", broker=broker, backend=broker, set_as_current=False)
    app.conf.update(
        task_serializer="json", result_serializer="json", accept_content=["json"],
        task_acks_late=True, task_reject_on_worker_lost=True,
        task_soft_time_limit=limit, task_time_limit=hard,
        worker_prefetch_multiplier=1, worker_hijack_root_logger=False,
        # a lost worker's task comes back after this; longer than the hard limit, so a running task never does
        # and workers look for such tasks every 2 s (kombu's default is every 100 s)
        broker_transport_options={"visibility_timeout": hard + 5, "unacked_restore_interval": 2,
                                  "unacked_restore_throttle": 1},
        result_expires=24 * 3600, broker_connection_retry_on_startup=True,
        task_default_queue="grader",
    )
    app.task(name=TASK, bind=False)(grade_task)
    _APP[:] = [app]
    return app


def _redis(app: Celery) -> Any:
    return app.backend.client  # the result backend's redis.Redis (the broker's server)


def spec_reference(app: Celery, spec: str) -> dict[str, str]:
    """How a task names its spec: a shipped spec by name; any other by content, stored once in Redis."""
    path = catalog.resolve(spec).resolve()
    if path.parent == catalog.specs_dir().resolve():
        return {"spec": path.stem}
    archive = pack(path.parent)
    if len(archive) * 3 // 4 > MAX_SUBMISSION_BYTES:
        raise UsageError(f"the spec's folder {path.parent} holds more than {MAX_SUBMISSION_BYTES >> 20} MB: "
                         "keep a spec in a folder of its own, with only the files it uses")
    digest = hashlib.sha256(archive.encode("ascii")).hexdigest()
    _redis(app).set(SPEC_KEY + digest, archive, ex=SPEC_TTL_S)
    return {"spec": path.name, "spec_digest": digest}


def fetch_spec(name: str, digest: str) -> Path:
    """In a worker: the spec sent by content, unpacked once per digest into this machine's temporary folder."""
    if Path(name).name != name or not name.endswith((".yaml", ".yml")) or not all(
            c in "0123456789abcdef" for c in digest) or len(digest) != 64:
        raise UsageError(f"a task names its spec oddly: {name!r}, {digest!r}")
    cache = Path(tempfile.gettempdir()) / "grader-specs"
    folder = cache / digest
    if not (folder / name).is_file():
        data = _redis(_APP[0]).get(SPEC_KEY + digest) if _APP else None
        if data is None:
            raise UsageError(f"the spec {name} ({digest[:12]}) is no longer in Redis: grade the batch again")
        if hashlib.sha256(data).hexdigest() != digest:
            raise UsageError(f"the spec {name} in Redis does not match its digest {digest[:12]}")
        cache.mkdir(mode=0o700, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f"{digest[:12]}-", dir=cache))
        try:
            zpath = staging / "spec.zip"
            zpath.write_bytes(base64.b64decode(data))
            extract_zip(zpath, staging / "spec", limit=MAX_SUBMISSION_BYTES)
            try:
                (staging / "spec").rename(folder)
            except OSError:
                if not (folder / name).is_file():  # another process of this worker unpacked it first
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return folder / name


def pack(folder: Path) -> str:
    """The submission folder as a base64 zip (symbolic links left out: they would be refused on the way in)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            rel = path.relative_to(folder)
            if path.is_symlink() or any(part in IGNORED_NAMES for part in rel.parts):
                continue
            if path.is_file():
                zf.write(path, rel.as_posix())
            elif path.is_dir():
                zf.writestr(rel.as_posix() + "/", b"")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def grade_task(job: dict[str, Any]) -> dict[str, Any]:
    """Runs in a worker: unpack the submission, grade it, hand back the JSON result."""
    # Celery signals the time limit with SIGUSR1 (SoftTimeLimitExceeded, an Exception a check would catch as
    # its own error): turn it into _TimeUp, which unwinds the whole grading.
    previous = signal.signal(signal.SIGUSR1, _time_up)
    try:
        archive = base64.b64decode(job.pop("archive"))
        with scratch_space() as tmp:
            zpath = Path(tmp) / "submission.zip"
            zpath.write_bytes(archive)
            folder = Path(tmp) / "submission"
            try:
                extract_zip(zpath, folder, limit=MAX_SUBMISSION_BYTES)
            except UsageError as exc:
                return {"student": job["student"], "error": str(exc)}
            digest = job.pop("spec_digest", None)
            if digest is not None:
                try:
                    job["spec"] = str(fetch_spec(str(job["spec"]), str(digest)))
                except UsageError as exc:
                    return {"student": job["student"], "error": str(exc)}
            outcome = run_job({**job, "submission": str(folder)})
            if "result" in outcome:  # the result names the submission as the batch knows it, as in a local run
                outcome["result"]["submission"] = job["submission"]
            return outcome
    except _TimeUp:
        return {"student": job["student"],
                "error": f"grading took longer than the time limit of {time_limit():g}s (GRADER_TASK_TIME_LIMIT)"}
    except _Orphaned:  # the worker that ran us is gone: stop here; the broker hands the task to another
        sweep_and_exit()
    finally:
        signal.signal(signal.SIGUSR1, previous)


def _child_init(**_: Any) -> None:
    """In each worker process: when the worker that forked it dies, stop the grading and what it started.
    Celery asks the kernel to SIGKILL its pool processes then, which would leave the submission's programs
    running: ask for SIGTERM instead, which unwinds the grading (see grader.batch.executor._watch_parent)."""
    _watch_parent(os.getppid())
    set_pdeathsig(signal.SIGTERM)


signals.worker_process_init.connect(_child_init, weak=False)


class CeleryExecutor:
    name = "celery"

    def __init__(self, jobs: int, broker: str | None = None) -> None:
        if not broker:
            raise UsageError("--executor celery needs --broker redis://HOST:PORT/N")
        self.app = make_app(broker)
        self.jobs = jobs  # the workers' --concurrency decides parallelism; kept for the executor signature

    def run(self, jobs: Sequence[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        task = self.app.tasks[TASK]
        pending = {}
        specs: dict[str, dict[str, str]] = {}
        for job in jobs:
            if job["spec"] not in specs:
                specs[job["spec"]] = spec_reference(self.app, job["spec"])
            payload = {**job, **specs[job["spec"]], "archive": pack(Path(job["submission"]))}
            pending[task.apply_async(args=[payload]).id] = job
        limit = time_limit()
        budget = float(os.environ.get("GRADER_BATCH_TIMEOUT", max(600.0, (limit + 10) * len(jobs))))
        deadline = time.monotonic() + budget
        # The results are read from the backend by task id, not through AsyncResult objects: each of those stays
        # subscribed to Redis until it is collected, and one collected once Redis has gone retries for ever.
        backend = self.app.backend
        try:
            while pending and time.monotonic() < deadline:
                for tid in list(pending):
                    meta = backend.get_task_meta(tid)
                    if meta["status"] not in states.READY_STATES:
                        continue
                    job = pending.pop(tid)
                    if meta["status"] == states.SUCCESS:
                        outcome = meta["result"]
                    else:  # the task failed: its hard time limit, a lost worker
                        outcome = {"student": job["student"], "error": f"the grading task failed: {meta['result']!r}"}
                    backend.forget(tid)
                    yield outcome
                threading.Event().wait(0.2)
            for job in pending.values():
                yield {"student": job["student"],
                       "error": f"no worker finished grading it within {budget:.0f}s (are workers running?)"}
        finally:
            if pending:
                self.app.control.revoke(list(pending))


def worker_main(broker: str, concurrency: int, loglevel: str = "INFO") -> None:
    """``grader worker``: a Celery worker grading tasks from ``broker`` until stopped."""
    app = make_app(broker)
    app.worker_main(["worker", f"--concurrency={concurrency}", "--pool=prefork", f"--loglevel={loglevel}",
                     "--without-gossip", "--without-mingle", "--queues=grader",
                     f"--hostname=grader-{os.getpid()}@%h"])
