"""Tests for the shortio LD_PRELOAD fault injector (grader/driver/shortio.c + preload.py).

Everything here runs real processes against real loopback sockets; ports are
picked by binding port 0, and every wait is bounded by a socket timeout or a
deadline.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from grader.driver import preload
from grader.driver.preload import PreloadBuildError, ShortIO, build_preload

TOTAL = 100_000
DEADLINE_S = 30.0
PY = sys.executable

# --------------------------------------------------------------------------
# Helper programs
# --------------------------------------------------------------------------

C_COMMON = r"""
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

static int connect_to(int type, int port)
{
    struct sockaddr_in a;
    int fd = socket(AF_INET, type, 0);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        perror("connect");
        exit(2);
    }
    return fd;
}
"""

# argv: MODE PORT.  Sends TOTAL bytes (pattern i % 251) in various ways.
SENDER_C = (
    C_COMMON
    + r"""
#define TOTAL 100000
static char buf[TOTAL];

int main(int argc, char **argv)
{
    const char *mode;
    int fd, i;

    if (argc != 3)
        return 2;
    mode = argv[1];
    fd = connect_to(SOCK_STREAM, atoi(argv[2]));
    for (i = 0; i < TOTAL; i++)
        buf[i] = (char)(i % 251);

    if (strcmp(mode, "once") == 0) {
        send(fd, buf, TOTAL, 0); /* the classic bug: return value ignored */
    } else if (strcmp(mode, "loop") == 0 || strcmp(mode, "fatal") == 0) {
        size_t off = 0;
        long calls = 0, eintrs = 0, run = 0, maxrun = 0;
        while (off < TOTAL && calls < 10L * TOTAL) {
            ssize_t n = send(fd, buf + off, TOTAL - off, 0);
            calls++;
            if (n < 0) {
                if (errno == EINTR && strcmp(mode, "loop") == 0) {
                    eintrs++;
                    if (++run > maxrun)
                        maxrun = run;
                    continue;
                }
                perror("send");
                return 3;
            }
            run = 0;
            off += (size_t)n;
        }
        printf("sent=%zu calls=%ld eintr=%ld maxrun=%ld\n", off, calls, eintrs, maxrun);
    } else if (strcmp(mode, "seq") == 0) {
        for (i = 0; i < 20; i++)
            printf("%zd\n", send(fd, buf, 1000, 0));
    } else if (strcmp(mode, "head") == 0) {
        /* one small write, like a response head: 150 bytes */
        printf("%zd\n", send(fd, buf, 150, 0));
    } else if (strcmp(mode, "nonblocking") == 0) {
        /* non-blocking, MSG_DONTWAIT, then blocking again: the flags are asked on every call */
        int fl = fcntl(fd, F_GETFL);
        fcntl(fd, F_SETFL, fl | O_NONBLOCK);
        printf("%zd\n", send(fd, buf, 1000, 0));
        printf("%zd\n", write(fd, buf + 1000, 1000));
        fcntl(fd, F_SETFL, fl);
        printf("%zd\n", send(fd, buf + 2000, 1000, MSG_DONTWAIT));
        printf("%zd\n", send(fd, buf + 3000, 1000, 0));
    } else if (strcmp(mode, "write") == 0) {
        printf("%zd\n", write(fd, buf, TOTAL));
    } else if (strcmp(mode, "sendto") == 0) {
        printf("%zd\n", sendto(fd, buf, TOTAL, 0, NULL, 0));
    } else if (strcmp(mode, "sendmsg") == 0 || strcmp(mode, "writev") == 0) {
        struct iovec iov[2] = {{buf, TOTAL / 2}, {buf + TOTAL / 2, TOTAL / 2}};
        struct msghdr m;
        memset(&m, 0, sizeof m);
        m.msg_iov = iov;
        m.msg_iovlen = 2;
        if (mode[0] == 's')
            printf("%zd\n", sendmsg(fd, &m, 0));
        else
            printf("%zd\n", writev(fd, iov, 2));
    } else {
        return 2;
    }
    close(fd);
    return 0;
}
"""
)

# argv: MODE LEN PORT.  Does one read-type call of LEN bytes into a 4096-byte
# stack buffer and prints its result ("loop" reads until 100 bytes arrived).
# LEN is a runtime value so that with _FORTIFY_SOURCE the __*_chk variants
# are called.
READER_C = (
    C_COMMON
    + r"""
