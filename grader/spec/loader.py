"""Load a lab spec: parse YAML, validate against the JSON Schema, check meaning, build the frozen model.

Every problem becomes one :class:`~grader.errors.SpecError` whose message starts with ``file:line``, names
the key at fault and says what was expected -- never a Python traceback.
"""

from __future__ import annotations

import difflib
import string
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from grader.catalog import lab_root
from grader.driver.limits import Limits
from grader.errors import Location, SpecError
from grader.spec import yamlpos
from grader.spec.model import (
    DIFFERENTIAL_DEFAULT,
    Args,
    Check,
    ShortIOConfig,
    Spec,
    Step,
    SubmissionConfig,
    freeze,
)
from grader.spec.schema import spec_schema
from grader.steps.registry import REGISTRY, LoadContext

if TYPE_CHECKING:
    import jsonschema
    from jsonschema.exceptions import ValidationError

BUILTIN_PLACEHOLDERS = ("port", "host", "url", "outfile")
SERVER_ONLY = ("connect", "udp_send", "udp_expect", "expect_port", "restart", "expect_alive")
CLIENT_ONLY = ("start", "expect_exit", "expect_stdout", "expect_stderr", "expect_outfile")


@cache
def _validator() -> jsonschema.Draft202012Validator:
    import jsonschema  # (a fifth of the harness's start-up: imported only where a spec is validated)

    return jsonschema.Draft202012Validator(spec_schema())


