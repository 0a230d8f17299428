"""Where a batch writes, and how: every file is written whole to a temporary name and renamed into place
(os.replace), so a grader killed at any moment leaves each file either absent or complete. A student's
``result.json`` is written last: its presence says the student is graded."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from grader.report.jsonout import to_json
from grader.report.junit import to_junit
from grader.report.model import RunResult
from grader.report.platforms import to_gradescope, to_prairielearn

STUDENTS = "students"
RESULT = "result.json"
_TMP_PREFIX = ".tmp-"


def atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Store:
    """The output folder of a batch."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def folder(self, student: str) -> Path:
        return self.root / STUDENTS / student

    def clean_leftovers(self) -> None:
        """Remove temporary files a killed batch left half-written."""
        base = self.root / STUDENTS
        if base.is_dir():
            for tmp in base.rglob(f"{_TMP_PREFIX}*"):
                tmp.unlink(missing_ok=True)

    def load(self, student: str) -> RunResult | None:
        """The student's stored result, or None when absent or unreadable (then they are graded again)."""
        path = self.folder(student) / RESULT
        try:
            return RunResult.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save(self, student: str, run: RunResult) -> None:
        folder = self.folder(student)
        atomic_write(folder / "junit.xml", to_junit(run))
        atomic_write(folder / "gradescope" / "results.json", json.dumps(to_gradescope(run), indent=2) + "\n")
        atomic_write(folder / "prairielearn" / "results.json", json.dumps(to_prairielearn(run), indent=2) + "\n")
        atomic_write(folder / RESULT, to_json(run))
