"""The exception tree, split by who is at fault.

* :class:`SpecError` -- the spec's author wrote something invalid (exit status 2).
* :class:`SubmissionError` -- the submission did not build or start (exit status 3).
* :class:`CheckFailed` -- the submission misbehaved during one check (a failed check).
* :class:`HarnessError` -- the harness or the machine failed (an errored check, never the student's fault).

Every message names what was expected and what was got.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Location:
    """Where something was written: a file and a 1-based line (0 when unknown)."""

    file: str
    line: int = 0

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


class GraderError(Exception):
    """Base of every error the grader raises on purpose."""


class UsageError(GraderError):
    """The command line was wrong (exit status 2)."""


class SpecError(GraderError):
    """The spec is invalid. The message starts with file:line."""

    def __init__(self, where: Location, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where
        self.detail = message


class SubmissionError(GraderError):
    """The submission could not be built or started (exit status 3)."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.output = output


class CheckFailed(GraderError):
    """The submission failed a check: what was expected, what was seen, and optionally a step-specific hint."""

    def __init__(self, message: str, *, detail: str = "", hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.hint = hint
        self.step = ""


class HarnessError(GraderError):
    """The harness itself failed (a bug of ours or a fault of the machine), reported as an error."""
