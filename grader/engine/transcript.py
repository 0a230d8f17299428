"""The transcript of a check: every byte sent and received and every notable event, in order.

It is rendered, escaped and trimmed, into failure reports so a student sees exactly what happened on the wire.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from grader.judge.show import show
from grader.report.model import WireEvent

MAX_EVENTS = 400


@dataclass(frozen=True)
class Event:
    """One thing that happened: ``kind`` is ``sent``, ``received``, or ``note``."""

    at: float
    kind: str
    label: str
    data: bytes = b""
    text: str = ""


class Transcript:
    """A thread-safe, bounded list of events (the oldest are dropped past :data:`MAX_EVENTS`)."""

    def __init__(self) -> None:
        self._events: list[Event] = []
        self._dropped = 0
        self._lock = threading.Lock()
        self._t0 = time.monotonic()

    def _add(self, event: Event) -> None:
        with self._lock:
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
