"""``grader serve``: the reference HTTP server (with a sample document root), the TCP and UDP echo servers and the
RFC 868 time server, started together so students can try their clients against known-good peers.

Each service is the lab's reference program (``labs/reference/<lab>/``), bound to ``--host`` (127.0.0.1 by default;
``0.0.0.0`` inside a container published with ``docker run -p``). One line per service says where it listens,
printed once the program's own socket is listening (seen in /proc). Ctrl-C, SIGTERM or SIGHUP stops every
service and exits 0; a service that dies on its own stops the others and exits 1.

Standard library only (with :mod:`grader.driver`), so ``python3 labs/reference/serve.py`` works with a bare
interpreter.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO

from grader import catalog
from grader.driver.services import POLL_S, Running, ServiceError, ServiceSpec, start, stop_all, wait_listening
from grader.errors import UsageError

READY_TIMEOUT_S = 10.0  # a service may take this long to listen
#: (name, lab whose reference program runs it, its program, the option that sets its port, protocols)
SERVICES: tuple[tuple[str, str, str, str, tuple[str, ...]], ...] = (
    ("http-server", "http-server", "server", "http_port", ("tcp",)),
    ("tcp-echo-server", "tcp-echo-server", "echo_server", "echo_port", ("tcp",)),
    ("udp-echo-server", "udp-echo-server", "udp_echo", "udp_port", ("udp",)),
    ("time-server", "time-server", "time_server", "time_port", ("tcp", "udp")),
)
PORT_OPTIONS = {"http_port": "--http-port", "echo_port": "--echo-port", "udp_port": "--udp-port",
                "time_port": "--time-port"}
AUTO_RETRIES = 5  # a free port the time server got for TCP may be taken for UDP: try again this often


@dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"
    docroot: Path | None = None  # None: the sample document root shipped with the references
    ports: tuple[tuple[str, int], ...] = ()  # service name -> port; 0 or absent: a free port


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; 0.0.0.0 or :: in a container)")
    parser.add_argument("--docroot", type=Path, help="the HTTP server's document root (default: a sample one)")
    parser.add_argument("--port-base", type=int, metavar="N",
                        help="ports N (http), N+1 (tcp echo), N+2 (udp echo), N+3 (time, TCP and UDP)")
    for option in PORT_OPTIONS.values():
        parser.add_argument(option, type=int, metavar="N", help="this service's port (0: a free one)")


def options_from(args: argparse.Namespace) -> ServeOptions:
    """Check the command line's values; every mistake is a UsageError naming the option."""
    host = "0.0.0.0" if args.host == "" else args.host
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise UsageError(f"--host {args.host!r}: expected an IP address (127.0.0.1, ::1, 0.0.0.0, ::)") from None
    if args.docroot is not None and not args.docroot.is_dir():
        raise UsageError(f"--docroot {args.docroot}: not a folder")
    base = args.port_base
    if base is not None and not 1 <= base <= 65535 - 3:
        raise UsageError(f"--port-base {base}: expected 1-65532 (it uses N to N+3)")
    ports = []
    for i, (name, _lab, _program, option, _protocols) in enumerate(SERVICES):
        port = getattr(args, option)
        if port is None:
            port = base + i if base is not None else 0
        if not 0 <= port <= 65535:
            raise UsageError(f"{PORT_OPTIONS[option]} {port}: expected a port number 0-65535 (0: a free one)")
        ports.append((name, port))
    return ServeOptions(host, args.docroot, tuple(ports))


def service_specs(docroot: Path) -> list[ServiceSpec]:
    reference = catalog.LABS_DIR / "reference"
    specs = []
    for name, lab, program, _option, protocols in SERVICES:
        path = reference / lab / program
        if not path.is_file():
            raise UsageError(f"{name}: the reference program {path} is missing (reinstall the grader)")
        command = (sys.executable, str(path), "{port}", *([str(docroot)] if name == "http-server" else []))
        specs.append(ServiceSpec(name, command, protocols))
    return specs


def describe(name: str, host: str, port: int, protocols: Sequence[str]) -> str:
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    line = f"{name:<16} {shown:<22} {'+'.join(protocols)}"
    if name == "http-server":
        local = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(host, f"[{host}]" if ":" in host else host)
        line += f"  http://{local}:{port}/"
    return line


def serve(options: ServeOptions, out: IO[str] = sys.stdout, err: IO[str] = sys.stderr) -> int:
    """Run every service until a stop signal (exit 0) or until one dies (exit 1)."""
    docroot = (options.docroot or catalog.LABS_DIR / "reference" / "sample-docroot").resolve()
    specs = service_specs(docroot)
    wanted = dict(options.ports)
    env = dict(os.environ, LAB_BIND=options.host)
    # The handler only sets a flag (no lock: it may run while the main thread holds one); the loops below look
    # at it every POLL_S, and a sleep interrupted by the signal resumes (PEP 475).
    stop: list[int] = []

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.append(signum)

    def stopped() -> bool:
        return bool(stop)

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    services: list[Running] = []
    try:
        for spec in specs:
            port = wanted.get(spec.name, 0)
            for attempt in range(AUTO_RETRIES if port == 0 else 1):
                running = start(spec, port, env, err)
                services.append(running)
                try:
                    if not wait_listening(running, port, READY_TIMEOUT_S, stopped):
                        return 0  # stopped while starting
                    break
                except ServiceError:
                    if port != 0 or attempt == AUTO_RETRIES - 1:
                        raise
                    stop_all([services.pop()], sink=err)  # its free TCP port was taken for UDP: again
            out.write(describe(spec.name, options.host, services[-1].port, spec.protocols) + "\n")
            out.flush()
        err.write("serve: all services running; Ctrl-C or SIGTERM stops them\n")
        err.flush()
        while not stopped():
            time.sleep(POLL_S)
            for running in services:
                how = running.exited()
                if how is not None:
                    raise ServiceError(f"{running.spec.name} {how}; stopping the others")
        return 0
    except ServiceError as exc:
        err.write(f"serve: {exc}\n")
        return 1
    finally:
        stop_all(services, sink=err)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """``python3 labs/reference/serve.py``: the same as ``grader serve``."""
    parser = argparse.ArgumentParser(prog="serve.py", description=__doc__.split("\n\n")[0] if __doc__ else None)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return serve(options_from(args))
    except UsageError as exc:
        print(f"serve: {exc}", file=sys.stderr)
        return 2
