"""The jail backend: each program of the submission runs as a user of its own, seeing only its own files.

Used inside the sandbox and docker isolations (``grader.isolation``), where the harness already has a network
and PID namespace (or a container) of its own. Every program the submission runs, its build included, is
started as

    prlimit <limits> -- setpriv --reuid U --regid U --clear-groups --no-new-privs -- bwrap <mount view> -- argv

* ``U`` is a user id leased for this grading alone (flock, like ports), so RLIMIT_NPROC counts exactly this
  submission's processes, and no two submissions graded at once can signal or read each other.
* bubblewrap gives it a mount namespace with the system read-only (``/usr``, ``/etc``), its own copy of the
  submission writable at ``/sub`` (its working folder), a folder for files the harness reads back at
  ``/out``, the spec's files it is meant to serve copied read-only at ``/grader``, an empty ``/tmp``, and
  nothing else: not the spec, its hidden checks or expected bodies, the fixtures, other submissions, the
  reports, or the grader.
* The harness's ``/proc`` is mounted with ``hidepid=invisible`` by the isolation, so the submission sees only
  its own processes: not the harness's command line, environment or memory.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from grader.driver import procfs
from grader.driver.backend import LocalBackend
from grader.driver.limits import Limits, prlimit_prefix
from grader.driver.ports import PortPool
from grader.driver.process import OUTPUT_CAP, Proc
from grader.errors import HarnessError

UID_LOW = 61000  # a range no Debian package or login user uses (adduser gives 1000-59999 and 65534)
UID_COUNT = 900
SUB_DIR, OUT_DIR, RO_DIR = "/sub", "/out", "/grader"
_SYSTEM_DIRS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/usr", "/etc")


def monitor_status(code: int) -> int:
    """The program's own status from bwrap's: bwrap, the program's parent, exits 128+N when the program was
    killed by signal N (as a shell does), so that is read back as the signal; a program that itself exits with
    such a status is taken for killed, as a shell would take it."""
    if 128 < code < 128 + 65:
        return -(code - 128)
    return code


class UidLease:
    """A user id for one grading, reserved machine-wide with a lock file until released."""

    def __init__(self, lock_dir: Path | None = None) -> None:
        self.lock_dir = lock_dir or Path("/run/socket-lab-grader-uids")
        self.uid = -1
        self._fd: int | None = None
        self._lock = threading.Lock()
        try:
            self.lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise HarnessError(f"cannot reserve a user id in {self.lock_dir}: {exc}") from exc
        start = os.getpid() % UID_COUNT
        for i in range(UID_COUNT):
            uid = UID_LOW + (start + i) % UID_COUNT
            fd = os.open(self.lock_dir / f"{uid}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            self.uid, self._fd = uid, fd
            return
        raise HarnessError(f"all {UID_COUNT} submission user ids are in use")

    def release(self) -> None:
        with self._lock:
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self._fd)
                self._fd = None


def available(view: bool = True) -> str | None:
    """None when jails can be made here (``view``: with a mount namespace of their own), else what is missing,
    said so a person can fix it."""
    if os.geteuid() != 0:
        return ("the jail runs each submission as a user of its own, which needs root: run the grader as root "
                "(e.g. with sudo, or in a container), or use --backend local")
    tools = (("bwrap", "bubblewrap"),) if view else ()
    for tool, package in (*tools, ("setpriv", "util-linux"), ("prlimit", "util-linux")):
        if shutil.which(tool) is None:
            return f"the {tool} command is not installed: apt-get install {package}"
    return None


def _chown_tree(root: Path, uid: int) -> None:
    os.chown(root, uid, uid, follow_symlinks=False)
    for folder, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            os.chown(os.path.join(folder, name), uid, uid, follow_symlinks=False)


class JailBackend(LocalBackend):
    """A :class:`LocalBackend` whose programs run jailed (see the module's text). Root only."""

    name = "jail"
    view = True  # a mount namespace of its own (bubblewrap); without, only the user and file permissions

    def __init__(self, submission_dir: Path, workdir: Path, limits: Limits | None = None,
                 ports: PortPool | None = None) -> None:
        why = available(self.view)
        if why is not None:
            raise HarnessError(f"cannot jail the submission: {why}")
        # The jail's folders: bubblewrap, already running as the submission's user, must pass through every
        # folder above them to bind them, so they live in a folder of their own in the temporary folder
        # (which anyone may pass through), not in the harness's private work folder. Others may pass through
        # it (0711) but not list it; the submission's folders belong to its user alone.
        self.jail_root = Path(tempfile.mkdtemp(prefix="grader-jail-"))
        os.chmod(self.jail_root, 0o711)
        for folder in self.jail_root.parents:
            if not os.stat(folder).st_mode & 0o001:
                shutil.rmtree(self.jail_root, ignore_errors=True)
                raise HarnessError(f"the jail's folder {self.jail_root} is under {folder}, which other users "
                                   "cannot pass through: set TMPDIR to a folder they can (such as /tmp)")
        try:
            super().__init__(submission_dir, self.jail_root, limits, ports)
        except BaseException:
            shutil.rmtree(self.jail_root, ignore_errors=True)
            raise
        self.uid_lease = UidLease()
        self.uid = self.uid_lease.uid
        self.ro = self.jail_root / "ro"
        self.ro.mkdir()
        self._exposed: dict[Path, str] = {}
        os.chmod(self.ro, 0o755)
        _chown_tree(self.submission_dir, self.uid)
        os.chmod(self.submission_dir, 0o700)
        _chown_tree(self.outputs, self.uid)
        os.chmod(self.outputs, 0o700)

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """A clean environment: nothing of the harness's own leaks in."""
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": SUB_DIR, "TMPDIR": "/tmp", "LANG": "C.UTF-8",
               "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}
        if extra:
            env.update(extra)
        return env

    def expose(self, path: Path) -> str:
        """Copy ``path`` (a file or folder) read-only into the jail's /grader; the path the program sees.

        Its folder comes with it, so that a server escaping its document root (``GET /../secret.txt``) finds
        there what it would find outside a jail, and the security checks judge the same thing under every
        backend; except a folder that holds a spec (``*.yaml``), which is never shown to the submission.
        """
        path = path.resolve()
        if path in self._exposed:
            return self._exposed[path]
        parent = path.parent
        with_parent = parent != Path("/") and not any(parent.glob("*.yaml")) and not any(parent.glob("*.yml"))
        source = parent if with_parent else path
        name = f"{len(self._exposed)}-{source.name}"
        target = self.ro / name
        try:
            if source.is_dir():
                shutil.copytree(source, target, symlinks=False)
            else:
                shutil.copy2(source, target)
        except OSError as exc:
            raise HarnessError(f"cannot give the submission {path}: {exc}") from exc
        base = RO_DIR if self.view else str(self.ro)
        self._exposed[path] = f"{base}/{name}/{path.name}" if with_parent else f"{base}/{name}"
        return self._exposed[path]

    def start(self, argv: Sequence[str], extra_env: Mapping[str, str] | None = None, stdin: bytes | None = None,
              label: str = "submission", stdout_cap: int = OUTPUT_CAP) -> Proc:
        proc = super().start(argv, extra_env, stdin, label, stdout_cap)
        proc.decode_status = monitor_status
        return proc

    def output_file(self, name: str) -> tuple[Path, str]:
        return self.outputs / name, f"{OUT_DIR}/{name}" if self.view else str(self.outputs / name)

    def prefix(self) -> list[str]:
        uid = str(self.uid)
        if not self.view:
            return [*prlimit_prefix(self.limits, uid=self.uid),
                    "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs", "--"]
        view: list[str] = []
        for folder in _SYSTEM_DIRS:
            if os.path.islink(folder):
                view += ["--symlink", os.readlink(folder), folder]
            elif os.path.isdir(folder):
                view += ["--ro-bind", folder, folder]
        return [
            *prlimit_prefix(self.limits, uid=self.uid),
            "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs", "--",
            "bwrap", "--unshare-user", "--uid", uid, "--gid", uid, "--unshare-ipc", "--unshare-uts",
            "--die-with-parent",
            *view,
            "--ro-bind", "/proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
            "--ro-bind", str(self.ro), RO_DIR,
            "--bind", str(self.outputs), OUT_DIR,
            "--bind", str(self.submission_dir), SUB_DIR, "--chdir", SUB_DIR,
            "--",
        ]

    def close(self) -> None:
        try:
            super().close()
            kill_user(self.uid)  # a daemon that left the process tree (setsid, double fork) is still its user's
        finally:
            self.uid_lease.release()
            shutil.rmtree(self.jail_root, ignore_errors=True)


class UserBackend(JailBackend):
    """A jail without a mount namespace, for where user namespaces are not allowed (a container under Docker's
    default seccomp profile): each program runs as a user of its own, and file permissions keep it from
    everything but its own folders (the container holds nothing else it may read)."""

    name = "user"
    view = False

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = super().env(extra)
        env["HOME"] = str(self.submission_dir)
        return env


def user_pids(uid: int, proc: str = "/proc") -> list[int]:
    """The live processes of ``uid`` (zombies, already dead, are left to whoever reaps them)."""
    pids = []
    for name in os.listdir(proc):
        if name.isdigit():
            try:
                if os.stat(os.path.join(proc, name)).st_uid != uid:
                    continue
            except OSError:
                continue
            if procfs.alive(int(name)):
                pids.append(int(name))
    return pids


def kill_user(uid: int, timeout: float = 5.0) -> None:
    """SIGKILL every process of ``uid`` until none is left (one may fork while we look); HarnessError if some
    survive ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        pids = user_pids(uid)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise HarnessError(f"processes of the submission's user {uid} survive SIGKILL: {pids}")
        time.sleep(0.01)
