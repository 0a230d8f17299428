"""The grader's image, on the real Docker engine that scripts/setup.sh starts, as built by scripts/build-image.

Nothing here is skipped: with no engine or no image every test fails with the message that says how to get it.
Every container is started with --network none and a name with this module's prefix, removed when it ends, and
the module's finalizer fails the run if any is left.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from docker import DockerClient
from docker.models.images import Image

from grader import __version__, catalog, imagebuild
from grader.driver import dockerenv
from grader.errors import HarnessError

ROOT = Path(__file__).resolve().parents[1]
LABS = catalog.LABS_DIR
PREFIX = f"slg-test-image-{uuid.uuid4().hex[:8]}-"
RUN_TIMEOUT_S = 120


@dataclass(frozen=True)
class Ran:
    status: int
    output: str


Run = Callable[..., Ran]


@pytest.fixture(scope="module")
def client() -> DockerClient:
    return dockerenv.connect()


@pytest.fixture(scope="module")
def image(client: DockerClient) -> Image:
    return dockerenv.check_image(client, root=ROOT)


@pytest.fixture(scope="module")
def run(client: DockerClient, image: Image) -> Iterator[Run]:
    """Run one container of the image (no network), wait for it with a deadline, return its exit status and
    output, and remove it."""

    def run(command: list[str], *, user: str | None = None, entrypoint: list[str] | None = None,
            volumes: dict[str, dict[str, str]] | None = None, read_only: bool = False) -> Ran:
        container = client.containers.run(
            image.id, command, name=PREFIX + uuid.uuid4().hex[:8], detach=True, network_mode="none",
            user=user or "", entrypoint=entrypoint, volumes=volumes or {}, read_only=read_only,
            tmpfs={"/tmp": "exec"} if read_only else {},
        )
        try:
            status = container.wait(timeout=RUN_TIMEOUT_S)
            return Ran(int(status["StatusCode"]), container.logs().decode(errors="replace"))
        finally:
            container.remove(force=True)

    yield run
    left = client.containers.list(all=True, filters={"name": PREFIX})
    for container in left:
        container.remove(force=True)
    assert not left, f"containers left behind: {[c.name for c in left]}"


def test_the_image_is_built_from_this_checkout(client: DockerClient, image: Image) -> None:
    labels = image.labels
    assert labels[dockerenv.LABEL_INPUTS] == dockerenv.inputs_digest(ROOT), "stale image: run scripts/build-image"
    assert labels[dockerenv.LABEL_VERSION] == __version__
    assert labels[dockerenv.LABEL_USER] == f"{dockerenv.SUBMISSION_USER}:{dockerenv.SUBMISSION_UID}"
    base = client.images.get(imagebuild.BASE_IMAGE)
    assert labels[dockerenv.LABEL_BASE] == base.id
    assert base.labels[imagebuild.LABEL_RECIPE] == imagebuild.recipe_digest()
    assert image.attrs["Config"]["Entrypoint"] == ["grader"]


def test_list_shows_the_six_labs(run: Run) -> None:
    ran = run(["list"])
    assert ran.status == 0, ran.output
    shipped = sorted(p.stem for p in (LABS / "specs").glob("*.yaml"))
    assert len(shipped) == 6
    listed = sorted(line.split()[0] for line in ran.output.splitlines() if line.strip())
    assert listed == shipped, ran.output


def _grade(run: Run, lab: str, submission: Path, out: Path) -> tuple[Ran, dict[str, str]]:
    """Grade in a container like the docker backend will: no network, read-only root, an exec tmpfs scratch."""
    ran = run(["check", lab, "/sub", "--json", "/out/report.json", "--quiet"], read_only=True,
              volumes={str(submission): {"bind": "/sub", "mode": "ro"}, str(out): {"bind": "/out", "mode": "rw"}})
    report = json.loads((out / "report.json").read_text())
    return ran, {c["id"]: c["outcome"] for c in report["checks"]}


def test_the_reference_passes_every_check_inside_the_container(run: Run, tmp_path: Path) -> None:
    ran, outcomes = _grade(run, "tcp-echo-server", LABS / "reference" / "tcp-echo-server", tmp_path)
    checks = yaml.safe_load((LABS / "specs" / "tcp-echo-server.yaml").read_text())["checks"]
    assert set(outcomes) == {c["id"] for c in checks}
    assert ran.status == 0 and set(outcomes.values()) == {"passed"}, (outcomes, ran.output)


def test_a_fixture_fails_exactly_its_expected_checks_inside_the_container(run: Run, tmp_path: Path) -> None:
    # A C fixture (built with the image's gcc and make) whose expected failures include a short-I/O check (the
    # shortio preload compiled into the image).
    fixture = LABS / "fixtures" / "tcp-echo-server" / "c-sizeof-buf"
    expected = set(yaml.safe_load((fixture / "expect.yaml").read_text())["fails"])
    assert "short-writes" in expected
    ran, outcomes = _grade(run, "tcp-echo-server", fixture, tmp_path)
    assert ran.status == 1, ran.output
    assert {check for check, outcome in outcomes.items() if outcome != "passed"} == expected, outcomes


# Tries to change the grader's own files; prints, as JSON, the targets it could write to.
WHERE = """
import json, os, pathlib, grader
pkg = pathlib.Path(grader.__file__).parent
print(json.dumps([str(p) for p in (pkg / "__init__.py", pkg / "labs/specs/tcp-echo-server.yaml",
                  pkg / "labs/reference/serve.py", pkg / "labs/specs/new.yaml", pkg / "driver/new.py",
                  pathlib.Path("/opt/venv/bin/new"),
                  next(pathlib.Path(os.environ["XDG_CACHE_HOME"]).rglob("libshortio-*.so")))]))
