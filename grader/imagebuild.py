"""``scripts/build-image``: make the grader's image with no registry and no package index inside the build.

1. The base: Debian bookworm made with debootstrap (with python3, python3-venv, gcc, libc6-dev, make, socat, curl),
   from the mirror of this machine's own apt sources, then ``docker import``. It is labelled with a digest of
   its recipe and reused while the recipe is the same.
2. The wheelhouse: ``pip download`` on this machine (with pip's own index configuration) of the pinned
   dependencies and the build backend, as wheels for the base's Python, into ``wheelhouse/``.
3. The image: ``docker build --network none`` of the Dockerfile on that base, labelled with the digest of its
   inputs (Dockerfile, pyproject.toml, README.md, the grader/ tree) and the base's id, and reused while both
   are the same.

Every step has a deadline; a step that fails or hangs ends the command with a message that says what to do.
Needs root (debootstrap), the docker command and a running engine.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from grader import __version__
from grader.driver import dockerenv

SUITE = "bookworm"
VARIANT = "minbase"
PACKAGES = ("python3", "python3-venv", "gcc", "libc6-dev", "make", "socat", "curl", "ca-certificates")
BASE_IMAGE = f"{dockerenv.IMAGE_REPOSITORY}-base:{SUITE}"
LABEL_RECIPE = "org.socket-lab-grader.base-recipe"
# Left out of the base: manuals and translations, apt's downloaded packages and lists (documentation too, below,
# but for the copyright files).
PRUNE = ("usr/share/man/*", "usr/share/info/*", "usr/share/locale/*", "var/cache/apt/archives/*.deb",
         "var/cache/apt/*.bin", "var/lib/apt/lists/*_*")
BASE_ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8")
RECIPE_VERSION = 1  # bump when the way the base is made changes

APT_DIR = Path("/etc/apt")
DEFAULT_TIMEOUT_S = 900.0  # one step (debootstrap, import, pip download, docker build)
QUERY_TIMEOUT_S = 60.0  # docker info / inspect / a short docker run
LOCK_FILE = Path(tempfile.gettempdir()) / "socket-lab-grader-build-image.lock"
START_DEBOOTSTRAP = "install it: apt-get install debootstrap (scripts/setup.sh does)"


class BuildError(Exception):
    """The image could not be built: the message says why and what to do."""


@dataclass(frozen=True)
class AptSource:
    """One ``deb`` source of the machine's apt configuration."""

    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]
    origin: Path


def apt_sources(apt_dir: Path = APT_DIR) -> list[AptSource]:
    """The enabled ``deb`` (binary) sources in sources.list, sources.list.d/*.list (one-line format) and
    sources.list.d/*.sources (deb822), in apt's order."""
    files = [apt_dir / "sources.list"]
    parts = apt_dir / "sources.list.d"
    if parts.is_dir():
        files += sorted(p for p in parts.iterdir() if p.suffix in (".list", ".sources"))
    found: list[AptSource] = []
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        found += _deb822(text, path) if path.suffix == ".sources" else _one_line(text, path)
    return found


def _one_line(text: str, origin: Path) -> list[AptSource]:
    found = []
    for raw in text.splitlines():
        words = raw.split("#", 1)[0].split()
        if not words or words[0] != "deb":
            continue
        words = words[1:]
        if words and words[0].startswith("["):  # [arch=amd64 signed-by=...]
            while words and not words[0].endswith("]"):
                words = words[1:]
            words = words[1:]
        if len(words) >= 2:
            found.append(AptSource(words[0], (words[1],), tuple(words[2:]), origin))
    return found


def _deb822(text: str, origin: Path) -> list[AptSource]:
    found = []
    for paragraph in _paragraphs(text):
        if paragraph.get("enabled", "yes").lower() == "no" or "deb" not in paragraph.get("types", "").split():
            continue
        suites, components = tuple(paragraph.get("suites", "").split()), tuple(paragraph.get("components", "").split())
        found += [AptSource(uri, suites, components, origin) for uri in paragraph.get("uris", "").split()]
    return found


def _paragraphs(text: str) -> list[dict[str, str]]:
    paragraphs: list[dict[str, str]] = []
    fields: dict[str, str] = {}
    key = ""
    for line in [*text.splitlines(), ""]:
        if line.startswith("#"):
            continue
        if not line.strip():
            if fields:
                paragraphs.append(fields)
            fields, key = {}, ""
        elif line[0] in " \t" and key:
            fields[key] += " " + line.strip()
        elif ":" in line:
            name, value = line.split(":", 1)
            key = name.strip().lower()
            fields[key] = value.strip()
    return paragraphs


