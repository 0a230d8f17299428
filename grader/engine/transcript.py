"""The transcript of a check: every byte sent and received and every notable event, in order.

It is rendered, escaped and trimmed, into failure reports so a student sees exactly what happened on the wire.
Besides the bounded list of events, it keeps a structured view of every connection (:meth:`Transcript.exchanges`:
the bytes each way, in full up to :data:`MAX_STREAM_BYTES`, whatever events were dropped) so two runs of a check
can be compared byte for byte, and it tells a listener (:attr:`Transcript.on_port`) of every port a check opens.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from grader.judge.show import show
from grader.report.model import WireEvent

MAX_EVENTS = 400
MAX_STREAM_BYTES = 1 << 20  # per connection and direction, for comparisons; more is counted, not kept
GRADER, PROGRAM = "grader", "program"  # who sent the bytes: the harness, or the submission


@dataclass(frozen=True)
class Event:
    """One thing that happened: ``kind`` is ``sent``, ``received``, or ``note``."""

    at: float
    kind: str
    label: str
    data: bytes = b""
    text: str = ""

    @property
    def direction(self) -> str:
        """``grader`` (the harness sent it), ``program`` (the submission sent it), or ``""`` for a note."""
        return {"sent": GRADER, "received": PROGRAM}.get(self.kind, "")


@dataclass
class Exchange:
    """Everything that went each way on one connection (or UDP socket) of a check, in order of first use."""

    label: str
    first_at: float
    grader: bytearray = field(default_factory=bytearray)  # bytes the harness sent
    program: bytearray = field(default_factory=bytearray)  # bytes the submission sent
    grader_total: int = 0
    program_total: int = 0

    def add(self, direction: str, data: bytes) -> None:
        buf = self.grader if direction == GRADER else self.program
        room = MAX_STREAM_BYTES - len(buf)
        if room > 0:
            buf += data[:room]
        if direction == GRADER:
            self.grader_total += len(data)
        else:
            self.program_total += len(data)

    def data(self, direction: str) -> bytes:
        return bytes(self.grader if direction == GRADER else self.program)


class Transcript:
    """A thread-safe, bounded list of events (the oldest are dropped past :data:`MAX_EVENTS`)."""

    def __init__(self) -> None:
        self._events: list[Event] = []
        self._dropped = 0
        self._lock = threading.Lock()
        self._t0 = time.monotonic()
        self._exchanges: dict[str, Exchange] = {}
        self.ports: list[int] = []
        self.on_port: Callable[[int], None] | None = None  # told of each port a check opens (before it is used)

    def _add(self, event: Event) -> None:
        with self._lock:
            if event.direction:
                ex = self._exchanges.get(event.label)
                if ex is None:
                    ex = self._exchanges[event.label] = Exchange(event.label, event.at)
                ex.add(event.direction, event.data)
            self._events.append(event)
            if len(self._events) > MAX_EVENTS:
                del self._events[0]
                self._dropped += 1

    def sent(self, label: str, data: bytes) -> None:
        self._add(Event(time.monotonic() - self._t0, "sent", label, data))

    def received(self, label: str, data: bytes) -> None:
        self._add(Event(time.monotonic() - self._t0, "received", label, data))

    def note(self, text: str, label: str = "") -> None:
        self._add(Event(time.monotonic() - self._t0, "note", label, text=text))

    def port(self, label: str, port: int) -> None:
        """A port this check has just opened (a harness listener), before any program is told of it."""
        self.note(f"listening on port {port}", label)
        with self._lock:
            self.ports.append(port)
        if self.on_port is not None:
            self.on_port(port)

    def exchanges(self) -> list[Exchange]:
        """Each connection's bytes both ways, in order of the connections' first bytes."""
        with self._lock:
            return sorted(self._exchanges.values(), key=lambda e: e.first_at)

    def events(self) -> list[Event]:
        with self._lock:
            return list(self._events)

    def structured(self, last: int = 40, limit: int = 240) -> tuple[WireEvent, ...]:
        """The last ``last`` events (same-direction bytes merged) as plain data for reports that draw them."""
        return tuple(
            WireEvent(round(ev.at, 4), ev.kind, ev.label, len(ev.data),
                      ev.text[-1500:] if ev.kind == "note" else show(ev.data, limit))
            for ev in self._merged()[-last:]
        )

    def _merged(self) -> list[Event]:
        merged: list[Event] = []
        for ev in self.events():
            prev = merged[-1] if merged else None
            if (
                prev is not None
                and ev.kind in ("sent", "received")
                and prev.kind == ev.kind
                and prev.label == ev.label
            ):
                merged[-1] = Event(prev.at, prev.kind, prev.label, prev.data + ev.data)
            else:
                merged.append(ev)
        return merged

    def render(self, last: int = 16, limit: int = 240) -> str:
        """The last ``last`` events, one per line, with consecutive same-direction bytes merged."""
        merged = self._merged()
        lines: list[str] = []
        skipped = len(merged) - last
        if skipped > 0 or self._dropped:
            lines.append(f"  … {max(skipped, 0) + self._dropped} earlier events omitted")
        for ev in merged[-last:]:
            who = f"[{ev.label}] " if ev.label else ""
            if ev.kind == "note":
                lines.append(f"  {ev.at:7.3f}s {who}-- {ev.text}")
            else:
                arrow = ">>" if ev.kind == "sent" else "<<"
                body = show(ev.data, limit).replace("\n", "\n" + " " * 14)
                lines.append(f"  {ev.at:7.3f}s {who}{arrow} {len(ev.data)} bytes: {body}")
        return "\n".join(lines)
