"""Schema pieces and helpers shared by the step types: payloads, split points, connection names."""

from __future__ import annotations

import itertools
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from grader.errors import SpecError
from grader.spec.model import Args
from grader.steps.registry import LoadContext

NAME = {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_-]*$"}
SECONDS = {"type": "number", "exclusiveMinimum": 0, "maximum": 600}
PAYLOAD_KEYS = ("text", "hex", "file", "size")
PAYLOAD_PROPS: dict[str, Any] = {
    "text": {"type": "string", "description": "bytes as text (YAML double quotes give \\r \\n \\x00 escapes)"},
    "hex": {"type": "string", "pattern": "^[0-9A-Fa-f\\s]*$"},
    "file": {"type": "string", "description": "a file, relative to the spec"},
    "size": {"type": "integer", "minimum": 0, "maximum": 67108864, "description": "seeded random bytes"},
    "repeat": {"type": "integer", "minimum": 1, "maximum": 1000000},
}
SPLIT_ITEM = {
    "oneOf": [
        {"type": "integer"},
        {"enum": ["crlf", "blank-line", "end-1", "every-byte", "middle"]},
        {
            "type": "object",
            "properties": {"at": {"type": "string"}, "inside": {"type": "string"}},
            "minProperties": 1,
            "maxProperties": 1,
            "additionalProperties": False,
        },
    ]
}


def obj(properties: Mapping[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    """A closed JSON Schema object."""
    schema: dict[str, Any] = {"type": "object", "properties": dict(properties), "additionalProperties": False}
    if required:
        schema["required"] = list(required)
    return schema


def check_payload(args: Args, load: LoadContext, *, required: bool = True, prefix: str = "") -> None:
    """Load-time check: exactly one payload key; a named file exists."""
    keys = [prefix + k for k in PAYLOAD_KEYS]
    present = [k for k in keys if k in args]
    if len(present) > 1 or (required and not present):
        raise SpecError(args.where, f"give exactly one of {', '.join(keys)}; got {present or 'none'}")
    if prefix + "file" in args:
        path = (Path(load.spec_dir) / args.str(prefix + "file")).resolve()
        if not path.is_file():
            raise SpecError(args.where, f"file {args.str(prefix + 'file')!r} not found (looked at {path})")
    if prefix + "hex" in args:
        try:
            bytes.fromhex(args.str(prefix + "hex"))
        except ValueError:
            raise SpecError(args.where, f"{prefix}hex: not an even number of hex digits") from None


def payload(args: Args, spec_dir: Path, rng: random.Random, prefix: str = "") -> bytes | None:
    """The bytes a step's payload keys describe, or None when it has none."""
    data: bytes
    if prefix + "text" in args:
        data = args.str(prefix + "text").encode("utf-8")
    elif prefix + "hex" in args:
        data = bytes.fromhex(args.str(prefix + "hex"))
    elif prefix + "file" in args:
        data = (spec_dir / args.str(prefix + "file")).resolve().read_bytes()
    elif prefix + "size" in args:
        data = rng.randbytes(args.int(prefix + "size"))
    else:
        return None
    return data * args.int(prefix + "repeat", 1)


def split_points(data: bytes, items: list[Any] | tuple[Any, ...]) -> list[int]:
    """Byte offsets (sorted, unique, strictly inside ``data``) at which to cut ``data`` into fragments."""
    cuts: set[int] = set()
    for item in items:
        if isinstance(item, bool):
            continue
        if isinstance(item, int):
            cuts.add(item if item >= 0 else len(data) + item)
        elif item == "crlf":
            i = data.find(b"\r\n")
            if i >= 0:
                cuts.add(i + 1)
        elif item == "blank-line":
            i = data.find(b"\r\n\r\n")
            if i >= 0:
                cuts.add(i + 2)
        elif item == "end-1":
            cuts.add(len(data) - 1)
        elif item == "middle":
            cuts.add(len(data) // 2)
        elif item == "every-byte":
            cuts.update(range(1, len(data)))
        elif isinstance(item, Mapping):
            if "at" in item:
                i = data.find(str(item["at"]).encode())
                if i >= 0:
                    cuts.add(i)
            elif "inside" in item:
                i = data.find(str(item["inside"]).encode())
                if i >= 0:
                    cuts.add(i + max(1, len(str(item["inside"])) // 2))
    return sorted(c for c in cuts if 0 < c < len(data))


def fragments(data: bytes, cuts: list[int]) -> list[bytes]:
    edges = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]
