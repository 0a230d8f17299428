"""The grader as a user gets it: the sdist and wheel built from this checkout, installed into a fresh venv in a
temporary folder outside the checkout, and run from there with an environment that knows nothing of the checkout.

Nothing is downloaded by name here: the build's own isolated environment and the venv's dependencies come from
the package index that pip is configured with on this machine (and its cache), as for any user.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD_TIMEOUT = 300
INSTALL_TIMEOUT = 300


@dataclass(frozen=True)
class Installed:
    """A fresh venv holding the grader installed from the wheel built from this checkout."""

    sdist: Path
    wheel: Path
    venv: Path

    @property
    def bin(self) -> Path:
        return self.venv / "bin"

    @property
    def grader(self) -> Path:
        return self.bin / "grader"

    @property
    def package(self) -> Path:
        """The installed ``grader`` package folder (in the venv's site-packages)."""
        done = subprocess.run([str(self.bin / "python"), "-c", "import grader; print(grader.__file__)"],
                              capture_output=True, text=True, timeout=60, env=clean_env(self), cwd=self.venv,
                              check=True)
        return Path(done.stdout.strip()).parent


def clean_env(installed: Installed | None = None) -> dict[str, str]:
    """The environment of a user who installed the grader: nothing pointing into the checkout (no PYTHONPATH, no
    course specs, no activated dev venv), the installed venv's bin first on PATH."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "GRADER_SPECS_DIR", "VIRTUAL_ENV", "PYTHONHOME")}
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and not p.startswith(str(ROOT))]
    if installed is not None:
        path.insert(0, str(installed.bin))
    env["PATH"] = os.pathsep.join(path)
    return env


def build_dists(outdir: Path) -> tuple[Path, Path]:
    """``python -m build``: the sdist from the checkout, then the wheel from that sdist (so the wheel proves the
    sdist complete). Returns (sdist, wheel)."""
    done = subprocess.run([sys.executable, "-m", "build", "--outdir", str(outdir), str(ROOT)],
                          capture_output=True, text=True, timeout=BUILD_TIMEOUT, env=clean_env(), cwd=outdir)
    assert done.returncode == 0, f"python -m build failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    sdists, wheels = sorted(outdir.glob("*.tar.gz")), sorted(outdir.glob("*.whl"))
    assert len(sdists) == 1 and len(wheels) == 1, f"expected one sdist and one wheel: {list(outdir.iterdir())}"
    return sdists[0], wheels[0]


def make_venv(folder: Path, wheel: Path) -> Path:
    """A fresh venv (no pip of its own, no system site-packages) with the wheel and its dependencies installed by
    the running pip (``pip --python``), reusing pip's cache."""
    venv = folder / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120,
                   capture_output=True, env=clean_env())
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
                           "--disable-pip-version-check", "-q", str(wheel)],
                          capture_output=True, text=True, timeout=INSTALL_TIMEOUT, env=clean_env(), cwd=folder)
    assert done.returncode == 0, f"pip install {wheel.name} failed:\n{done.stderr[-3000:]}"
    return venv


def tracked_files(prefix: str = "grader") -> dict[str, bool]:
    """Files git tracks under ``prefix``: path -> executable."""
    done = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-s", "-z", prefix], capture_output=True,
                          timeout=60, check=True)
    files = {}
    for entry in done.stdout.split(b"\0"):
        if entry:
            meta, path = entry.split(b"\t", 1)
            files[path.decode()] = meta.split()[0] == b"100755"
    assert files, f"git lists no files under {prefix} in {ROOT}"
    return files


def wheel_modes(wheel: Path) -> dict[str, bool]:
    """Files in a wheel: path -> executable."""
    with zipfile.ZipFile(wheel) as z:
        return {i.filename: bool((i.external_attr >> 16) & 0o111) for i in z.infolist() if not i.is_dir()}


def sdist_modes(sdist: Path) -> dict[str, bool]:
    """Files in an sdist, without its top folder: path -> executable."""
    with tarfile.open(sdist) as t:
        return {m.name.split("/", 1)[1]: bool(m.mode & 0o111) for m in t.getmembers() if m.isfile()}
