"""``grader gradescope SPEC --out autograder.zip``: the bundle Gradescope runs, so the same spec grades inside
Gradescope unchanged.

Gradescope unpacks the zip into ``/autograder/source``, runs ``setup.sh`` once when it builds the image (here:
gcc, make, python3 and a venv with the grader's pinned dependencies), then for each submission runs
``run_autograder``, which grades ``/autograder/submission`` and writes ``/autograder/results/results.json``.
The bundle carries the grader's own source and the spec; ``GRADER_SOURCE``, ``GRADER_SUBMISSION``,
``GRADER_RESULTS`` and ``GRADER_PYTHON`` point ``run_autograder`` elsewhere (the tests use them).
"""

from __future__ import annotations

import importlib.metadata
import shlex
import zipfile
from pathlib import Path

import grader
from grader import catalog
from grader.errors import UsageError
from grader.spec.loader import load_spec

DISTRIBUTION = "socket-lab-grader"
_LEAVE_OUT = {"__pycache__", "fixtures", "reference"}

SETUP_SH = """#!/usr/bin/env bash
# Gradescope runs this once while building the autograder image: the tools submissions are built with, and a
# venv with the grader's pinned dependencies (the grader itself runs from /autograder/source).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq gcc libc6-dev make python3 python3-venv >/dev/null
python3 -m venv /autograder/venv
/autograder/venv/bin/pip install -q -r /autograder/source/requirements.txt
"""

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Gradescope runs this for each submission: grade it with the bundled spec, write results.json.
set -uo pipefail
SOURCE=${{GRADER_SOURCE:-/autograder/source}}
SUBMISSION=${{GRADER_SUBMISSION:-/autograder/submission}}
RESULTS=${{GRADER_RESULTS:-/autograder/results/results.json}}
PY=${{GRADER_PYTHON:-/autograder/venv/bin/python}}
SPEC={spec}
unset GRADER_SPECS_DIR
cd "$SOURCE" || exit 1
PYTHONPATH="$SOURCE" exec "$PY" -m grader.batch.autograder --spec "$SPEC" --submission "$SUBMISSION" \\
    --results "$RESULTS"{student}
"""


def requirements() -> list[str]:
    """The grader's own pinned runtime dependencies."""
    try:
        reqs = importlib.metadata.requires(DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        raise UsageError(f"cannot find the installed {DISTRIBUTION} distribution to read its dependencies") from None
    return [r for r in reqs if "extra ==" not in r]


def _add_tree(zf: zipfile.ZipFile, folder: Path, arcbase: str) -> None:
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if any(part in _LEAVE_OUT for part in rel.parts) or not path.is_file():
            continue
        zf.write(path, f"{arcbase}/{rel.as_posix()}")


def _add_text(zf: zipfile.ZipFile, name: str, text: str, executable: bool = False) -> None:
    info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
    info.external_attr = (0o100755 if executable else 0o100644) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    zf.writestr(info, text)


def write_bundle(spec_ref: str, out: Path, student: bool = False) -> None:
    spec_path = catalog.resolve(spec_ref).resolve()
    spec = load_spec(spec_path)  # refuse a bad spec now, not inside Gradescope
    package = Path(grader.__file__).resolve().parent
    shipped = spec_path.parent == catalog.specs_dir().resolve()
    spec_arg = shlex.quote(spec.lab) if shipped else f'"$SOURCE/spec/{spec_path.name}"'
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        _add_text(zf, "setup.sh", SETUP_SH, executable=True)
        _add_text(zf, "run_autograder", RUN_AUTOGRADER.format(spec=spec_arg, student=" --student" if student else ""),
                  executable=True)
        _add_text(zf, "requirements.txt", "\n".join(requirements()) + "\n")
        _add_tree(zf, package, "grader")
        if not shipped:
            _add_tree(zf, spec_path.parent, "spec")
    tmp.replace(out)