int main(int argc, char **argv)
{
    char buf[4096];
    const char *mode;
    size_t len;
    ssize_t n = -2;
    int fd;

    if (argc != 4)
        return 2;
    mode = argv[1];
    len = (size_t)atoi(argv[2]);
    fd = connect_to(SOCK_STREAM, atoi(argv[3]));

    if (strcmp(mode, "recv") == 0) {
        n = recv(fd, buf, len, 0);
    } else if (strcmp(mode, "read") == 0) {
        n = read(fd, buf, len);
    } else if (strcmp(mode, "recvfrom") == 0) {
        n = recvfrom(fd, buf, len, 0, NULL, NULL);
    } else if (strcmp(mode, "recvmsg") == 0 || strcmp(mode, "readv") == 0) {
        struct iovec iov[2] = {{buf, len / 2}, {buf + len / 2, len - len / 2}};
        struct msghdr m;
        memset(&m, 0, sizeof m);
        m.msg_iov = iov;
        m.msg_iovlen = 2;
        n = strcmp(mode, "recvmsg") == 0 ? recvmsg(fd, &m, 0) : readv(fd, iov, 2);
    } else if (strcmp(mode, "nonblocking") == 0 || strcmp(mode, "dontwait") == 0) {
        /* wait (bounded) until all 100 bytes are queued, then one non-blocking read */
        int queued = 0, tries;
        for (tries = 0; queued < 100 && tries < 20000; tries++) {
            ioctl(fd, FIONREAD, &queued);
            if (queued < 100)
                usleep(1000);
        }
        if (mode[0] == 'n') {
            fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
            n = recv(fd, buf, len, 0);
        } else {
            n = recv(fd, buf, len, MSG_DONTWAIT);
        }
    } else if (strcmp(mode, "loop") == 0) {
        long calls;
        n = 0;
        for (calls = 0; n < 100 && calls < 100000; calls++) {
            ssize_t r = recv(fd, buf + n, len - (size_t)n, 0);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                break;
            n += r;
        }
    } else {
        return 2;
    }
    printf("%zd\n", n);
    close(fd);
    return 0;
}
"""
)

# argv: PORT.  Sends one 1000-byte datagram with sendto and one 1200-byte
# datagram with send on a connected UDP socket.
UDP_C = (
    C_COMMON
    + r"""
static char buf[1200];

int main(int argc, char **argv)
{
    struct sockaddr_in a;
    int port, fd, cfd;

    if (argc != 2)
        return 2;
    port = atoi(argv[1]);
    memset(buf, 'u', sizeof buf);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    fd = socket(AF_INET, SOCK_DGRAM, 0);
    printf("%zd\n", sendto(fd, buf, 1000, 0, (struct sockaddr *)&a, sizeof a));
    cfd = connect_to(SOCK_DGRAM, port);
    printf("%zd\n", send(cfd, buf, 1200, 0));
    return 0;
}
"""
)

# argv: PATH.  One write of 100000 bytes to stdout (a pipe) and to a file,
# then one read of the file; prints the three results on stderr.
NONSOCK_C = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TOTAL 100000
static char buf[TOTAL], back[TOTAL];

int main(int argc, char **argv)
{
    ssize_t w, fw, r;
    int fd;

    if (argc != 2)
        return 2;
    memset(buf, 'n', sizeof buf);
    w = write(1, buf, TOTAL);
    fd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0600);
    fw = write(fd, buf, TOTAL);
    lseek(fd, 0, SEEK_SET);
    r = read(fd, back, TOTAL);
    fprintf(stderr, "%zd %zd %zd\n", w, fw, r);
    return memcmp(buf, back, TOTAL) != 0;
}
"""

