"""Finding a class's submissions: the subfolders of a folder (what a GitHub Classroom or LMS download
gives), or of a zip of them, which is checked entry by entry before anything of it is written."""

from __future__ import annotations

import re
import shutil
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from grader.batch.jobs import IGNORED_NAMES
from grader.errors import UsageError

MAX_ZIP_BYTES = 2 * 1024**3  # what a class's zip may expand to
MAX_ZIP_ENTRIES = 200_000
_STUDENT = re.compile(r"^[^/\\\x00-\x1f]{1,200}$")


@dataclass(frozen=True)
class Submission:
    student: str
    path: Path


def discover(root: Path) -> list[Submission]:
    """The submissions in ``root``: one per subfolder, named by it. A lone wrapper folder (a zip of one folder
    holding the class) is looked through."""
    if not root.is_dir():
        raise UsageError(f"the submissions {root} are neither a folder nor a zip")
    entries = [p for p in sorted(root.iterdir()) if p.name not in IGNORED_NAMES]
    folders = [p for p in entries if p.is_dir() and not p.is_symlink()]
    if len(entries) == 1 and folders and all(
        q.is_dir() for q in folders[0].iterdir() if q.name not in IGNORED_NAMES
    ) and any(folders[0].iterdir()):
        return discover(folders[0])
    if not folders:
        raise UsageError(f"no submissions in {root}: expected one subfolder per student")
    return [Submission(p.name, p) for p in folders if _STUDENT.match(p.name)]


def extract_zip(archive: Path, target: Path, limit: int = MAX_ZIP_BYTES) -> None:
    """Extract ``archive`` into the empty folder ``target``, refusing (UsageError, nothing written) an entry
    that would land outside it, a symbolic link, or a total size past ``limit``."""
    try:
        zf = zipfile.ZipFile(archive)
    except (OSError, zipfile.BadZipFile) as exc:
        raise UsageError(f"cannot read the zip {archive}: {exc}") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_ZIP_ENTRIES:
            raise UsageError(f"refused the zip {archive}: {len(infos)} entries (at most {MAX_ZIP_ENTRIES})")
        total = 0
        for info in infos:
            name = info.filename
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise UsageError(f"refused the zip {archive}: entry {name!r} is a symbolic link")
            pure = PurePosixPath(name.replace("\\", "/"))
            if pure.is_absolute() or ".." in pure.parts or re.match(r"^[A-Za-z]:", name) or "\0" in name:
                raise UsageError(f"refused the zip {archive}: entry {name!r} would land outside the target folder")
            total += info.file_size
            if total > limit:
                raise UsageError(f"refused the zip {archive}: it expands past {limit} bytes "
                                 f"(at entry {name!r}); is it a class's submissions?")
        target.mkdir(parents=True, exist_ok=True)
        base = target.resolve()
        try:
            written = 0
            for info in infos:
                dest = (base / info.filename).resolve()
                if dest != base and base not in dest.parents:
                    raise UsageError(f"refused the zip {archive}: entry {info.filename!r} would land outside "
                                     "the target folder")
                if info.is_dir():
                    dest.mkdir(parents=True, exist_ok=True)
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, dest.open("wb") as out:
                    while chunk := src.read(1 << 20):
                        written += len(chunk)
                        if written > limit:  # sizes in the zip's directory lied
                            raise UsageError(f"refused the zip {archive}: it expands past {limit} bytes")
                        out.write(chunk)
                if (info.external_attr >> 16) & 0o111:
                    dest.chmod(0o755)
        except (UsageError, OSError, zipfile.BadZipFile, EOFError) as exc:
            for child in list(target.iterdir()):
                shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)
            if isinstance(exc, UsageError):
                raise
            raise UsageError(f"cannot extract the zip {archive}: {exc}") from None
