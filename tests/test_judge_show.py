"""Tests for grader.judge.show: escaping, hexdumps, and describing mismatches."""

from __future__ import annotations

import pytest

from grader.judge.show import describe_mismatch, escape, first_difference, hexdump, is_mostly_text, show


def test_escape_printable_and_specials() -> None:
    assert escape(b"GET / HTTP/1.1\r\n") == "GET / HTTP/1.1\\r\\n"
    assert escape(b"a\tb\\c\0d") == "a\\tb\\\\c\\0d"
    assert escape(b"\x01\x7f\x80\xff") == "\\x01\\x7f\\x80\\xff"
    assert escape(b"") == ""


def test_escape_every_byte_is_reversible_text() -> None:
    text = escape(bytes(range(256)), limit=256)
    assert text.isascii()
    assert "\n" not in text and "\r" not in text


def test_escape_trims_long_data_deterministically() -> None:
    data = b"A" * 100 + b"B" * 100 + b"C" * 100
    text = escape(data, limit=30)
    assert text == "A" * 20 + "…[270 bytes omitted]…" + "C" * 10
    assert escape(data, limit=30) == text
    assert escape(b"x" * 30, limit=30) == "x" * 30


def test_escape_tiny_limits() -> None:
    assert escape(b"abcdef", 1) == "a…[5 bytes omitted]…"
    assert escape(b"abcdef", 3) == "ab…[3 bytes omitted]…f"
    with pytest.raises(ValueError):
        escape(b"abc", 0)


def test_hexdump_lines() -> None:
    dump = hexdump(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert dump.splitlines() == [
        "0000  47 45 54 20 2f 20 48 54  54 50 2f 31 2e 31 0d 0a  |GET / HTTP/1.1..|",
        "0010  48 6f 73 74 3a 20 78 0d  0a 0d 0a                 |Host: x....|",
    ]
    assert hexdump(b"") == ""


def test_hexdump_trims_and_keeps_true_offsets() -> None:
    dump = hexdump(bytes(range(256)), limit=64).splitlines()
    assert dump[0].startswith("0000  00 01 02")
    assert dump[2] == "…[192 bytes omitted]…"
    assert dump[-1].startswith("00f0  f0 f1")
    assert dump[-1].endswith("|................|")


def test_show_picks_text_or_hexdump() -> None:
    assert show(b"") == "(nothing)"
    assert show(b"hello\r\n") == "hello\\r\\n"
    assert show(b"\x00\x01\x02\x03binary").startswith("0000  00 01 02 03")
    assert is_mostly_text(b"a" * 9 + b"\x00")
    assert not is_mostly_text(b"a" * 8 + b"\x00\x00")


def test_first_difference() -> None:
    assert first_difference(b"abc", b"abc") is None
    assert first_difference(b"abc", b"abd") == 2
    assert first_difference(b"abc", b"ab") == 2
    assert first_difference(b"ab", b"abc") == 2
    assert first_difference(b"", b"x") == 0
    long = b"x" * 10000
    assert first_difference(long + b"a", long + b"b") == 10000
    assert first_difference(long, long[:5000] + b"y" + long[5001:]) == 5000


def test_describe_mismatch() -> None:
    expected = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"
    got = b"HTTP/1.1 200 OK\r\nContent-length: 5\r\n"
    message = describe_mismatch(expected, got, context=8)
    assert message == (
        "lengths 36 vs 36; first difference at byte 25: "
        "expected '…Content-Length: …' got '…Content-length: …'"
    )
    assert describe_mismatch(b"abc", b"ab").endswith("(got ends there)")
    assert "(got has extra bytes there)" in describe_mismatch(b"ab", b"abc\n")
    assert describe_mismatch(b"same", b"same").startswith("no difference")
