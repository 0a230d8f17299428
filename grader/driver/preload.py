"""Build and configure the ``shortio`` LD_PRELOAD fault injector.

``shortio.c`` (next to this module) wraps libc's socket I/O entry points so
that, on blocking stream sockets only, every write of two bytes or more
transfers part of its buffer (never the whole), reads return a few bytes at a
time and (optionally) calls fail with ``EINTR``. A correct program is
unaffected; one that ignores ``send()``'s return value or assumes a single
``recv()`` returns a whole message fails deterministically for a given seed.
Non-blocking calls pass through: there a short count promises a drained
receive queue or a full send buffer (epoll(7)), which the kernel alone gives.

Typical use::

    lib = build_preload()
    env = {**os.environ, **ShortIO(seed=42).env(lib)}
    subprocess.run([student_binary], env=env)
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PRELOAD_SOURCE", "PreloadBuildError", "ShortIO", "build_preload", "default_cache_dir"]

#: The C source compiled by :func:`build_preload`.
PRELOAD_SOURCE: Path = Path(__file__).resolve().parent / "shortio.c"

_CFLAGS: tuple[str, ...] = ("-shared", "-fPIC", "-O2", "-Wall", "-Wextra")
_LIBS: tuple[str, ...] = ("-ldl",)
_COMPILE_TIMEOUT_S = 120.0
_CACHE_NAME = "socket-lab-grader"


class PreloadBuildError(Exception):
    """The preload library could not be built (no gcc, compile error, I/O error)."""


def default_cache_dir() -> Path:
    """Return ``$XDG_CACHE_HOME/socket-lab-grader`` or ``~/.cache/socket-lab-grader``."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    # The XDG spec says relative values must be ignored.
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / _CACHE_NAME


def _library_name(source: bytes) -> str:
    digest = hashlib.sha256()
    digest.update(source)
    digest.update(b"\0")
    digest.update(" ".join((*_CFLAGS, *_LIBS)).encode())
    digest.update(b"\0")
    digest.update(platform.machine().encode())
    return f"libshortio-{digest.hexdigest()[:20]}.so"


def build_preload(cache_dir: Path | None = None) -> Path:
    """Compile ``shortio.c`` into *cache_dir* (once) and return the ``.so`` path.

    The file name contains a hash of the source and flags, so an edited source
    is recompiled while an unchanged one is reused.  Compilation goes to a
    temporary file in the same directory that is then atomically renamed into
    place, so concurrent graders never observe a partially written library.

    Raises:
        PreloadBuildError: gcc is missing, the compile failed, or the source or
            cache directory could not be accessed.
    """
    directory = (cache_dir if cache_dir is not None else default_cache_dir()).resolve()
    try:
        source = PRELOAD_SOURCE.read_bytes()
    except OSError as exc:
        raise PreloadBuildError(f"cannot read preload source {PRELOAD_SOURCE}: {exc}") from exc

    target = directory / _library_name(source)
    if target.is_file():
        return target

    gcc = shutil.which("gcc")
    if gcc is None:
        raise PreloadBuildError("cannot build the shortio preload library: gcc not found on PATH")

    try:
        directory.mkdir(parents=True, exist_ok=True)
        # Compile the exact bytes that were hashed (the source may be edited
        # concurrently), from a private scratch directory inside the cache.
        with tempfile.TemporaryDirectory(prefix=".shortio-build-", dir=directory) as scratch:
            src = Path(scratch) / "shortio.c"
            src.write_bytes(source)
            out = Path(scratch) / "libshortio.so"
            cmd = [gcc, *_CFLAGS, "-o", str(out), str(src), *_LIBS]
            try:
                proc = subprocess.run(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    text=True,
                    errors="replace",
                    timeout=_COMPILE_TIMEOUT_S,
                    check=False,
                )
            except subprocess.TimeoutExpired as exc:
                raise PreloadBuildError(
                    f"gcc timed out after {_COMPILE_TIMEOUT_S:g}s building {PRELOAD_SOURCE}"
                ) from exc
            if proc.returncode != 0 or not out.is_file():
                raise PreloadBuildError(
                    f"gcc failed (exit {proc.returncode}) building {PRELOAD_SOURCE}:\n{proc.stderr.strip()}"
                )
            out.chmod(0o755)
            os.replace(out, target)
    except OSError as exc:
        if target.is_file():  # e.g. the library landed but scratch cleanup failed
            return target
        raise PreloadBuildError(f"cannot build preload library in {directory}: {exc}") from exc
    return target


@dataclass(frozen=True)
class ShortIO:
    """Fault-injection settings for one run of a student program.

    Attributes:
        seed: PRNG seed; the same seed yields the same chunk-size sequence
            for a single-threaded program.
        max_chunk: Upper bound on bytes moved per capped call (a call of
            ``len >= 2`` bytes moves a count drawn uniformly from
            ``1..min(max_chunk, len - 1)``).
        eintr: Also fail about 1 in 4 blocking calls with ``EINTR`` (never two
            in a row in the same thread).
        writes: Cap send/write/sendto/sendmsg/writev.
        reads: Cap recv/read/recvfrom/recvmsg/readv (and fortify variants).
    """

    seed: int
    max_chunk: int = 7
    eintr: bool = False
    writes: bool = True
    reads: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.seed < 2**64:
            raise ValueError(f"seed must be in [0, 2**64), got {self.seed}")
        if not 1 <= self.max_chunk < 2**63:
            raise ValueError(f"max_chunk must be >= 1, got {self.max_chunk}")

    def env(self, lib: Path) -> dict[str, str]:
        """Return the environment variables to add to a child's environment.

        ``LD_PRELOAD`` is set to *lib* alone; merge it yourself if the child
        needs other preloads.

        Raises:
            ValueError: *lib* contains a space or colon, which ``LD_PRELOAD``
                would treat as a list separator.
        """
        path = str(Path(lib).resolve())
        if " " in path or ":" in path:
            raise ValueError(f"LD_PRELOAD path must not contain spaces or colons: {path!r}")
        return {
            "LD_PRELOAD": path,
            "GRADER_SHORTIO_SEED": str(self.seed),
            "GRADER_SHORTIO_MAX": str(self.max_chunk),
            "GRADER_SHORTIO_EINTR": "1" if self.eintr else "0",
            "GRADER_SHORTIO_WRITES": "1" if self.writes else "0",
            "GRADER_SHORTIO_READS": "1" if self.reads else "0",
        }
