"""Presenting bytes to students: escaping, hexdumps, and where two byte strings first differ.

Everything here is pure and deterministic: the same bytes always give the same text.
Long data is trimmed to its head and tail with ``…[N bytes omitted]…`` in the middle.
"""

from __future__ import annotations

__all__ = ["describe_mismatch", "escape", "first_difference", "hexdump", "show"]

_SPECIAL = {
    0x5C: "\\\\",
    0x0D: "\\r",
    0x0A: "\\n",
    0x09: "\\t",
    0x00: "\\0",
}

# One entry per byte value, so escaping is a table lookup.
_ESCAPED: tuple[str, ...] = tuple(
    _SPECIAL[b] if b in _SPECIAL else chr(b) if 0x20 <= b <= 0x7E else f"\\x{b:02x}" for b in range(256)
)

_TEXTLIKE = frozenset(range(0x20, 0x7F)) | {0x09, 0x0A, 0x0D}

_HEX_PER_LINE = 16


def _check_limit(limit: int) -> None:
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")


def _split(limit: int) -> tuple[int, int]:
    """How many head and tail bytes to keep when showing only ``limit`` bytes."""
    tail = limit // 3
    return limit - tail, tail


def _omitted(count: int) -> str:
    return f"…[{count} bytes omitted]…"


def _escape_all(data: bytes) -> str:
    return "".join(_ESCAPED[b] for b in data)


def escape(data: bytes, limit: int = 200) -> str:
    r"""Render ``data`` as one line of text.

    Printable ASCII stays as is; ``\r``, ``\n``, ``\t``, ``\\`` and NUL become ``\r``, ``\n``, ``\t``,
    ``\\`` and ``\0``; every other byte becomes ``\xNN``. When ``data`` is longer than ``limit`` bytes,
    only its first and last bytes are kept, with ``…[N bytes omitted]…`` in between.
    """
    _check_limit(limit)
    if len(data) <= limit:
        return _escape_all(data)
    head, tail = _split(limit)
    omitted = len(data) - head - tail
    return _escape_all(data[:head]) + _omitted(omitted) + _escape_all(data[len(data) - tail :])


def _hex_line(data: bytes, offset: int, width: int) -> str:
    cells = [f"{b:02x}" for b in data]
    left = " ".join(cells[:8])
    right = " ".join(cells[8:])
    hexpart = f"{left:<23}  {right:<23}"
    text = "".join(chr(b) if 0x20 <= b <= 0x7E else "." for b in data)
    return f"{offset:0{width}x}  {hexpart}  |{text}|"


def _hex_lines(data: bytes, start: int, end: int, width: int) -> list[str]:
    return [
        _hex_line(data[pos : min(pos + _HEX_PER_LINE, end)], pos, width)
        for pos in range(start, end, _HEX_PER_LINE)
    ]


def hexdump(data: bytes, limit: int = 64) -> str:
    """Classic hexdump: ``0000  47 45 54 20 …  |GET …|``, 16 bytes a line, offsets in hex.

    When ``data`` is longer than ``limit`` bytes, the lines of its first and last bytes are kept
    (offsets stay true) with a ``…[N bytes omitted]…`` line in between. ``b""`` gives ``""``.
    """
    _check_limit(limit)
    width = max(4, len(f"{max(len(data) - 1, 0):x}"))
    if len(data) <= limit:
        return "\n".join(_hex_lines(data, 0, len(data), width))
    head, tail = _split(limit)
    if head >= _HEX_PER_LINE:
        head -= head % _HEX_PER_LINE  # end the head on a line boundary
    tail_start = len(data) - tail
    aligned = tail_start - tail_start % _HEX_PER_LINE
    if aligned >= head:
        tail_start = aligned  # start the tail on a line boundary (shows a few more bytes)
    lines = _hex_lines(data, 0, head, width)
    lines.append(_omitted(tail_start - head))
    lines.extend(_hex_lines(data, tail_start, len(data), width))
    return "\n".join(lines)


def is_mostly_text(data: bytes) -> bool:
    """True when at least 90% of ``data`` is printable ASCII or whitespace (``\\t``, ``\\n``, ``\\r``)."""
    if not data:
        return True
    textlike = sum(1 for b in data if b in _TEXTLIKE)
    return textlike * 10 >= len(data) * 9


def show(data: bytes, limit: int = 200) -> str:
    """Show ``data`` the most readable way: escaped text when mostly text, else a hexdump.

    ``limit`` bounds the number of bytes shown either way; ``b""`` gives ``"(nothing)"``.
    """
    if not data:
        return "(nothing)"
    if is_mostly_text(data):
        return escape(data, limit)
    return hexdump(data, limit)


def first_difference(expected: bytes, got: bytes) -> int | None:
    """Index of the first byte where ``expected`` and ``got`` differ.

    When one is a prefix of the other, that is the shorter length; ``None`` when they are equal.
    """
    if expected == got:
        return None
    common = min(len(expected), len(got))
    # Narrow down by blocks first, so long equal prefixes are compared at C speed.
    start = 0
    block = 4096
    while start < common:
        end = min(start + block, common)
        if expected[start:end] != got[start:end]:
            for i in range(start, end):
                if expected[i] != got[i]:
                    return i
        start = end
    return common


def _window(data: bytes, index: int, context: int) -> str:
    lo = max(0, index - context)
    hi = min(len(data), index + context)
    text = _escape_all(data[lo:hi])
    if lo > 0:
        text = "…" + text
    if hi < len(data):
        text += "…"
    return f"'{text}'"


def describe_mismatch(expected: bytes, got: bytes, context: int = 24) -> str:
    """One line telling where ``got`` departs from ``expected``.

    ``"lengths E vs G; first difference at byte N: expected '…' got '…'"``, each side shown from
    ``context`` bytes before byte N to ``context`` bytes after it, escaped.
    """
    if context < 0:
        raise ValueError(f"context must not be negative, got {context}")
    index = first_difference(expected, got)
    if index is None:
        return f"no difference: both are the same {len(expected)} bytes"
    message = (
        f"lengths {len(expected)} vs {len(got)}; first difference at byte {index}: "
        f"expected {_window(expected, index, context)} got {_window(got, index, context)}"
    )
    if index == len(got):
        message += " (got ends there)"
    elif index == len(expected):
        message += " (got has extra bytes there)"
    return message