# Blocking sockets, as in typical student code; the parent enforces deadlines.
PY_CONNECT = "import socket, sys\ns = socket.create_connection(('127.0.0.1', int(sys.argv[-1])))\n"
PY_SEND_ONCE = PY_CONNECT + "s.send(bytes(i % 251 for i in range(100000)))\ns.close()\n"
PY_SENDALL = PY_CONNECT + "s.sendall(bytes(i % 251 for i in range(100000)))\ns.close()\n"
PY_RECV_ONCE = PY_CONNECT + "print(len(s.recv(4096)))\ns.close()\n"
PY_RECV_LOOP = PY_CONNECT + (
    "data = b''\n"
    "for _ in range(10000):\n"
    "    if len(data) >= 100:\n"
    "        break\n"
    "    chunk = s.recv(4096)\n"
    "    if not chunk:\n"
    "        break\n"
    "    data += chunk\n"
    "print(len(data))\n"
    "s.close()\n"
)
# Datagram round trip: send 1000 bytes to the test, print the size of the reply.
PY_UDP = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "s.settimeout(20)\n"
    "s.sendto(b'p' * 1000, ('127.0.0.1', int(sys.argv[-1])))\n"
    "print(len(s.recv(4096)))\n"
)
# Self-contained threaded transfer over blocking sockets: N client threads
# sendall a distinct payload, N server threads read to EOF; checks integrity.
PY_THREADS = r"""
import socket, threading
N, SIZE = 4, 30000
payloads = [bytes([i]) + bytes((i * 7 + j) % 256 for j in range(SIZE)) for i in range(N)]
received = {}
srv = socket.create_server(('127.0.0.1', 0))
srv.settimeout(20)
port = srv.getsockname()[1]

def client(i):
    with socket.create_connection(('127.0.0.1', port)) as c:
        c.sendall(payloads[i])

def server(conn):
    chunks = []
    for _ in range(10 * SIZE):
        d = conn.recv(65536)
        if not d:
            break
        chunks.append(d)
    data = b''.join(chunks)
    received[data[0]] = data
    conn.close()

threads = [threading.Thread(target=client, args=(i,)) for i in range(N)]
for t in threads:
    t.start()
for _ in range(N):
    conn, _ = srv.accept()
    t = threading.Thread(target=server, args=(conn,))
    t.start()
    threads.append(t)
for t in threads:
    t.join(20)
ok = all(received.get(i) == payloads[i] for i in range(N))
print('ok' if ok else 'mismatch')
"""

PATTERN = bytes(i % 251 for i in range(TOTAL))

# --------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_preload(tmp_path_factory.mktemp("shortio-cache"))


@pytest.fixture(scope="module")
def cbin(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Compile the helper C programs once per module."""
    d = tmp_path_factory.mktemp("cprogs")
    out: dict[str, Path] = {}
    specs: dict[str, tuple[str, tuple[str, ...]]] = {
        "sender": (SENDER_C, ("-O2",)),
        "reader": (READER_C, ("-O0",)),
        "reader_fortify": (READER_C, ("-O2", "-U_FORTIFY_SOURCE", "-D_FORTIFY_SOURCE=2")),
        "udp": (UDP_C, ("-O2",)),
        "nonsock": (NONSOCK_C, ("-O2",)),
    }
    for name, (source, flags) in specs.items():
        src = d / f"{name}.c"
        src.write_text(source)
        exe = d / name
        proc = subprocess.run(
            ["gcc", *flags, "-o", str(exe), str(src)], capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, proc.stderr
        out[name] = exe
    return out


def child_env(shortio: ShortIO | None, lib: Path, **extra: str) -> dict[str, str]:
    """A clean environment (no stray preload settings) plus *shortio* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADER_SHORTIO_") and k != "LD_PRELOAD"}
    if shortio is not None:
        env.update(shortio.env(lib))
    env.update(extra)
    return env


@dataclass
class Run:
    received: bytes
    stdout: str
    stderr: str
    returncode: int


def run_tcp(cmd: Sequence[str], env: Mapping[str, str], reply: bytes = b"") -> Run:
    """Run ``cmd + [port]`` against a one-shot TCP server on 127.0.0.1.

    The server accepts one connection, sends *reply*, then reads until EOF.
    """
    deadline = time.monotonic() + DEADLINE_S

    def remaining() -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"deadline exceeded running {cmd[0]}")
        return left

    chunks: list[bytes] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        proc = subprocess.Popen(
            [*cmd, str(port)],
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            conn: socket.socket | None = None
            listener.settimeout(0.2)
            while conn is None:
                remaining()
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    if proc.poll() is not None:
                        # The child is gone; a connection it made is already queued.
                        listener.settimeout(0)
                        try:
                            conn, _ = listener.accept()
                        except BlockingIOError:
                            break
            if conn is not None:
                with conn:
                    conn.settimeout(remaining())
                    if reply:
                        conn.sendall(reply)
                    while True:
                        conn.settimeout(remaining())
                        try:
                            data = conn.recv(65536)
                        except ConnectionResetError:
                            break
                        if not data:
                            break
                        chunks.append(data)
            stdout, stderr = proc.communicate(timeout=remaining())
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=10)
    return Run(b"".join(chunks), stdout, stderr, proc.returncode)


