"""The frozen, typed model of a lab spec, built once at load time.

Every object remembers where it was written (:class:`~grader.errors.Location`) so that a problem found at
run time can still point at the spec's file and line.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from grader.driver.limits import Limits
from grader.errors import Location

CATEGORIES: tuple[str, ...] = (
    "protocol",
    "status-codes",
    "partial-io",
    "byte-order",
    "concurrency",
    "close",
    "robustness",
    "security",
)
READY_MODES: tuple[str, ...] = ("tcp", "udp", "none")
Visibility = Literal["visible", "hidden"]

# Defaults of the feedback keys, in one place: the loader, the JSON Schema and the docs read them from here.
DIFFERENTIAL_DEFAULT = True  # a failing check is run again against the reference program and compared
REFERENCE_DEFAULT_TEXT = "the lab's shipped reference: reference/<lab> beside the specs' folder"


def freeze(value: Any) -> Any:
    """A read-only deep copy of plain YAML data (mappings become MappingProxyType, lists tuples)."""
    if isinstance(value, Mapping):
        return MappingProxyType({str(k): freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    return value


@dataclass(frozen=True)
class Args:
    """A step's arguments: read-only, with typed accessors. The schema has already checked the types."""

    values: Mapping[str, Any]
    where: Location

    def __contains__(self, key: str) -> bool:
        return key in self.values

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)

    def get(self, key: builtins.str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def str(self, key: builtins.str, default: builtins.str = "") -> builtins.str:
        return builtins.str(self.values.get(key, default))

    def int(self, key: builtins.str, default: builtins.int = 0) -> builtins.int:
        return builtins.int(self.values.get(key, default))

    def float(self, key: builtins.str, default: builtins.float = 0.0) -> builtins.float:
        return builtins.float(self.values.get(key, default))

    def bool(self, key: builtins.str, default: builtins.bool = False) -> builtins.bool:
        return builtins.bool(self.values.get(key, default))


@dataclass(frozen=True)
class Step:
    """One step of a check: its type's name, its arguments, nested steps (for group steps), its place."""

    kind: str
    args: Args
    where: Location
    nested: tuple[Step, ...] = ()


@dataclass(frozen=True)
class ShortIOConfig:
    """Run the submission with the short-I/O preload for this check."""

    max_chunk: int = 7
    eintr: bool = False
    writes: bool = True
    reads: bool = True


@dataclass(frozen=True)
class Check:
    """One graded check."""

    id: str
    title: str
    category: str
    points: float
    visibility: Visibility
    timeout: float
    hint: str
    steps: tuple[Step, ...]
    where: Location
    short_io: ShortIOConfig | None = None
    fresh: bool = False
    differential: bool = DIFFERENTIAL_DEFAULT


@dataclass(frozen=True)
class SubmissionConfig:
    """How a submission is built, started, and seen to be ready."""

    run: str
    build: str | None
    ready: tuple[str, ...]
    ready_timeout: float
    where: Location
    limits: Limits = field(default_factory=Limits)


@dataclass(frozen=True)
class Spec:
    """A whole lab spec."""

    lab: str
    title: str
    description: str
    submission: SubmissionConfig
    files: Mapping[str, Path]
    checks: tuple[Check, ...]
    path: Path
    defaults: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    reference: Path | None = None  # the reference program's folder (None: the spec names none, or turned it off)

    @property
    def directory(self) -> Path:
        return self.path.parent

    @property
    def max_score(self) -> float:
        return sum(c.points for c in self.checks)

    def check(self, check_id: str) -> Check:
        for c in self.checks:
            if c.id == check_id:
                return c
        raise KeyError(check_id)
