#!/usr/bin/env python3
"""Start all the reference servers at once, for trying out your clients.

Usage:
  python3 reference/serve.py [--host 127.0.0.1] [--docroot DIR]
                             [--http-port N] [--echo-port N]
                             [--udp-port N] [--time-port N]

Starts, as child processes,
  http-server      reference/http-server/server PORT DOCROOT
  tcp-echo-server  reference/tcp-echo-server/echo_server PORT
  udp-echo-server  reference/udp-echo-server/udp_echo PORT
  time-server      reference/time-server/time_server PORT   (TCP and UDP)
each bound to --host (passed to them in the LAB_BIND environment variable).
A port left at 0 (the default) is replaced by a free one, found by binding
port 0 and asking the kernel which port it chose.

As soon as a service answers (a TCP connect succeeds; a UDP datagram is
echoed) one line `name  host:port` is printed.  Then it waits.  Ctrl-C
(SIGINT), SIGTERM or SIGHUP stops every child and exits 0; if a child dies on
its own, the others are stopped and the exit status is 1.
"""

import argparse
import os
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
READY_TIMEOUT = 10.0            # seconds a service may take to start listening

# (name, program, option holding its port, protocols it listens on)
SERVICES = [
    ("http-server", "http-server/server", "http_port", ("tcp",)),
    ("tcp-echo-server", "tcp-echo-server/echo_server", "echo_port", ("tcp",)),
    ("udp-echo-server", "udp-echo-server/udp_echo", "udp_port", ("udp",)),
    ("time-server", "time-server/time_server", "time_port", ("tcp", "udp")),
]
SOCK_TYPES = {"tcp": socket.SOCK_STREAM, "udp": socket.SOCK_DGRAM}

stop_requested = False


def request_stop(signum, frame):
    global stop_requested
    stop_requested = True


class Failure(Exception):
    pass


def family_of(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def check_port(name, host, wanted, protocols):
    """Return `wanted` if it is free on host for every protocol in `protocols`
    (raise Failure if not), or, if wanted is 0, a port number that is free."""
    for _ in range(100):
        port, socks = wanted, []
        try:
            for proto in protocols:     # the time server needs TCP *and* UDP
                s = socket.socket(family_of(host), SOCK_TYPES[proto])
                socks.append(s)
                if proto == "tcp":      # as the servers do, so TIME_WAIT is no obstacle
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((host, port))    # port 0: the kernel picks a free one...
                port = s.getsockname()[1]   # ...and the next protocol binds the same
            return port
        except OSError as e:
            if wanted or len(socks) <= 1:
                raise Failure(f"{name}: cannot bind port {wanted} on {host!r}: {e.strerror}") from None
            # The kernel's pick was free for TCP but is taken for UDP: try again.
        finally:
            for s in socks:             # released: the child binds it a moment later
                s.close()
    raise Failure(f"{name}: no free port on {host!r}")


def is_ready(host, port, proto):
    """One readiness probe: True if the service answers on host:port."""
    try:
        if proto == "tcp":
            with socket.create_connection((host, port), timeout=1.0):
                return True
        with socket.socket(family_of(host), socket.SOCK_DGRAM) as s:
            s.settimeout(0.2)
            s.connect((host, port))     # so ICMP "unreachable" is reported to us
            s.send(b"")                 # an empty datagram: both UDP servers reply
            s.recv(65535)
            return True
    except OSError:                     # refused, timed out: not (yet) listening
        return False


def wait_ready(name, proc, host, port, protocols):
    deadline = time.monotonic() + READY_TIMEOUT
    pending = list(protocols)
    while pending:
        if stop_requested:
            return
        if proc.poll() is not None:
            raise Failure(f"{name} exited with status {proc.returncode} while starting")
        if time.monotonic() > deadline:
            raise Failure(f"{name} not answering on port {port} after {READY_TIMEOUT:.0f} s")
        if is_ready(host, port, pending[0]):
            pending.pop(0)
        else:
            time.sleep(0.05)            # poll again shortly


def stop_all(children):
    """Terminate every child and reap it, so nothing is left running."""
    for _, proc in children:
        if proc.poll() is None:
            proc.terminate()            # SIGTERM: the servers exit quietly
    for name, proc in children:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            print(f"serve: {name} ignored SIGTERM, killing it", file=sys.stderr)
            proc.kill()
            proc.wait()


def run(args, children):
    docroot = os.path.abspath(args.docroot)
    if not os.path.isdir(docroot):
        raise Failure(f"{args.docroot}: not a directory")
    # Where to connect for the probes: "all interfaces" is reachable via loopback.
    probe_host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(args.host, args.host)
    shown_host = f"[{args.host}]" if ":" in args.host else (args.host or "0.0.0.0")
    env = dict(os.environ, LAB_BIND=args.host)

    for name, program, option, protocols in SERVICES:
        port = check_port(name, args.host, getattr(args, option), protocols)
        cmd = [sys.executable, os.path.join(HERE, program), str(port)]
        if name == "http-server":
            cmd.append(docroot)
        # A new session: a Ctrl-C in the terminal reaches only us, and we stop
        # the children in an orderly way (stop_all) instead of all racing.
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, start_new_session=True)
        children.append((name, proc))
        wait_ready(name, proc, probe_host, port, protocols)
        if stop_requested:
            return
        print(f"{name:<17}{shown_host}:{port}", flush=True)

    print("serve: all services running; Ctrl-C to stop", file=sys.stderr, flush=True)
    while not stop_requested:
        for name, proc in children:
            if proc.poll() is not None:
                raise Failure(f"{name} exited unexpectedly with status {proc.returncode}")
        # The signal handler only sets a flag (sleep is resumed after it, PEP
        # 475), so we notice Ctrl-C within 0.1 s.
        time.sleep(0.1)


def port_number(text):
    port = int(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a port number (0-65535)")
    return port


def main():
    parser = argparse.ArgumentParser(description="Run all reference lab servers.")
    parser.add_argument("--host", default="127.0.0.1",
                        help='address to bind (default 127.0.0.1; "" = all interfaces)')
    parser.add_argument("--docroot", default=os.path.join(HERE, "sample-docroot"))
    for option in ("--http-port", "--echo-port", "--udp-port", "--time-port"):
        parser.add_argument(option, type=port_number, default=0, metavar="N",
                            help="port (default 0: pick a free one)")
    args = parser.parse_args()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, request_stop)

    children = []
    status = 0
    try:
        run(args, children)
    except Failure as e:
        print(f"serve: {e}", file=sys.stderr)
        status = 1
    finally:
        stop_all(children)
    return status


if __name__ == "__main__":
    sys.exit(main())