# The suites of Debian's main archive: a mirror that serves one of them serves bookworm too (the security archive,
# "<suite>-security", has another layout and is never taken).
DEBIAN_SUITES = frozenset(
    {"bullseye", "bookworm", "trixie", "forky", "sid", "oldstable", "stable", "testing", "unstable"}
)


def debian_mirror(suite: str = SUITE, apt_dir: Path = APT_DIR) -> str:
    """The URI of the first enabled apt source for ``suite`` with the ``main`` component; failing that, of one for
    another suite of Debian's main archive (a machine on trixie still has a mirror that serves bookworm)."""
    usable = [s for s in apt_sources(apt_dir)
              if "main" in s.components and s.uri.split(":", 1)[0] in ("http", "https", "ftp", "file")]
    for source in usable:
        if suite in source.suites:
            return source.uri
    for source in usable:
        if DEBIAN_SUITES.intersection(source.suites):
            return source.uri
    raise BuildError(
        f"no apt source for Debian {suite} main in {apt_dir}/sources.list or {apt_dir}/sources.list.d/ "
        f"(*.list or *.sources): add one (e.g. a line `deb URI {suite} main` with your mirror's URI), or give "
        "the mirror with --mirror URI"
    )


def recipe_digest() -> str:
    recipe = [RECIPE_VERSION, SUITE, VARIANT, PACKAGES, PRUNE, BASE_ENV, platform.machine()]
    return hashlib.sha256(json.dumps(recipe).encode()).hexdigest()


# --- running commands with deadlines ---------------------------------------------------------------------------


def run(cmd: Sequence[str], timeout: float, *, what: str, capture: bool = False, env: dict[str, str] | None = None,
        cwd: Path | None = None) -> str:
    """Run ``cmd`` with a deadline; its output goes to ours unless ``capture``. BuildError when it is missing,
    fails or outlives the deadline (then it is killed with its whole process group)."""
    try:
        proc = subprocess.Popen(
            list(cmd), stdout=subprocess.PIPE if capture else None, stderr=subprocess.PIPE if capture else None,
            stdin=subprocess.DEVNULL, start_new_session=True, env=env, cwd=cwd,
        )
    except OSError as exc:
        raise BuildError(f"{what}: cannot run {cmd[0]}: {exc.strerror}") from exc
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill(proc)
        raise BuildError(
            f"{what} did not finish within {timeout:.0f} s and was stopped ({' '.join(cmd[:4])} ...): is the "
            "network or the Docker engine stuck? See the output above; --timeout SECONDS gives it longer"
        ) from None
    except BaseException:
        _kill(proc)
        raise
    if proc.returncode != 0:
        tail = (err or b"").decode(errors="replace").strip()[-2000:]
        raise BuildError(f"{what} failed (exit status {proc.returncode})" + (f": {tail}" if tail else ""))
    return (out or b"").decode(errors="replace")


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _engine_ready() -> None:
    if shutil.which("docker") is None:
        raise BuildError("the docker command is missing: apt-get install docker.io (scripts/setup.sh does)")
    try:
        run(["docker", "info", "--format", "{{.ServerVersion}}"], QUERY_TIMEOUT_S, what="docker info", capture=True)
    except BuildError as exc:
        where = dockerenv.engine_address()
        raise BuildError(f"no Docker engine at {where} ({exc}): {dockerenv.START_DOCKERD}") from None


def _labels(image: str) -> dict[str, str] | None:
    """The labels of a local image (an empty dict when it has none), or None when there is no such image."""
    proc = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{json .Config.Labels}}", image],
        capture_output=True, timeout=QUERY_TIMEOUT_S, check=False,
    )
    if proc.returncode != 0:
        return None
    labels = json.loads(proc.stdout or b"null")
    return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}


def _drop_replaced(old_id: str | None, image: str) -> None:
    """Remove the image that ``image`` replaced (an untagged leftover), when nothing uses it any more."""
    if old_id and old_id != _image_id(image):
        subprocess.run(["docker", "image", "rm", old_id], capture_output=True, timeout=QUERY_TIMEOUT_S, check=False)


def _image_id(image: str) -> str:
    return run(["docker", "image", "inspect", "--format", "{{.Id}}", image], QUERY_TIMEOUT_S,
               what=f"docker image inspect {image}", capture=True).strip()


# --- the base --------------------------------------------------------------------------------------------------


