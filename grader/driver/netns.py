"""Network isolation for a client submission: run it where no packet can leave the machine.

A check such as "unknown host" makes the client resolve a name; a resolver would ask the machine's DNS
server, off the machine. Run in a fresh network namespace (``unshare --net``: only a loopback interface,
down, no routes) the lookup fails at once with "network unreachable" and nothing is sent. Inside a container
started with ``--network none`` the harness is already isolated, and the program runs as it is.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading

from grader.errors import HarnessError

_lock = threading.Lock()
_prefix: list[str] | None = None
_failure: str | None = None


def already_isolated() -> bool:
    """True when the only network interface of this network namespace is loopback (a container started with
    --network none, or the sandbox's namespace). Asked of the kernel (netlink), not of /sys, which shows the
    namespace of whoever mounted it."""
    try:
        names = [name for _, name in socket.if_nameindex()]
    except OSError:
        return False
    return all(name == "lo" for name in names)


def _probe() -> tuple[list[str] | None, str]:
    """The command prefix that runs a program in a new network namespace, or None and why not."""
    if already_isolated():
        return [], ""
    unshare = shutil.which("unshare")
    if unshare is None:
        return None, "the unshare command (util-linux) is not installed"
    # As root a plain network namespace; otherwise inside a user namespace where we are root.
    candidates = [[unshare, "--net"]] if os.geteuid() == 0 else []
    candidates.append([unshare, "--net", "--map-root-user"])
    why = ""
    for prefix in candidates:
        try:
            done = subprocess.run([*prefix, "--", "true"], capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            why = str(exc)
            continue
        if done.returncode == 0:
            return [*prefix, "--"], ""
        why = done.stderr.strip() or f"exit status {done.returncode}"
    return None, (
        f"cannot create a network namespace ({why}): run the grader as root, enable unprivileged user "
        "namespaces, or run it in a container started with --network none"
    )


def isolated_prefix() -> list[str]:
    """The argv prefix that isolates a program's network (cached); HarnessError when this machine cannot."""
    global _prefix, _failure
    with _lock:
        if _prefix is None and _failure is None:
            _prefix, why = _probe()
            if _prefix is None:
                _failure = why
    if _prefix is None:
        raise HarnessError(f"cannot isolate the client's network: {_failure}")
    return list(_prefix)