"""

PROBE = """
import json, os, sys
read, written = [], []
for target in json.loads(sys.argv[1]):
    try:
        with open(target, "rb") as fh:
            fh.read(1)
        read.append(target)
    except OSError:
        pass
    try:
        with open(target, "a"):
            written.append(target)
    except OSError:
        pass
print(json.dumps({"uid": os.getuid(), "read": read, "written": written}))
"""
# The system's python3, as the docker backend runs a submission's programs (the grader's venv is root's alone).
SYSTEM_PYTHON = ["/usr/bin/env", "-i", "PATH=/usr/local/bin:/usr/bin:/bin", "python3"]


def test_the_submission_user_can_neither_read_nor_write_the_grader(run: Run) -> None:
    where = run(["-c", WHERE], entrypoint=["python3"])
    assert where.status == 0, where.output
    targets = json.loads(where.output)
    existing = [t for t in targets if "/new" not in t]
    as_student = run(["-c", PROBE, json.dumps(targets)], user=dockerenv.SUBMISSION_USER, entrypoint=SYSTEM_PYTHON)
    assert as_student.status == 0, as_student.output
    seen = json.loads(as_student.output)
    assert seen["uid"] == dockerenv.SUBMISSION_UID
    assert seen["written"] == [], f"the submission user could write: {seen['written']}"
    # The specs (hidden checks) and the grader cannot even be read; the preload library, which the harness
    # copies to each submission anyway, may be.
    assert [t for t in seen["read"] if "libshortio" not in t] == [], f"the submission user could read {seen['read']}"
    # The probe does find them: root, in a throwaway container, reads and writes them all.
    as_root = json.loads(run(["-c", PROBE, json.dumps(targets)], entrypoint=SYSTEM_PYTHON).output)
    assert as_root["uid"] == 0 and len(as_root["written"]) == len(targets)
    assert set(as_root["read"]) == set(existing)


@pytest.mark.parametrize("listener", [False, True], ids=["no-socket", "socket-not-listening"])
def test_no_engine_says_how_to_start_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, listener: bool) -> None:
    path = tmp_path / "engine.sock"
    bound = socket.socket(socket.AF_UNIX)
    if listener:
        bound.bind(str(path))  # bound, never listening: a connection is refused, as when dockerd died
    monkeypatch.setenv("DOCKER_HOST", f"unix://{path}")
    why = "connection refused" if listener else "no socket there"
    try:
        with pytest.raises(HarnessError, match=rf"no Docker engine at unix://{path} \({why}\): start dockerd"):
            dockerenv.connect(timeout=5)
    finally:
        bound.close()


def test_no_image_says_how_to_build_it(client: DockerClient, monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"socket-lab-grader:absent-{uuid.uuid4().hex[:8]}"
    with pytest.raises(HarnessError, match=rf"no image {name}: run scripts/build-image"):
        dockerenv.find_image(client, name)
    monkeypatch.setenv(dockerenv.IMAGE_ENV, name)
    with pytest.raises(HarnessError, match=rf"no image {name}: run scripts/build-image"):
        dockerenv.open_image()


def test_open_image_gives_the_engine_and_the_checked_image(image: Image) -> None:
    client, found = dockerenv.open_image()
    try:
        assert found.id == image.id
        assert dockerenv.source_root() == ROOT
    finally:
        client.close()


def _copy_inputs(dst: Path) -> Path:
    for name in dockerenv.INPUT_FILES:
        shutil.copy2(ROOT / name, dst / name)
    for tree in dockerenv.INPUT_TREES:
        shutil.copytree(ROOT / tree, dst / tree, ignore=shutil.ignore_patterns("__pycache__", "build"))
    return dst


def test_a_stale_image_is_caught(client: DockerClient, image: Image, tmp_path: Path) -> None:
    copy = _copy_inputs(tmp_path)
    assert dockerenv.check_image(client, root=copy).id == image.id  # the same sources elsewhere: up to date
    spec = copy / "grader" / "labs" / "specs" / "tcp-echo-server.yaml"
    spec.write_text(spec.read_text() + "\n")
    with pytest.raises(HarnessError, match=r"is out of date: .*run scripts/build-image"):
        dockerenv.check_image(client, root=copy)


def _docker(*args: str, timeout: float = RUN_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)


def test_the_dockerfile_names_what_a_base_lacks_instead_of_reaching_apt(client: DockerClient, tmp_path: Path) -> None:
    # The image above was built on a base with every Debian package, so its build skipped apt-get; a base that
    # lacks socat, built with APT=never (as scripts/build-image does), is refused with the package named.
    lacking = f"{PREFIX}base-without-socat:test"
    (tmp_path / "Dockerfile").write_text(
        f"FROM {imagebuild.BASE_IMAGE}\nRUN dpkg --purge --force-depends socat >/dev/null\n"
    )
    try:
        made = _docker("build", "--network", "none", "--force-rm", "-q", "-t", lacking, str(tmp_path))
        assert made.returncode == 0, made.stderr
        built = _docker("build", "--network", "none", "--force-rm", "--build-arg", f"BASE={lacking}",
                        "--build-arg", "APT=never", str(ROOT))
        assert built.returncode != 0
        assert "the base image lacks: socat (APT=never forbids apt-get)" in built.stdout + built.stderr
        assert "Reading package lists" not in built.stdout + built.stderr  # apt-get never ran
    finally:  # the failed build's cached steps on that base, then the base
        steps = _docker("image", "ls", "-q", "--filter", "dangling=true", "--filter", f"since={lacking}").stdout.split()
        if steps:
            _docker("image", "rm", *steps)
        _docker("image", "rm", "--force", lacking)
    assert not client.images.list(name=lacking.split(":")[0])