def ints(text: str) -> list[int]:
    return [int(line) for line in text.split()]


# --------------------------------------------------------------------------
# preload.py
# --------------------------------------------------------------------------


def test_source_compiles_warning_free(tmp_path: Path) -> None:
    cmd = ["gcc", "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-o", str(tmp_path / "libshortio.so")]
    proc = subprocess.run(
        [*cmd, str(preload.PRELOAD_SOURCE), "-ldl"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0
    assert proc.stderr == ""


def test_build_is_cached_and_keyed_by_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = build_preload(tmp_path)
    stat = first.stat()
    again = build_preload(tmp_path)
    assert again == first
    assert again.stat().st_mtime_ns == stat.st_mtime_ns
    assert first.name.startswith("libshortio-") and first.suffix == ".so"
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temp leftovers

    edited = tmp_path / "edited" / "shortio.c"
    edited.parent.mkdir()
    edited.write_text(preload.PRELOAD_SOURCE.read_text() + "\n/* edited */\n")
    monkeypatch.setattr(preload, "PRELOAD_SOURCE", edited)
    rebuilt = build_preload(tmp_path)
    assert rebuilt != first
    assert rebuilt.is_file()


def test_default_cache_dir_honours_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert preload.default_cache_dir() == tmp_path / "socket-lab-grader"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert preload.default_cache_dir() == tmp_path / "home" / ".cache" / "socket-lab-grader"


def test_parallel_builds_agree(tmp_path: Path) -> None:
    results: list[Path] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(build_preload(tmp_path))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert len(results) == 4 and len(set(results)) == 1
    assert [p.name for p in tmp_path.iterdir()] == [results[0].name]


def test_compile_error_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "shortio.c"
    bad.write_text("int main(void) { return not_declared; }\n")
    monkeypatch.setattr(preload, "PRELOAD_SOURCE", bad)
    with pytest.raises(PreloadBuildError, match="not_declared"):
        build_preload(tmp_path / "cache")
    assert not any((tmp_path / "cache").glob("*.so"))


def test_missing_gcc_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preload.shutil, "which", lambda _name: None)
    with pytest.raises(PreloadBuildError, match="gcc"):
        build_preload(tmp_path)


def test_shortio_env(tmp_path: Path) -> None:
    lib_path = tmp_path / "lib.so"
    env = ShortIO(seed=9, max_chunk=3, eintr=True, reads=False).env(lib_path)
    assert env == {
        "LD_PRELOAD": str(lib_path.resolve()),
        "GRADER_SHORTIO_SEED": "9",
        "GRADER_SHORTIO_MAX": "3",
        "GRADER_SHORTIO_EINTR": "1",
        "GRADER_SHORTIO_WRITES": "1",
        "GRADER_SHORTIO_READS": "0",
    }
    with pytest.raises(ValueError):
        ShortIO(seed=1).env(tmp_path / "a b.so")
    with pytest.raises(ValueError):
        ShortIO(seed=-1)
    with pytest.raises(ValueError):
        ShortIO(seed=1, max_chunk=0)


# --------------------------------------------------------------------------
# Short writes
# --------------------------------------------------------------------------


def test_c_single_send_is_short(lib: Path, cbin: dict[str, Path]) -> None:
    baseline = run_tcp([str(cbin["sender"]), "once"], child_env(None, lib))
    assert baseline.returncode == 0
    assert baseline.received == PATTERN

    r = run_tcp([str(cbin["sender"]), "once"], child_env(ShortIO(seed=1), lib))
    assert r.returncode == 0, r.stderr
    assert 1 <= len(r.received) <= 7
    assert r.received == PATTERN[: len(r.received)]


def test_c_send_loop_delivers_everything(lib: Path, cbin: dict[str, Path]) -> None:
    r = run_tcp([str(cbin["sender"]), "loop"], child_env(ShortIO(seed=3), lib))
    assert r.returncode == 0, r.stderr
    assert r.received == PATTERN
    calls = int(r.stdout.split()[1].split("=")[1])
    assert calls >= TOTAL // 7  # really was chopped up


@pytest.mark.parametrize("mode", ["write", "sendto", "sendmsg", "writev"])
def test_other_write_calls_are_short(lib: Path, cbin: dict[str, Path], mode: str) -> None:
    r = run_tcp([str(cbin["sender"]), mode], child_env(ShortIO(seed=5, max_chunk=5), lib))
    assert r.returncode == 0, r.stderr
    (n,) = ints(r.stdout)
    assert 1 <= n <= 5
    assert r.received == PATTERN[:n]


def test_python_send_vs_sendall(lib: Path) -> None:
    env = child_env(ShortIO(seed=2), lib)
    baseline = run_tcp([PY, "-I", "-c", PY_SEND_ONCE], child_env(None, lib))
    assert baseline.returncode == 0 and baseline.received == PATTERN

    buggy = run_tcp([PY, "-I", "-c", PY_SEND_ONCE], env)
    assert buggy.returncode == 0, buggy.stderr
    assert 1 <= len(buggy.received) <= 7

    correct = run_tcp([PY, "-I", "-c", PY_SENDALL], env)
    assert correct.returncode == 0, correct.stderr
    assert correct.received == PATTERN


def test_small_writes_are_short_too(lib: Path, cbin: dict[str, Path]) -> None:
    # A response head of 150 bytes under a cap of 4096: still cut short, never sent whole.
    for seed in range(1, 6):
        r = run_tcp([str(cbin["sender"]), "head"], child_env(ShortIO(seed=seed, max_chunk=4096), lib))
        assert r.returncode == 0, r.stderr
        (n,) = ints(r.stdout)
        assert 1 <= n < 150
        assert r.received == PATTERN[:n]


def test_non_blocking_writes_are_untouched(lib: Path, cbin: dict[str, Path]) -> None:
    # O_NONBLOCK (send, write) and MSG_DONTWAIT pass through whole: a short count there promises a full send
    # buffer, which the kernel never gives with room to spare. Back in blocking mode, the call is cut again.
    r = run_tcp([str(cbin["sender"]), "nonblocking"], child_env(ShortIO(seed=3, max_chunk=7), lib))
    assert r.returncode == 0, r.stderr
    *whole, blocking = ints(r.stdout)
    assert whole == [1000, 1000, 1000]
    assert 1 <= blocking <= 7
    assert r.received == PATTERN[: 3000 + blocking]


def test_writes_can_be_disabled(lib: Path, cbin: dict[str, Path]) -> None:
    r = run_tcp([str(cbin["sender"]), "once"], child_env(ShortIO(seed=1, writes=False), lib))
    assert r.received == PATTERN


# --------------------------------------------------------------------------
# Short reads
# --------------------------------------------------------------------------

MESSAGE = bytes(range(100))


def test_python_single_recv_is_short(lib: Path) -> None:
    baseline = run_tcp([PY, "-I", "-c", PY_RECV_ONCE], child_env(None, lib), reply=MESSAGE)
    assert ints(baseline.stdout) == [100]

    r = run_tcp([PY, "-I", "-c", PY_RECV_ONCE], child_env(ShortIO(seed=4), lib), reply=MESSAGE)
    assert r.returncode == 0, r.stderr
    (n,) = ints(r.stdout)
    assert 1 <= n <= 7


def test_python_recv_loop_gets_everything(lib: Path) -> None:
    r = run_tcp([PY, "-I", "-c", PY_RECV_LOOP], child_env(ShortIO(seed=4), lib), reply=MESSAGE)
    assert r.returncode == 0, r.stderr
    assert ints(r.stdout) == [100]


def test_reads_can_be_disabled(lib: Path) -> None:
    env = child_env(ShortIO(seed=4, reads=False), lib)
    r = run_tcp([PY, "-I", "-c", PY_RECV_ONCE], env, reply=MESSAGE)
    assert ints(r.stdout) == [100]


@pytest.mark.parametrize(
    ("binary", "mode"),
    [
        ("reader", "recv"),
        ("reader", "read"),
        ("reader", "recvfrom"),
        ("reader", "recvmsg"),
        ("reader", "readv"),
        ("reader_fortify", "recv"),
        ("reader_fortify", "read"),
        ("reader_fortify", "recvfrom"),
    ],
)
def test_c_read_calls_are_short(lib: Path, cbin: dict[str, Path], binary: str, mode: str) -> None:
    cmd = [str(cbin[binary]), mode, "4096"]
    baseline = run_tcp(cmd, child_env(None, lib), reply=MESSAGE)
    assert ints(baseline.stdout) == [100]

    r = run_tcp(cmd, child_env(ShortIO(seed=8, max_chunk=6), lib), reply=MESSAGE)
    assert r.returncode == 0, r.stderr
    (n,) = ints(r.stdout)
    assert 1 <= n <= 6


@pytest.mark.parametrize("mode", ["nonblocking", "dontwait"])
def test_non_blocking_reads_are_untouched(lib: Path, cbin: dict[str, Path], mode: str) -> None:
    # A short read on a non-blocking socket tells an edge-triggered epoll user the queue is drained: with 100
    # bytes queued, the read returns all 100.
    r = run_tcp([str(cbin["reader"]), mode, "4096"], child_env(ShortIO(seed=8, max_chunk=1), lib), reply=MESSAGE)
    assert r.returncode == 0, r.stderr
    assert ints(r.stdout) == [100]


def test_fortified_reader_really_uses_chk_variants(cbin: dict[str, Path]) -> None:
    image = cbin["reader_fortify"].read_bytes()
    for name in (b"__recv_chk", b"__read_chk", b"__recvfrom_chk"):
        assert name in image
    assert b"__recv_chk" not in cbin["reader"].read_bytes()


def test_fortify_overflow_still_aborts(lib: Path, cbin: dict[str, Path]) -> None:
    # len 8192 > sizeof buf: glibc must still catch it under the preload.
    r = run_tcp([str(cbin["reader_fortify"]), "recv", "8192"], child_env(ShortIO(seed=1), lib), MESSAGE)
    assert r.returncode == -signal.SIGABRT
    assert "overflow" in r.stderr


def test_c_recv_loop_gets_everything(lib: Path, cbin: dict[str, Path]) -> None:
    r = run_tcp([str(cbin["reader"]), "loop", "4096"], child_env(ShortIO(seed=8), lib), reply=MESSAGE)
    assert r.returncode == 0, r.stderr
    assert ints(r.stdout) == [100]


# --------------------------------------------------------------------------
# Determinism
# --------------------------------------------------------------------------


def chunk_sequence(lib: Path, cbin: dict[str, Path], shortio: ShortIO) -> list[int]:
    r = run_tcp([str(cbin["sender"]), "seq"], child_env(shortio, lib))
    assert r.returncode == 0, r.stderr
    values = ints(r.stdout)
    assert len(values) == 20
    assert len(r.received) == sum(values)
    return values


def test_same_seed_same_chunks(lib: Path, cbin: dict[str, Path]) -> None:
    a = chunk_sequence(lib, cbin, ShortIO(seed=1234))
    b = chunk_sequence(lib, cbin, ShortIO(seed=1234))
    c = chunk_sequence(lib, cbin, ShortIO(seed=4321))
    assert a == b
    assert a != c
    assert all(1 <= v <= 7 for v in a + c)
    assert len(set(a)) > 1  # actually random-looking, not a constant cap


def test_max_chunk_is_respected(lib: Path, cbin: dict[str, Path]) -> None:
    assert chunk_sequence(lib, cbin, ShortIO(seed=7, max_chunk=1)) == [1] * 20
    assert all(1 <= v <= 3 for v in chunk_sequence(lib, cbin, ShortIO(seed=7, max_chunk=3)))


# --------------------------------------------------------------------------
# Things that must not be touched
# --------------------------------------------------------------------------


def test_udp_datagrams_arrive_whole(lib: Path, cbin: dict[str, Path]) -> None:
    env = child_env(ShortIO(seed=1, max_chunk=1, eintr=True), lib)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        udp.settimeout(DEADLINE_S)
        port = udp.getsockname()[1]

        proc = subprocess.run(
            [str(cbin["udp"]), str(port)], env=env, capture_output=True, text=True, timeout=DEADLINE_S
        )
        assert proc.returncode == 0, proc.stderr
        assert ints(proc.stdout) == [1000, 1200]
        assert len(udp.recv(65536)) == 1000
        assert len(udp.recv(65536)) == 1200

        # Python client: datagram out via sendto, datagram back via recv.
        child = subprocess.Popen(
            [PY, "-I", "-c", PY_UDP, str(port)], env=env, stdout=subprocess.PIPE, text=True
        )
        try:
            data, addr = udp.recvfrom(65536)
            assert len(data) == 1000
            udp.sendto(b"r" * 3000, addr)
            out, _ = child.communicate(timeout=DEADLINE_S)
        finally:
            if child.poll() is None:
                child.kill()
                child.communicate(timeout=10)
        assert child.returncode == 0
        assert ints(out) == [3000]


def test_non_socket_fds_are_not_capped(lib: Path, cbin: dict[str, Path], tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(cbin["nonsock"]), str(tmp_path / "out.bin")],
        env=child_env(ShortIO(seed=1, max_chunk=1, eintr=True), lib),
        capture_output=True,
        timeout=DEADLINE_S,
    )
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout) == TOTAL
    assert proc.stderr.split() == [b"100000"] * 3


