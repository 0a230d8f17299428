"""Tests for grader.judge.numbers: binary unsigned integers in network byte order."""

from __future__ import annotations

import pytest

from grader.judge.numbers import byteswap, judge_uint_be


def test_big_endian_in_range_is_ok() -> None:
    verdict = judge_uint_be((1234).to_bytes(4, "big"), 4, 0, 2000)
    assert verdict.ok
    assert verdict.value == 1234
    assert "1234" in verdict.message


def test_rfc868_sized_value() -> None:
    now = 3_900_000_000
    verdict = judge_uint_be(now.to_bytes(4, "big"), 4, now - 5, now + 5)
    assert verdict.ok and verdict.value == now


def test_little_endian_is_missing_htonl() -> None:
    verdict = judge_uint_be((1234).to_bytes(4, "little"), 4, 0, 2000)
    assert not verdict.ok
    assert verdict.value == int.from_bytes((1234).to_bytes(4, "little"), "big")
    assert "missing htonl/ntohl" in verdict.message
    assert "1234" in verdict.message
    assert "[0, 2000]" in verdict.message


def test_little_endian_short_is_missing_htons() -> None:
    verdict = judge_uint_be((8080).to_bytes(2, "little"), 2, 1, 65535 // 2)
    assert not verdict.ok
    assert "missing htons/ntohs" in verdict.message
    assert "8080" in verdict.message


@pytest.mark.parametrize("data", [b"", b"\x00\x00\x04", b"\x00\x00\x04\xd2\n"])
def test_wrong_length(data: bytes) -> None:
    verdict = judge_uint_be(data, 4, 0, 2000)
    assert not verdict.ok
    assert verdict.value is None
    assert "expected 4 bytes" in verdict.message
    assert f"got {len(data)} bytes" in verdict.message


def test_wrong_length_shows_bytes_escaped() -> None:
    verdict = judge_uint_be(b"\x00\x00\x04", 4, 0, 2000)
    assert "'\\0\\0\\x04'" in verdict.message


def test_out_of_range() -> None:
    verdict = judge_uint_be(b"\xff\xff\xff\xfe", 4, 0, 2000)
    assert not verdict.ok
    assert verdict.value == 0xFFFFFFFE
    assert "[0, 2000]" in verdict.message
    assert str(0xFFFFFFFE) in verdict.message
    assert "htonl" not in verdict.message


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        judge_uint_be(b"\x00", 1, 0, 1)
    with pytest.raises(ValueError):
        judge_uint_be(b"\x00\x00", 2, 5, 1)


def test_byteswap() -> None:
    assert byteswap(0x01020304, 4) == 0x04030201
    assert byteswap(0x1F90, 2) == 0x901F
    assert byteswap(byteswap(123456, 4), 4) == 123456
    with pytest.raises(ValueError):
        byteswap(1 << 16, 2)
    with pytest.raises(ValueError):
        byteswap(-1, 4)


def test_modes_split_value_and_byte_order() -> None:
    now = 3_900_000_000
    big, little = now.to_bytes(4, "big"), now.to_bytes(4, "little")
    unix = (now - 2208988800).to_bytes(4, "big")  # the wrong epoch
    lo, hi = now - 2, now + 2
    # "value": either byte order is fine, a wrong value or count is not
    assert judge_uint_be(big, 4, lo, hi, "value").ok
    assert judge_uint_be(little, 4, lo, hi, "value").ok
    assert not judge_uint_be(unix, 4, lo, hi, "value").ok
    assert not judge_uint_be(big + big, 4, lo, hi, "value").ok
    # "byte-order": only host byte order fails, with the htonl message
    verdict = judge_uint_be(little, 4, lo, hi, "byte-order")
    assert not verdict.ok and "missing htonl" in verdict.message
    assert judge_uint_be(big, 4, lo, hi, "byte-order").ok
    assert judge_uint_be(unix, 4, lo, hi, "byte-order").ok
    assert judge_uint_be(b"3900000000", 4, lo, hi, "byte-order").ok
    assert not judge_uint_be(little + bytes(4), 4, lo, hi, "byte-order").ok  # a little-endian time_t
    assert not judge_uint_be(b"", 4, lo, hi, "byte-order").ok  # nothing to judge
    # "number" (the default) is both at once
    assert not judge_uint_be(little, 4, lo, hi).ok and not judge_uint_be(unix, 4, lo, hi).ok
    with pytest.raises(ValueError):
        judge_uint_be(big, 4, lo, hi, "endianness")
