"""Judging unsigned integers sent in binary, in network byte order (big-endian).

The common student mistake is sending a number in host byte order (little-endian on x86) by
forgetting ``htonl``/``htons`` (or reading one without ``ntohl``/``ntohs``); :func:`judge_uint_be`
recognizes it and says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from grader.judge.show import escape

__all__ = ["JUDGE_MODES", "UintVerdict", "byteswap", "judge_uint_be"]

_SIZES = (2, 4)


@dataclass(frozen=True)
class UintVerdict:
    """The verdict on one binary unsigned integer.

    ``value`` is the big-endian reading (None when the byte count was wrong); ``message`` names what
    was expected and what was got.
    """

    ok: bool
    value: int | None
    message: str


def _check_size(size: int) -> None:
    if size not in _SIZES:
        raise ValueError(f"size must be 2 or 4 bytes, got {size}")


def byteswap(value: int, size: int) -> int:
    """``value`` with its ``size`` bytes in the opposite order (``size`` is 2 or 4)."""
    _check_size(size)
    if not 0 <= value < 1 << (8 * size):
        raise ValueError(f"{value} does not fit in {size} unsigned bytes")
    return int.from_bytes(value.to_bytes(size, "big"), "little")


def _hex(data: bytes) -> str:
    return " ".join(f"{b:02x}" for b in data)


JUDGE_MODES = ("number", "value", "byte-order")


def judge_uint_be(data: bytes, size: int, low: int, high: int, mode: str = "number") -> UintVerdict:
    """Judge ``data`` as a ``size``-byte (2 or 4) big-endian unsigned integer expected in [low, high].

    Wrong byte count, a value that is right only when byte-swapped (missing htonl/ntohl, or
    htons/ntohs for 2 bytes), and an out-of-range value each give a failing verdict with a message.

    ``mode`` splits the judgement so that each mistake fails the check about it: ``"value"`` judges the
    count and the value read in either byte order (the order is another check's subject); ``"byte-order"``
    fails only a number in host byte order (right only when byte-swapped), or fewer than ``size`` bytes
    (nothing to judge): any other value passes, and of more bytes only the first ``size`` are judged.
    """
    if mode not in JUDGE_MODES:
        raise ValueError(f"mode must be one of {', '.join(JUDGE_MODES)}, got {mode!r}")
    if mode == "byte-order" and len(data) > size:
        data = data[:size]  # too many bytes is another check's subject: judge the order of the first ones
    verdict = _judge(data, size, low, high)
    if verdict.ok or mode == "number" or len(data) < size:
        return verdict
    in_host_order = verdict.value is not None and low <= byteswap(verdict.value, size) <= high
    if mode == "value" and in_host_order:
        return UintVerdict(True, verdict.value, "the value is right in host byte order (another check judges the "
                                                "byte order)")
    if mode == "byte-order" and not in_host_order:
        return UintVerdict(True, verdict.value, "not a number in host byte order (another check judges its value)")
    return verdict


def _judge(data: bytes, size: int, low: int, high: int) -> UintVerdict:
    _check_size(size)
    if low > high:
        raise ValueError(f"empty range [{low}, {high}]")
    bits = 8 * size
    what = f"a {bits}-bit unsigned integer in network byte order"
    if len(data) != size:
        shown = f"'{escape(data)}'" if data else "nothing"
        return UintVerdict(
            ok=False,
            value=None,
            message=f"expected {size} bytes ({what}), got {len(data)} bytes: {shown}",
        )
    value = int.from_bytes(data, "big")
    expected = f"expected {what} in [{low}, {high}]"
    if low <= value <= high:
        return UintVerdict(
            ok=True, value=value, message=f"got {value} (bytes {_hex(data)}), in [{low}, {high}]"
        )
    swapped = int.from_bytes(data, "little")
    if low <= swapped <= high:
        calls = "htonl/ntohl" if size == 4 else "htons/ntohs"
        return UintVerdict(
            ok=False,
            value=value,
            message=(
                f"{expected}, got bytes {_hex(data)} = {value}; those bytes in reverse order mean {swapped}, "
                f"which is in range: the number was sent in host byte order (little-endian), "
                f"missing {calls}?"
            ),
        )
    return UintVerdict(
        ok=False,
        value=value,
        message=f"{expected}, got {value} (bytes {_hex(data)}), which is out of range",
    )
