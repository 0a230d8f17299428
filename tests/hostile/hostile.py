#!/usr/bin/env python3
"""A hostile "TCP echo server" submission: it attacks, then serves echo correctly.

Usage: hostile.py ATTACK PORT   (tests/test_hostile.py writes an ./echo_server that runs it)

An attack that works is reported by not starting at all: the program prints "ATTACK SUCCEEDED: ..." and exits
1, so the grading ends in "did not start" with that line in the output. An attack that is stopped leaves a
correct echo server, which passes. Resource attacks (fork bomb, memory, disk, output, daemons) run beside the
server; what is judged of them is that the grading ends in time and leaves nothing behind. Every attack is
bounded in time and count, so a run where nothing stops it still ends by itself.

``targets.json`` beside this file (written by the test) names what to reach: files to read or overwrite, a
TCP port on the host's loopback, and a marker for the processes it leaves.
"""

import json
import os
import socket
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
LIFETIME_S = 60  # no attack process lives longer than this, whatever stops it or not


def succeeded(what):
    print(f"ATTACK SUCCEEDED: {what}", flush=True)
    sys.exit(1)


def targets():
    with open(os.path.join(HERE, "targets.json")) as fh:
        return json.load(fh)


def spy():
    """Read the spec, a fixture, another submission, the grader's own code."""
    for path in targets()["read"]:
        try:
            with open(path, "rb") as fh:
                fh.read(64)
        except OSError:
            continue
        succeeded(f"read {path}")


def tamper():
    """Overwrite the report, the spec, the grader's files (canaries the test made)."""
    for path in targets()["write"]:
        try:
            with open(path, "wb") as fh:
                fh.write(b"forged by the submission\n")
        except OSError:
            continue
        succeeded(f"wrote {path}")


def network():
    """Find an interface other than loopback; reach a service on the host's loopback."""
    others = [name for _, name in socket.if_nameindex() if name != "lo"]
    if others:
        succeeded(f"sees network interfaces {others}")
    try:
        with socket.create_connection(("127.0.0.1", targets()["host_port"]), timeout=2):
            succeeded("connected to a service on the host's loopback")
    except OSError:
        pass


def squat():
    """Bind every port it can of the range the grader leases from, and keep them."""
    held = []
    for port in range(20000, 32768):
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            s.listen(1)
            held.append(s)
        except OSError:
            s.close()
        if len(held) >= 800:  # stays under the open-files limit, leaving room to serve
            break
    threading.Thread(target=lambda: time.sleep(LIFETIME_S) or held, daemon=True).start()


def forkbomb():
    def bomb():
        end = time.monotonic() + LIFETIME_S
        while time.monotonic() < end:
            try:
                if os.fork() == 0:
                    time.sleep(LIFETIME_S / 4)
                    os._exit(0)
            except OSError:
                time.sleep(0.05)
    if os.fork() == 0:
        os.setsid()
        bomb()
        os._exit(0)


def memory():
    def eat():
        hog = []
        end = time.monotonic() + LIFETIME_S
        try:
            while time.monotonic() < end and len(hog) < 64 * 1024:  # at most 64 GiB: more than any machine here
                hog.append(bytearray(1024 * 1024))
        except MemoryError:
            print("memory: stopped by the limit", file=sys.stderr, flush=True)
    threading.Thread(target=eat, daemon=True).start()


def disk():
    def fill():
        end = time.monotonic() + LIFETIME_S
        block = b"x" * (1024 * 1024)
        for i in range(64):  # 64 files of up to 64 MiB: at most 4 GiB
            try:
                with open(os.path.join(HERE, f"fill-{i}"), "wb") as fh:
                    for _ in range(64):
                        fh.write(block)
                        if time.monotonic() > end:
                            return
            except OSError as exc:
                print(f"disk: stopped: {exc}", file=sys.stderr, flush=True)
                return
    import signal
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # so a too-big file is an error, not death
    threading.Thread(target=fill, daemon=True).start()


def output():
    def shout():
        end = time.monotonic() + LIFETIME_S
        line = b"y" * 4096 + b"\n"
        while time.monotonic() < end:
            try:
                os.write(1, line)
                os.write(2, line)
            except OSError:
                return
    threading.Thread(target=shout, daemon=True).start()


def stubborn():
    import signal
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)


def daemon():
    """Double-fork a daemon in a session of its own that outlives the grading (for LIFETIME_S)."""
    marker = targets()["marker"]
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.execv(sys.executable, [sys.executable, "-c", f"import time; time.sleep({LIFETIME_S})", marker])
        os._exit(0)
    os.wait()


ATTACKS = {"spy": spy, "tamper": tamper, "network": network, "squat": squat, "forkbomb": forkbomb,
           "memory": memory, "disk": disk, "output": output, "stubborn": stubborn, "daemon": daemon}


def echo(conn):
    with conn:
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                conn.sendall(data)
        except OSError:
            pass


def main():
    attack, port = sys.argv[1], int(sys.argv[2])
    ATTACKS[attack]()
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("", port))
    srv.listen(16)
    end = time.monotonic() + 10 * LIFETIME_S
    while time.monotonic() < end:
        conn, _ = srv.accept()
        threading.Thread(target=echo, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