def ensure_base(*, mirror: str | None, force: bool, timeout: float) -> str:
    """The base image (made when missing or of another recipe); returns its id."""
    recipe = recipe_digest()
    labels = _labels(BASE_IMAGE)
    if labels is not None and labels.get(LABEL_RECIPE) == recipe and not force:
        say(f"base {BASE_IMAGE}: up to date, reused")
        return _image_id(BASE_IMAGE)
    if shutil.which("debootstrap") is None:
        raise BuildError(f"debootstrap is missing (it makes the base image {BASE_IMAGE}): {START_DEBOOTSTRAP}")
    if os.geteuid() != 0:
        raise BuildError(f"making the base image {BASE_IMAGE} with debootstrap needs root: run this as root")
    old_id = _image_id(BASE_IMAGE) if labels is not None else None
    uri = mirror or debian_mirror()
    say(f"base {BASE_IMAGE}: debootstrap {SUITE} from {uri} (the machine's apt sources)")
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="slg-base-"))
    root = work / "root"
    try:
        try:
            run(["debootstrap", f"--variant={VARIANT}", f"--include={','.join(PACKAGES)}", SUITE, str(root), uri],
                timeout, what="debootstrap", capture=True)
        except BuildError as exc:
            log = root / "debootstrap" / "debootstrap.log"
            tail = log.read_text(errors="replace")[-1500:] if log.is_file() else ""
            raise BuildError(f"{exc}" + (f"\n--- the end of debootstrap.log:\n{tail}" if tail else "")) from None
        _prune(root)
        changes = [f"ENV {e}" for e in BASE_ENV] + [f"LABEL {LABEL_RECIPE}={recipe}", 'CMD ["/bin/bash"]']
        _import(root, changes, timeout)
    finally:
        _remove_tree(work)
    say(f"base {BASE_IMAGE}: made in {time.monotonic() - started:.0f} s")
    _drop_replaced(old_id, BASE_IMAGE)
    return _image_id(BASE_IMAGE)


def _prune(root: Path) -> None:
    for pattern in PRUNE:
        for entry in root.glob(pattern):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    docs = root / "usr/share/doc"
    if docs.is_dir():
        for entry in docs.rglob("*"):
            if entry.is_file() and entry.name != "copyright":
                entry.unlink()


