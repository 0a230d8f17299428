"""The published JSON Schema of a lab spec, assembled from the step registry.

``specs/spec.schema.json`` is this schema written out (``grader schema``); a test keeps the two equal.
"""

from __future__ import annotations

from typing import Any

from grader.driver import limits
from grader.spec.model import CATEGORIES, DIFFERENTIAL_DEFAULT, READY_MODES, REFERENCE_DEFAULT_TEXT
from grader.steps import all as _all  # noqa: F401  (registers the step types)
from grader.steps.registry import REGISTRY

SCHEMA_ID = "https://socket-lab-grader.example/spec.schema.json"


def step_schema() -> dict[str, Any]:
    """A step is a mapping with exactly one key, the step type's name, whose value is its arguments."""
    props: dict[str, Any] = {}
    for st in REGISTRY.all():
        args = dict(st.schema)
        if st.nested:
            args = {**args, "properties": {**args["properties"], "steps": {"$ref": "#/$defs/steps"}}}
        props[st.name] = {**args, "description": st.summary}
    return {
        "type": "object",
        "minProperties": 1,
        "maxProperties": 1,
        "properties": props,
        "additionalProperties": False,
    }


def spec_schema() -> dict[str, Any]:
    ready = {"enum": list(READY_MODES)}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "Socket lab spec",
        "type": "object",
        "required": ["lab", "title", "submission", "checks"],
        "additionalProperties": False,
        "properties": {
            "lab": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]*$"},
            "title": {"type": "string", "minLength": 1},
            "description": {"type": "string"},
            "submission": {
                "type": "object",
                "required": ["run"],
                "additionalProperties": False,
                "properties": {
                    "build": {"type": ["string", "null"]},
                    "run": {"type": "string", "minLength": 1},
                    "ready": {"oneOf": [ready, {"type": "array", "items": ready, "minItems": 1}]},
                    "ready_timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": 120},
                    "limits": limits.schema(),
                },
            },
            "files": {"type": "object", "additionalProperties": {"type": "string"}},
            "reference": {
                "oneOf": [{"type": "string", "minLength": 1}, {"const": False}],
                "description": "the folder of a correct program, relative to the spec, that a failing check is "
                f"compared with; false for none (default: {REFERENCE_DEFAULT_TEXT})",
            },
            "defaults": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": 600},
                    "points": {"type": "number", "minimum": 0},
                },
            },
            "checks": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/check"}},
        },
        "$defs": {
            "check": {
                "type": "object",
                "required": ["id", "title", "category", "steps"],
                "additionalProperties": False,
                "properties": {
                    "id": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]*$"},
                    "title": {"type": "string", "minLength": 1},
                    "category": {"enum": list(CATEGORIES)},
                    "points": {"type": "number", "minimum": 0},
                    "visibility": {"enum": ["visible", "hidden"]},
                    "timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": 600},
                    "hint": {"type": "string"},
                    "fresh": {"type": "boolean", "description": "start the server anew for this check"},
                    "differential": {
                        "type": "boolean",
                        "default": DIFFERENTIAL_DEFAULT,
                        "description": "when the check fails, run it against the reference program too and show "
                        f"where the two exchanges part (default: {str(DIFFERENTIAL_DEFAULT).lower()})",
                    },
                    "short_io": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "max": {"type": "integer", "minimum": 1, "maximum": 65536},
                            "eintr": {"type": "boolean"},
                            "writes": {"type": "boolean"},
                            "reads": {"type": "boolean"},
                        },
                    },
                    "steps": {"$ref": "#/$defs/steps"},
                },
            },
            "steps": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/step"}},
            "step": step_schema(),
        },
    }