def _path_text(path: list[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _schema_props(error: ValidationError) -> list[str]:
    schema = error.schema
    return sorted(schema.get("properties", {})) if isinstance(schema, dict) else []


def _explain(error: ValidationError) -> str:
    path = list(error.absolute_path)
    validator = str(error.validator)
    if validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = _schema_props(error)
        extra = sorted(set(error.instance) - set(allowed))
        is_step = len(path) >= 2 and path[-2] == "steps"
        what = "step type" if is_step else "key"
        parts = []
        for key in extra:
            close = difflib.get_close_matches(key, allowed, n=1)
            parts.append(f"unknown {what} {key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        return f"{_path_text(path)}: {'; '.join(parts)}; expected one of: {', '.join(allowed)}"
    if validator in ("minProperties", "maxProperties") and len(path) >= 2 and path[-2] == "steps":
        return f"{_path_text(path)}: a step is a mapping with exactly one key, the step type; got {error.instance!r}"
    got = repr(error.instance)
    if len(got) > 80:
        got = got[:77] + "..."
    return f"{_path_text(path)}: {error.message}" + ("" if got in error.message else f" (got {got})")


def _error_line(root: Any, error: ValidationError) -> int:
    path = list(error.absolute_path)
    if str(error.validator) == "additionalProperties" and isinstance(error.instance, yamlpos.PosDict):
        allowed = set(_schema_props(error))
        extra = [k for k in error.instance if k not in allowed]
        if extra:
            return error.instance.lines.get(extra[0], error.instance.line)
    return yamlpos.line_of(root, path)


def load_spec(path: Path | str, *, validate: bool = True) -> Spec:
    """Load and fully validate a spec file. (``validate=False`` skips the JSON Schema, for a harness handed a spec
    its caller has just loaded: an isolated grading's inner harness.)"""
    path = Path(path).resolve()
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(Location(name), f"cannot read the spec: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise SpecError(Location(name), f"the spec is not UTF-8 text: {exc}") from None
    try:
        data = yamlpos.load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        raise SpecError(Location(name, line), f"invalid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise SpecError(Location(name), f"invalid YAML: {exc}") from None
    if not isinstance(data, yamlpos.PosDict):
        got = type(data).__name__
        raise SpecError(Location(name, 1), f"expected a mapping with lab, title, submission, checks; got {got}")
    if validate:
        from jsonschema.exceptions import best_match

        error = best_match(_validator().iter_errors(data))
        if error is not None:
            raise SpecError(Location(name, _error_line(data, error)), _explain(error))
    return _build(data, path)


def _build(data: yamlpos.PosDict, path: Path) -> Spec:
    name = str(path)

    def at(node: Any, key: str | None = None) -> Location:
        if key is not None and isinstance(node, yamlpos.PosDict):
            return Location(name, node.lines.get(key, node.line))
        return Location(name, getattr(node, "line", 0))

    files: dict[str, Path] = {}
    for key, rel in (data.get("files") or {}).items():
        fp = (path.parent / rel).resolve()
        if not fp.exists():
            raise SpecError(at(data["files"], key), f"files.{key}: {rel!r} does not exist (looked at {fp})")
        if key in BUILTIN_PLACEHOLDERS:
            raise SpecError(at(data["files"], key), f"files.{key}: the name {key!r} is reserved for a placeholder")
        files[key] = fp

    sub = data["submission"]
    ready_raw = sub.get("ready", "tcp")
    ready = tuple(ready_raw) if isinstance(ready_raw, list) else (ready_raw,)
    if "none" in ready and len(ready) > 1:
        raise SpecError(at(sub, "ready"), "submission.ready: 'none' cannot be combined with tcp or udp")
    allowed = set(BUILTIN_PLACEHOLDERS) | set(files)
    for _, field, _, _ in string.Formatter().parse(sub["run"]):
        if field is not None and field not in allowed:
            raise SpecError(
                at(sub, "run"),
                f"submission.run: unknown placeholder {{{field}}}; expected one of "
                + ", ".join("{" + p + "}" for p in sorted(allowed)),
            )
    submission = SubmissionConfig(
        run=sub["run"],
        build=sub.get("build"),
        ready=ready,
        ready_timeout=float(sub.get("ready_timeout", 10)),
        where=at(data, "submission"),
        limits=Limits(**dict(sub.get("limits") or {})),
    )
    defaults = data.get("defaults") or {}
    load_ctx = LoadContext(spec_dir=path.parent, files=files, ready=ready)
    checks: list[Check] = []
    seen: dict[str, Location] = {}
    for raw in data["checks"]:
        where = at(raw)
        cid = raw["id"]
        if cid in seen:
            raise SpecError(at(raw, "id"), f"duplicate check id {cid!r} (first used at line {seen[cid].line})")
        seen[cid] = where
        steps = tuple(_step(s, line, name, load_ctx) for s, line in zip(raw["steps"], raw["steps"].lines, strict=True))
        _check_names(steps, set(), set())
        _check_barriers(steps, inside_parallel=False)
        sio = raw.get("short_io")
        checks.append(
            Check(
                id=cid,
                title=raw["title"],
                category=raw["category"],
                points=float(raw.get("points", defaults.get("points", 1))),
                visibility=raw.get("visibility", "visible"),
                timeout=float(raw.get("timeout", defaults.get("timeout", 10))),
                hint=raw.get("hint", ""),
                steps=steps,
                where=where,
                short_io=None
                if sio is None
                else ShortIOConfig(
                    max_chunk=int(sio.get("max", 7)),
                    eintr=bool(sio.get("eintr", False)),
                    writes=bool(sio.get("writes", True)),
                    reads=bool(sio.get("reads", True)),
                ),
                fresh=bool(raw.get("fresh", False)),
                differential=bool(raw.get("differential", DIFFERENTIAL_DEFAULT)),
            )
        )
    return Spec(
        lab=data["lab"],
        title=data["title"],
        description=data.get("description", ""),
        submission=submission,
        files=freeze(files),
        checks=tuple(checks),
        path=path,
        defaults=freeze(defaults),
        reference=_reference(data, path, at),
    )


def _reference(data: yamlpos.PosDict, path: Path, at: Any) -> Path | None:
    """The reference program's folder: the spec's ``reference`` (relative to it), none with ``false``, or by
    default the lab's shipped reference beside the specs' folder (None when there is none)."""
    raw = data.get("reference")
    if raw is False:
        return None
    if raw is None:
        shipped = lab_root(path.parent) / "reference" / str(data["lab"])
        return shipped if shipped.is_dir() else None
    folder = (path.parent / str(raw)).resolve()
    if not folder.is_dir():
        raise SpecError(at(data, "reference"), f"reference: {raw!r} is not a folder (looked at {folder})")
    return folder


def _step(raw: yamlpos.PosDict, line: int, file: str, load_ctx: LoadContext) -> Step:
    kind, args_raw = next(iter(raw.items()))
    where = Location(file, line)
    if args_raw is None:
        args_raw = {}
    server = "none" not in load_ctx.ready
    if server and kind in CLIENT_ONLY:
        raise SpecError(where, f"step {kind!r} starts or judges a client program, but submission.ready is "
                        f"{'/'.join(load_ctx.ready)} (a server); use ready: none for a client lab")
    if not server and kind in SERVER_ONLY:
        raise SpecError(where, f"step {kind!r} needs a server submission, but submission.ready is none")
    st_type = REGISTRY.get(kind)
    nested: tuple[Step, ...] = ()
    if st_type.nested:
        inner = args_raw["steps"]
        nested = tuple(_step(s, ln, file, load_ctx) for s, ln in zip(inner, inner.lines, strict=True))
        args_raw = {k: v for k, v in args_raw.items() if k != "steps"}
    args = Args(freeze(args_raw), where)
    if st_type.validate is not None:
        st_type.validate(args, load_ctx)
    return Step(kind=kind, args=args, where=where, nested=nested)


# Which steps open a named connection or listener, and which use one (with the defaults they assume).
_OPENS_CONN = {"connect": "c", "accept": "c"}
_OPENS_LISTENER = {"listen": "srv"}
_USES_LISTENER = {"accept": "srv", "start": "srv"}


def _check_barriers(steps: tuple[Step, ...], inside_parallel: bool) -> None:
    """A barrier step stands only among the steps of a parallel step (whose branches it lines up)."""
    for st in steps:
        if st.kind == "barrier" and not inside_parallel:
            raise SpecError(st.where, "barrier: only the steps of a parallel step can wait for each other")
        if st.nested:
            _check_barriers(st.nested, inside_parallel=st.kind == "parallel")


def _check_names(steps: tuple[Step, ...], conns: set[str], listeners: set[str]) -> None:
    """Every connection or listener a step uses was opened by an earlier step of the same branch."""
    for st in steps:
        if st.kind in _USES_LISTENER and not (
            st.kind == "start" and any(k in st.args for k in ("refused", "url", "unknown_host", "network"))
        ):
            lname = st.args.str("listener", _USES_LISTENER[st.kind])
            if lname not in listeners:
                raise SpecError(st.where, f"{st.kind}: no listener named {lname!r} was opened by an earlier "
                                "listen step")
        if "conn" in REGISTRY.get(st.kind).schema.get("properties", {}) and st.kind not in _OPENS_CONN:
            cname = st.args.str("conn", "c")
            if cname not in conns:
                raise SpecError(st.where, f"{st.kind}: no connection named {cname!r} was opened by an earlier "
                                "connect or accept step")
        if st.kind in _OPENS_CONN:
            conns.add(st.args.str("as", _OPENS_CONN[st.kind]))
        if st.kind in _OPENS_LISTENER:
            listeners.add(st.args.str("as", _OPENS_LISTENER[st.kind]))
        if st.nested:
            _check_names(st.nested, set(), set())  # a branch has its own connections