def test_no_seed_means_pass_through(lib: Path, cbin: dict[str, Path]) -> None:
    env = child_env(None, lib, LD_PRELOAD=str(lib), GRADER_SHORTIO_MAX="1", GRADER_SHORTIO_EINTR="1")
    r = run_tcp([str(cbin["sender"]), "once"], env)
    assert r.returncode == 0
    assert r.received == PATTERN
    r = run_tcp([PY, "-I", "-c", PY_RECV_ONCE], env, reply=MESSAGE)
    assert ints(r.stdout) == [100]


# --------------------------------------------------------------------------
# EINTR and threads
# --------------------------------------------------------------------------


def test_eintr_retry_loop_succeeds(lib: Path, cbin: dict[str, Path]) -> None:
    r = run_tcp([str(cbin["sender"]), "loop"], child_env(ShortIO(seed=11, eintr=True), lib))
    assert r.returncode == 0, r.stderr
    assert r.received == PATTERN
    fields = dict(item.split("=") for item in r.stdout.split())
    assert int(fields["eintr"]) > 0
    assert int(fields["maxrun"]) == 1  # never two EINTRs in a row


def test_eintr_treated_as_fatal_fails(lib: Path, cbin: dict[str, Path]) -> None:
    r = run_tcp([str(cbin["sender"]), "fatal"], child_env(ShortIO(seed=11, eintr=True), lib))
    assert r.returncode == 3
    assert "Interrupted system call" in r.stderr
    assert len(r.received) < TOTAL


def test_eintr_read_loop_succeeds(lib: Path, cbin: dict[str, Path]) -> None:
    env = child_env(ShortIO(seed=12, eintr=True, max_chunk=2), lib)
    r = run_tcp([str(cbin["reader"]), "loop", "4096"], env, reply=MESSAGE)
    assert r.returncode == 0, r.stderr
    assert ints(r.stdout) == [100]


def test_python_sendall_survives_eintr(lib: Path) -> None:
    # CPython retries EINTR itself (PEP 475).
    r = run_tcp([PY, "-I", "-c", PY_SENDALL], child_env(ShortIO(seed=5, eintr=True), lib))
    assert r.returncode == 0, r.stderr
    assert r.received == PATTERN


@pytest.mark.parametrize("eintr", [False, True])
def test_threaded_python_program_is_correct(lib: Path, eintr: bool) -> None:
    proc = subprocess.run(
        [PY, "-I", "-c", PY_THREADS],
        env=child_env(ShortIO(seed=99, max_chunk=50, eintr=eintr), lib),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