def _import(root: Path, changes: list[str], timeout: float) -> None:
    args = [a for c in changes for a in ("--change", c)]
    tar = subprocess.Popen(["tar", "-C", str(root), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE,
                           start_new_session=True)
    try:
        assert tar.stdout is not None
        imp = subprocess.Popen(["docker", "import", *args, "-", BASE_IMAGE], stdin=tar.stdout,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        tar.stdout.close()
        try:
            _, err = imp.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill(imp)
            raise BuildError(f"docker import did not finish within {timeout:.0f} s: is the engine stuck?") from None
        except BaseException:
            _kill(imp)
            raise
        if tar.wait(timeout=QUERY_TIMEOUT_S) != 0 or imp.returncode != 0:
            raise BuildError(f"docker import of the base failed: {err.decode(errors='replace').strip()[-1000:]}")
    finally:
        if tar.poll() is None:
            _kill(tar)


def _remove_tree(path: Path) -> None:
    """Remove debootstrap's work folder, after unmounting whatever a failed run left mounted inside it."""
    inside = str(path.resolve()) + "/"
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    for point in sorted((m for m in mounts if m.startswith(inside)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, timeout=QUERY_TIMEOUT_S)
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    if any(m.startswith(inside) for m in mounts):
        say(f"warning: {path} still has mounts inside; left in place, remove it by hand")
        return
    shutil.rmtree(path, ignore_errors=True)


# --- the wheelhouse and the image ------------------------------------------------------------------------------


def base_python(base: str) -> tuple[str, str, str]:
    """(python version X.Y, glibc version, machine) of the base, from a container with no network."""
    probe = "import platform, sys; print('%d.%d' % sys.version_info[:2], platform.libc_ver()[1], platform.machine())"
    out = run(["docker", "run", "--rm", "--network", "none", "--entrypoint", "python3", base, "-c", probe],
              QUERY_TIMEOUT_S, what=f"python3 in the base {base}", capture=True).split()
    if len(out) != 3:
        raise BuildError(f"the base {base} has no usable python3 (it printed {out!r})")
    return out[0], out[1], out[2]


def wheel_platforms(glibc: str, machine: str) -> list[str]:
    """The manylinux platform tags a base with this glibc runs, newest first."""
    major, minor = (int(x) for x in glibc.split(".")[:2])
    tags = [f"manylinux_{major}_{m}_{machine}" for m in range(minor, 4, -1)] if major == 2 else []
    legacy = {"manylinux2014": 17, "manylinux2010": 12, "manylinux1": 5}
    return tags + [f"{name}_{machine}" for name, m in legacy.items() if major == 2 and minor >= m]


def fill_wheelhouse(root: Path, base: str, timeout: float) -> Path:
    """Download the pinned dependencies and the build backend as wheels for the base's Python."""
    import tomllib

    project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    wanted = [*project["project"]["dependencies"], *project["build-system"]["requires"]]
    version, glibc, machine = base_python(base)
    house = root / "wheelhouse"
    house.mkdir(exist_ok=True)
    clear_wheelhouse(root)
    abi = "cp" + version.replace(".", "")
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--quiet", "--dest", str(house),
           "--only-binary=:all:", "--python-version", version, "--implementation", "cp",
           "--abi", abi, "--abi", "abi3", "--abi", "none"]
    for tag in wheel_platforms(glibc, machine):
        cmd += ["--platform", tag]
    say(f"wheelhouse: pip download of {len(wanted)} requirements for Python {version} (glibc {glibc}, {machine})")
    run([*cmd, *wanted], timeout, what="pip download (pip's own index configuration)")
    return house


def clear_wheelhouse(root: Path) -> None:
    for wheel in (root / "wheelhouse").glob("*.whl"):
        wheel.unlink()


def ensure_image(root: Path, name: str, base_id: str, *, force: bool, timeout: float) -> None:
    inputs = dockerenv.inputs_digest(root)
    labels = _labels(name)
    if (labels is not None and labels.get(dockerenv.LABEL_INPUTS) == inputs
            and labels.get(dockerenv.LABEL_BASE) == base_id and not force):
        say(f"image {name}: up to date (sources {inputs[:12]}), reused")
        return
    old_id = _image_id(name) if labels is not None else None
    started = time.monotonic()
    try:
        fill_wheelhouse(root, BASE_IMAGE, timeout)
        say(f"image {name}: docker build --network none on {BASE_IMAGE} (sources {inputs[:12]})")
        latest = f"{dockerenv.IMAGE_REPOSITORY}:latest"
        tags = [name] + ([latest] if name == dockerenv.DEFAULT_IMAGE else [])
        # --force-rm: a step that fails leaves no container behind
        run(["docker", "build", "--network", "none", "--force-rm", "--build-arg", f"BASE={BASE_IMAGE}",
             "--build-arg", "APT=never", "--label", f"{dockerenv.LABEL_INPUTS}={inputs}",
             "--label", f"{dockerenv.LABEL_BASE}={base_id}", "--label", f"{dockerenv.LABEL_VERSION}={__version__}",
             *[a for t in tags for a in ("-t", t)], str(root)], timeout, what="docker build")
    finally:
        clear_wheelhouse(root)
    if dockerenv.inputs_digest(root) != inputs:
        raise BuildError(f"the sources changed while {name} was being built: run {dockerenv.BUILD_COMMAND} again")
    say(f"image {name}: built in {time.monotonic() - started:.0f} s")
    _drop_replaced(old_id, name)


def say(message: str) -> None:
    print(f"build-image: {message}", file=sys.stderr, flush=True)


class _Lock:
    """One build at a time on this machine (the base image is shared by every checkout)."""

    def __init__(self, path: Path, timeout: float) -> None:
        self.path, self.timeout = path, timeout
        self.fd = -1

    def __enter__(self) -> _Lock:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(self.fd)
                    held = f"another build-image still holds {self.path} after {self.timeout:.0f} s"
                    raise BuildError(held) from None
                time.sleep(0.5)  # polling a lock held by another build, bounded by the deadline

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=dockerenv.BUILD_COMMAND, description=__doc__.split("\n\n")[0] if __doc__ else "")
    p.add_argument("--image", default=dockerenv.image_name(), help="the image to build (default: %(default)s)")
    p.add_argument("--mirror", help="Debian mirror URI for debootstrap (default: from the machine's apt sources)")
    p.add_argument("--force", action="store_true", help="rebuild the base and the image even when up to date")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per step (default: %(default)s)")
    args = p.parse_args(argv)
    root = Path(__file__).resolve().parents[1]
    try:
        _engine_ready()
        with _Lock(LOCK_FILE, 4 * args.timeout):
            base_id = ensure_base(mirror=args.mirror, force=args.force, timeout=args.timeout)
            ensure_image(root, args.image, base_id, force=args.force, timeout=args.timeout)
    except BuildError as exc:
        print(f"build-image: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
