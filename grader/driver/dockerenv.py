"""The grader's Docker image and the engine that runs it: the image's name, how to reach the engine, how to find
and verify the image, and the errors that say what to do when either is missing.

The docker backend and the tests use this module; ``scripts/build-image`` (``grader/imagebuild.py``) builds the
image and labels it with :func:`inputs_digest` of the checkout it was built from, so a stale image is caught.
The docker SDK is imported only inside the functions that talk to the engine, so the build script runs on a bare
``python3``.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from grader import __version__
from grader.errors import HarnessError

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.images import Image

IMAGE_REPOSITORY = "socket-lab-grader"
DEFAULT_IMAGE = f"{IMAGE_REPOSITORY}:{__version__}"
IMAGE_ENV = "GRADER_IMAGE"  # names another image (e.g. one pulled from a course's registry)
BUILD_COMMAND = "scripts/build-image"

LABEL_INPUTS = "org.socket-lab-grader.inputs"  # inputs_digest() of the checkout the image was built from
LABEL_BASE = "org.socket-lab-grader.base"  # the id of the base image it was built on
LABEL_VERSION = "org.socket-lab-grader.version"
LABEL_USER = "org.socket-lab-grader.submission-user"  # set by the Dockerfile: "student:10001"

SUBMISSION_USER = "student"  # the unprivileged user that exists in the image to run submissions as
SUBMISSION_UID = 10001

DEFAULT_ENGINE = "unix:///var/run/docker.sock"
ENGINE_TIMEOUT_S = 60.0  # one API call
START_DOCKERD = (
    "start dockerd (as root: `dockerd >/var/log/dockerd.log 2>&1 &`, or `systemctl start docker`; "
    "scripts/setup.sh installs and starts it)"
)

# What the image is built from: these files, and every file under these folders but the ones .dockerignore
# leaves out of the build context (caches, build outputs).
INPUT_FILES = ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md")
INPUT_TREES = ("grader",)
_SKIP_DIRS = frozenset({"__pycache__", "build", ".pytest_cache", ".mypy_cache", ".ruff_cache"})


def image_name() -> str:
    """The image to grade in: ``$GRADER_IMAGE`` or ``socket-lab-grader:<version>``."""
    return os.environ.get(IMAGE_ENV) or DEFAULT_IMAGE


def engine_address() -> str:
    return os.environ.get("DOCKER_HOST") or DEFAULT_ENGINE


def connect(timeout: float = ENGINE_TIMEOUT_S) -> DockerClient:
    """A client of the engine named by the environment (``DOCKER_HOST``, else the local socket), checked to
    answer; HarnessError saying how to start the engine when it does not."""
    import docker
    from docker.errors import DockerException

    try:
        client = docker.from_env(version="auto", timeout=int(timeout))
        client.ping()
    except DockerException as exc:
        raise HarnessError(f"no Docker engine at {engine_address()} ({_why(exc)}): {START_DOCKERD}") from exc
    return client


def find_image(client: DockerClient, name: str | None = None) -> Image:
    """The image ``name`` (default :func:`image_name`); HarnessError saying how to build it when it is missing."""
    from docker.errors import DockerException, ImageNotFound

    name = name or image_name()
    try:
        return client.images.get(name)
    except ImageNotFound:
        raise HarnessError(
            f"no image {name}: run {BUILD_COMMAND} in the grader's checkout (it needs no registry), or "
            f"`docker build -t {name} .` where a registry is reachable"
        ) from None
    except DockerException as exc:
        raise HarnessError(f"cannot inspect the image {name} at {engine_address()}: {_cause(exc)}") from exc


def check_image(client: DockerClient, name: str | None = None, root: Path | None = None) -> Image:
    """:func:`find_image`, and when ``root`` is a checkout and the image carries the label of the sources it was
    built from, HarnessError if they are not the checkout's (the image is stale). An image built by hand with
    ``docker build`` carries no such label and is taken as it is."""
    image = find_image(client, name)
    built_from = (image.labels or {}).get(LABEL_INPUTS)
    if root is not None and built_from:
        now = inputs_digest(root)
        if built_from != now:
            raise HarnessError(
                f"the image {name or image_name()} is out of date: built from sources {built_from[:12]}, the "
                f"checkout {root} is now {now[:12]}: run {BUILD_COMMAND}"
            )
    return image


def open_image(name: str | None = None) -> tuple[DockerClient, Image]:
    """The engine and the checked image in one call (what the docker backend needs before grading): HarnessError
    when there is no engine, no image, or an image older than the checkout this package runs from."""
    client = connect()
    try:
        return client, check_image(client, name, source_root())
    except BaseException:
        client.close()
        raise


def source_root() -> Path | None:
    """The checkout this package runs from (it has the Dockerfile), or None for an installed package."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "Dockerfile").is_file() and (root / "pyproject.toml").is_file() else None


def input_files(root: Path) -> list[Path]:
    """The files the image is built from, relative to ``root``, sorted."""
    found = [Path(f) for f in INPUT_FILES if (root / f).is_file()]
    for tree in INPUT_TREES:
        for folder, dirs, files in os.walk(root / tree):
            dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.endswith(".egg-info"))
            base = Path(folder).relative_to(root)
            found.extend(base / f for f in files if not f.endswith(".pyc"))
    return sorted(found)


def inputs_digest(root: Path) -> str:
    """A sha256 over the names, modes (executable or not) and contents of :func:`input_files`."""
    digest = hashlib.sha256()
    for rel in input_files(root):
        path = root / rel
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            kind, body = b"l", os.readlink(path).encode()
        else:
            kind, body = (b"x" if info.st_mode & 0o111 else b"f"), path.read_bytes()
        digest.update(rel.as_posix().encode() + b"\0" + kind + hashlib.sha256(body).digest())
    return digest.hexdigest()


def _why(exc: BaseException) -> str:
    """Why the engine did not answer, in a few words."""
    text = str(exc)
    if "FileNotFoundError" in text or "No such file" in text:
        return "no socket there"
    if "PermissionError" in text or "Permission denied" in text:
        return "permission denied: run as root or as a member of the docker group"
    if "Connection refused" in text or "ConnectionRefused" in text:
        return "connection refused"
    return _cause(exc)


def _cause(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:297] + "..."
