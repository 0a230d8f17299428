"""Generate docs/steps.md, the reference of every step type, from the registry (``grader docs``)."""

from __future__ import annotations

import json
from typing import Any

from grader.spec.schema import spec_schema, step_schema
from grader.steps.registry import REGISTRY

INTRO = """# Step reference

Generated from the step registry by `grader docs > docs/steps.md`; a test keeps this file up to date.

A check's `steps` is a list; each step is a mapping with one key, the step type, whose value holds its
arguments (`{}` for none). Connection names default to `c` (TCP), `srv` (listeners) and `u` (UDP sockets).
Payload arguments (`text`, `hex`, `file`, `size`, `repeat`) describe bytes: YAML double-quoted text has
`\\r`, `\\n`, `\\x00` escapes; `file` is relative to the spec; `size` is seeded random bytes.
"""


def _type(schema: dict[str, Any]) -> str:
    if "enum" in schema:
        return " \\| ".join(json.dumps(v) for v in schema["enum"])
    if "const" in schema:
        return json.dumps(schema["const"])
    if "oneOf" in schema:
        return " or ".join(_type(s) for s in schema["oneOf"])
    t = schema.get("type", "any")
    if isinstance(t, list):
        return " or ".join(t)
    if t == "array" and isinstance(schema.get("items"), dict):
        return f"list of {_type(schema['items'])}"
    return str(t)


def render() -> str:
    out = [INTRO]
    groups: dict[str, list[str]] = {}
    for st in REGISTRY.all():
        groups.setdefault(st.group, []).append(st.name)
    out.append("| group | steps |\n|---|---|")
    for group, names in groups.items():
        out.append(f"| {group} | {', '.join(f'[`{n}`](#{n})' for n in names)} |")
    schemas = step_schema()["properties"]
    for group, names in groups.items():
        out.append(f"\n## {group}\n")
        for name in names:
            st = REGISTRY.get(name)
            out.append(f"### {name}\n\n{st.summary}\n")
            props = schemas[name].get("properties", {})
            required = set(schemas[name].get("required", []))
            if props:
                out.append("| argument | type | |\n|---|---|---|")
                for key, sub in props.items():
                    note = "required" if key in required else sub.get("description", "")
                    out.append(f"| `{key}` | {_type(sub)} | {note} |")
            out.append(f"\n```yaml\n{st.example}\n```\n")
    out.append(_keys())
    return "\n".join(out)


def _keys() -> str:
    """The spec's and each check's own keys (besides steps), with their defaults, from the JSON Schema."""
    schema = spec_schema()
    rows = ["\n## Spec and check keys\n", "| key | type | |\n|---|---|---|"]
    for where, props in (("spec", schema["properties"]), ("check", schema["$defs"]["check"]["properties"])):
        for key, sub in props.items():
            if "description" not in sub:
                continue
            rows.append(f"| {where}: `{key}` | {_type(sub)} | {sub['description']} |")
    return "\n".join(rows) + "\n"
