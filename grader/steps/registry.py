"""The typed registry of step types.

A step type has a name, a JSON Schema for its arguments (assembled into the published spec schema), an
optional load-time validator, the function that runs it, and documentation with an example.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from grader.engine.context import CheckContext
    from grader.spec.model import Args, Step

RunFn = Callable[["CheckContext", "Step"], None]
ValidateFn = Callable[["Args", "LoadContext"], None]


@dataclass(frozen=True)
class LoadContext:
    """What a load-time validator may consult: the spec's folder and its declared files."""

    spec_dir: Any  # pathlib.Path; Any keeps this module free of imports at run time
    files: Mapping[str, Any]
    ready: tuple[str, ...]


@dataclass(frozen=True)
class StepType:
    """One registered step type."""

    name: str
    group: str
    summary: str
    schema: Mapping[str, Any]
    run: RunFn
    example: str
    validate: ValidateFn | None = None
    nested: bool = False


class Registry:
    """Step types by name; registration happens at import of the modules in :mod:`grader.steps`."""

    def __init__(self) -> None:
        self._types: dict[str, StepType] = {}

    def register(
        self,
        name: str,
        *,
        group: str,
        summary: str,
        schema: Mapping[str, Any],
        example: str,
        validate: ValidateFn | None = None,
        nested: bool = False,
    ) -> Callable[[RunFn], RunFn]:
        def decorate(fn: RunFn) -> RunFn:
            if name in self._types:
                raise ValueError(f"step type {name!r} registered twice")
            self._types[name] = StepType(name, group, summary, schema, fn, example, validate, nested)
            return fn

        return decorate

    def get(self, name: str) -> StepType:
        return self._types[name]

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def names(self) -> list[str]:
        return sorted(self._types)

    def all(self) -> list[StepType]:
        return [self._types[n] for n in self.names()]


REGISTRY = Registry()
step = REGISTRY.register
