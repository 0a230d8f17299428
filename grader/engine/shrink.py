"""The smallest failing case: when a check that fragments a request (send with split) or a response (respond
with split), or shortens reads/writes, fails, look for the smallest variation of its fault injection that still
fails it, and say it in words.

Fragments: first the request whole (does it fail at all without fragments?), then two pieces split after byte
1, 2, 3, ... (the earliest split first), then three and more pieces from the check's own split points, in
order. Short I/O: first none at all, then one direction only, then no EINTR, then ever larger caps (the mildest
schedule that still fails). Each variation is the same check with the same seed, run by the caller's ``trial``
function; the search stops at the first failing variation, after :data:`MAX_TRIALS` variations, or when the
time :data:`BUDGET_S` is spent, so it is deterministic for a deterministic program and replayable with
``--seed`` and ``--only``.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from grader.judge.show import escape
from grader.report.model import Smallest
from grader.spec.model import Args, Check, ShortIOConfig, Step
from grader.steps.common import payload, split_points
from grader.steps.peer import response_bytes

# The budget of the search, in one place: a few seconds and a bounded number of variations per failed check.
BUDGET_S = 4.0
MAX_TRIALS = 160
MIN_TRIAL_S = 0.5  # a variation gets at least this long (else the search stops): no verdict is cut short
MAX_CAP = 65536  # the largest short-I/O cap tried

Trial = Callable[[Check, float], str]  # run a variation of the check within a timeout; its outcome


@dataclass(frozen=True)
class SplitSite:
    """A send or respond step with split points: where it sits among the steps, its bytes and its own cuts."""

    path: tuple[int, ...]
    step: Step
    data: bytes
    cuts: tuple[int, ...]
    exact: bool = True  # False for seeded random bytes: their length is right, not their values


def split_sites(check: Check, spec_dir: Path) -> list[SplitSite]:
    """Every send or respond step of the check that cuts its bytes into fragments, nested ones included."""
    found: list[SplitSite] = []

    def walk(steps: tuple[Step, ...], prefix: tuple[int, ...]) -> None:
        for i, st in enumerate(steps):
            if st.kind in ("send", "respond") and st.args.get("split"):
                # Random payloads (size:) have their length, not their bytes, from the seed: enough for the cuts.
                rng = random.Random(0)
                if st.kind == "send":
                    data = payload(st.args, spec_dir, rng) or b""
                else:
                    data = response_bytes(st.args, spec_dir, rng)
                cuts = tuple(split_points(data, st.args.get("split", ())))
                if cuts:
                    exact = "size" not in st.args and "body_size" not in st.args
                    found.append(SplitSite((*prefix, i), st, data, cuts, exact))
            if st.nested:
                walk(st.nested, (*prefix, i))

    walk(check.steps, ())
    return found


def _with_split(step: Step, cuts: tuple[int, ...]) -> Step:
    values = dict(step.args.values)
    values["split"] = cuts
    return dataclasses.replace(step, args=Args(MappingProxyType(values), step.args.where))


def _replace(steps: tuple[Step, ...], path: tuple[int, ...], new: Step) -> tuple[Step, ...]:
    i, rest = path[0], path[1:]
    if not rest:
        return (*steps[:i], new, *steps[i + 1 :])
    inner = dataclasses.replace(steps[i], nested=_replace(steps[i].nested, rest, new))
    return (*steps[:i], inner, *steps[i + 1 :])


def variant(check: Check, sites: list[SplitSite], chosen: SplitSite | None, cuts: tuple[int, ...]) -> Check:
    """The check with every split send whole, except ``chosen``, cut at ``cuts``."""
    steps = check.steps
    for site in sites:
        steps = _replace(steps, site.path, _with_split(site.step, cuts if site is chosen else ()))
    return dataclasses.replace(check, steps=steps)


# -- words ---------------------------------------------------------------------------------------------------
_REQUEST_LINE = re.compile(rb"([A-Z]+) (\S+) (HTTP/\d\.\d)\r?\n")
_STATUS_LINE = re.compile(rb"HTTP/\d\.\d \d{3}[ \r\n]")
_PARTS = {"the request line": ("method", "target", "version"),
          "the status line": ("version", "status code", "reason")}


def is_request(data: bytes) -> bool:
    return _REQUEST_LINE.match(data) is not None


def is_response(data: bytes) -> bool:
    return _STATUS_LINE.match(data) is not None


def noun(data: bytes) -> str:
    return "request" if is_request(data) else "response" if is_response(data) else "message"


def _line(data: bytes, index: int) -> tuple[int, bytes]:
    """The number (from 0) and the bytes (line end included) of the line holding byte ``index``."""
    start = data.rfind(b"\n", 0, index) + 1
    end = data.find(b"\n", index)
    return data.count(b"\n", 0, start), data[start : len(data) if end < 0 else end + 1]


def _line_name(data: bytes, index: int) -> str:
    number, line = _line(data, index)
    if is_request(data) or is_response(data):
        head_end = data.find(b"\r\n\r\n")
        if head_end >= 0 and index >= head_end + 4:
            return "the body"
        if number == 0:
            return "the request line" if is_request(data) else "the status line"
        if line in (b"\r\n", b"\n"):
            return "the blank line that ends the head"
        name = line.split(b":", 1)[0]
        return f"the {escape(name, 40)} header line"
    if data.count(b"\n") == 0 or (data.count(b"\n") == 1 and data.endswith(b"\n")):
        return "the message"
    return f"line {number + 1}"


def where(data: bytes, cut: int) -> str:
    """Where a cut after byte ``cut`` falls, in words: 'inside the CRLF of the request line' and the like."""
    if data[cut - 1 : cut + 1] == b"\r\n":
        return f"inside the CRLF of {_line_name(data, cut - 1)}"
    if data[cut - 1 : cut] == b"\n":
        return f"right before {_line_name(data, cut)}"
    name = _line_name(data, cut - 1)
    if name in _PARTS:
        start = data.rfind(b"\n", 0, cut - 1) + 1
        pos, offset = cut - start, 0
        for part, token in zip(_PARTS[name], data[start:].split(b" ", 2), strict=False):
            token = token.split(b"\r")[0].split(b"\n")[0]
            if offset < pos < offset + len(token):
                return f"inside the {part} `{escape(token, 40)}` of {name}"
            if pos == offset + len(token):
                return f"right after the {part} `{escape(token, 40)}` of {name}"
            offset += len(token) + 1
    if name == "the body":
        body = data.find(b"\r\n\r\n") + 4
        return f"after byte {cut - body} of the body"
    if noun(data) == "message":
        return f"inside {name}, between `{escape(data[max(0, cut - 12) : cut], 12)}` and " \
            f"`{escape(data[cut : cut + 12], 12)}`"
    return f"inside {name}"


def _bytes_word(cuts: tuple[int, ...]) -> str:
    if len(cuts) == 1:
        return f"byte {cuts[0]}"
    return "bytes " + ", ".join(map(str, cuts[:-1])) + f" and {cuts[-1]}"


def describe_split(site: SplitSite, cuts: tuple[int, ...], several: bool) -> str:
    if site.exact:
        places = "; ".join(f"after byte {c}: {where(site.data, c)}" if len(cuts) > 1 else where(site.data, c)
                           for c in cuts)
    else:
        places = f"of {len(site.data)} random bytes"
    which = f" (the {site.step.kind} at line {site.step.where.line})" if several else ""
    return (f"fails when the {noun(site.data)}{which} arrives in {len(cuts) + 1} pieces split after "
            f"{_bytes_word(cuts)} ({places})")


def _pieces(data: bytes, cuts: tuple[int, ...]) -> tuple[str, ...]:
    edges = [0, *cuts, len(data)]
    return tuple(escape(data[a:b], 40) for a, b in itertools.pairwise(edges))


def describe_short_io(cfg: ShortIOConfig) -> str:
    caps = []
    unit = "byte" if cfg.max_chunk == 1 else "bytes"
    if cfg.reads:
        caps.append(f"each recv()/read() returns at most {cfg.max_chunk} {unit}")
    if cfg.writes:
        caps.append(f"each send()/write() writes at most {cfg.max_chunk} {unit}")
    rest = []
    if not cfg.reads:
        rest.append("reads not shortened")
    if not cfg.writes:
        rest.append("writes not shortened")
    rest.append("with EINTR" if cfg.eintr else "no EINTR")
    return " and ".join(caps) + f" ({', '.join(rest)})"


# -- the searches ---------------------------------------------------------------------------------------------
class _Search:
    """Counts variations and time; ``run`` gives None once the budget is spent."""

    def __init__(self, trial: Trial, check: Check) -> None:
        self.trial = trial
        self.check = check
        self.trials = 0
        self.deadline = time.monotonic() + BUDGET_S
        self.spent = ""

    def run(self, candidate: Check) -> str | None:
        left = self.deadline - time.monotonic()
        if self.trials >= MAX_TRIALS:
            self.spent = f"{MAX_TRIALS} variations"
            return None
        if left < MIN_TRIAL_S:
            self.spent = f"{BUDGET_S:g}s"
            return None
        self.trials += 1
        return self.trial(candidate, min(candidate.timeout, left))


def _split_candidates(site: SplitSite) -> Iterator[tuple[int, ...]]:
    n = len(site.data)
    for cut in range(1, n):  # two pieces, the earliest split first
        yield (cut,)
    for k in range(2, len(site.cuts) + 1):  # then more pieces, from the check's own split points
        yield from itertools.combinations(site.cuts, k)


def shrink_split(check: Check, sites: list[SplitSite], trial: Trial) -> Smallest | None:
    """The fewest fragments, then the earliest split, that still fail the check; None when the search found
    nothing smaller within its budget (the check's own fragments are then the smallest known)."""
    search = _Search(trial, check)
    outcome = search.run(variant(check, sites, None, ()))
    if outcome == "failed":
        nouns = {noun(s.data) for s in sites}
        what = nouns.pop() if len(nouns) == 1 else "data"
        return Smallest(f"fails even when the {what} arrives whole, in one piece: the failure does not need the "
                        "fragments", search.trials)
    if outcome is None or outcome == "error":
        return _gave_up(search, outcome)
    for site in sites:
        for cuts in _split_candidates(site):
            outcome = search.run(variant(check, sites, site, cuts))
            if outcome == "failed":
                return Smallest(describe_split(site, cuts, len(sites) > 1), search.trials,
                                pieces=_pieces(site.data, cuts) if site.exact else ())
            if outcome is None or outcome == "error":
                return _gave_up(search, outcome)
    return Smallest("no smaller case fails: it takes the check's own fragments", search.trials)


def _gave_up(search: _Search, outcome: str | None) -> Smallest | None:
    if outcome == "error":
        return None  # a harness error during the search: say nothing rather than something wrong
    return Smallest(f"no smaller failing case found within the search's budget ({search.spent}, "
                    f"{search.trials} tried)", search.trials)


def _short_io_candidates(cfg: ShortIOConfig) -> Iterator[ShortIOConfig]:
    if cfg.reads and cfg.writes:
        yield dataclasses.replace(cfg, writes=False)
        yield dataclasses.replace(cfg, reads=False)
    if cfg.eintr:
        yield dataclasses.replace(cfg, eintr=False)


def shrink_short_io(check: Check, trial: Trial) -> Smallest | None:
    """The mildest short-I/O schedule that still fails: one direction if one suffices, no EINTR if it is not
    needed, then the largest cap (fewest shortened calls) that still fails."""
    cfg = check.short_io
    if cfg is None:
        return None
    search = _Search(trial, check)
    outcome = search.run(dataclasses.replace(check, short_io=None))
    if outcome == "failed":
        return Smallest("fails even without the injected short reads and writes: the failure does not need them "
                        "(the kernel's own partial transfers, or another fault, are enough)", search.trials)
    if outcome is None or outcome == "error":
        return _gave_up(search, outcome)
    best = cfg
    for candidate in _short_io_candidates(cfg):
        trial_cfg = dataclasses.replace(candidate, writes=candidate.writes and best.writes,
                                        reads=candidate.reads and best.reads, eintr=candidate.eintr and best.eintr)
        if trial_cfg == best or not (trial_cfg.reads or trial_cfg.writes):
            continue
        outcome = search.run(dataclasses.replace(check, short_io=trial_cfg))
        if outcome == "failed":
            best = trial_cfg
        elif outcome is None or outcome == "error":
            break
    cap = best.max_chunk * 2
    while cap <= MAX_CAP:
        outcome = search.run(dataclasses.replace(check, short_io=dataclasses.replace(best, max_chunk=cap)))
        if outcome != "failed":
            break
        best = dataclasses.replace(best, max_chunk=cap)
        cap *= 2
    return Smallest(f"fails when {describe_short_io(best)}", search.trials, short_io=describe_short_io(best))
