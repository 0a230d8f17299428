"""Tests for grader.judge.http: h11-based parsing of responses and requests, with readable reasons.

In the spirit of h11's own tests, each message is parsed whole, every proper prefix is checked
(as if fed one byte at a time), and trailing bytes after the message are checked too.
"""

from __future__ import annotations

import pytest

from grader.judge.http import (
    HttpParseError,
    HttpRequest,
    HttpResponse,
    ResponseWatcher,
    _feed_response,
    line_ending_problems,
    parse_request,
    parse_response,
    request_head_complete,
    response_complete,
)

CL_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
CHUNKED_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n"
)
EOF_RESPONSE = b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n<html>hi</html>\n"
HEAD_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
NO_CONTENT_RESPONSE = b"HTTP/1.1 204 No Content\r\nServer: x\r\n\r\n"
BINARY_BODY = bytes(range(256)) + b"\x00\x00\r\n\r\n\x00"
BINARY_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
    b"Content-Length: " + str(len(BINARY_BODY)).encode() + b"\r\n\r\n" + BINARY_BODY
)


def assert_complete_only_at_end(data: bytes, method: str = "GET") -> None:
    for end in range(len(data)):
        assert not response_complete(data[:end], method), f"complete after only {end} bytes"
    assert response_complete(data, method)


@pytest.mark.parametrize("data", [CL_RESPONSE, CHUNKED_RESPONSE, EOF_RESPONSE, HEAD_RESPONSE, NO_CONTENT_RESPONSE,
                                  BINARY_RESPONSE, b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
                                  b"garbage\r\n\r\n", b"HTTP/1.1 100 Continue\r\n\r\n" + CL_RESPONSE])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_watcher_fed_as_bytes_arrive_agrees_with_parsing_the_whole(data: bytes, method: str) -> None:
    """One watcher fed a growing buffer gives, at every length, what a fresh parse of that prefix gives."""
    watcher = ResponseWatcher(method)
    buffer = bytearray()
    for byte in data:
        buffer.append(byte)
        assert watcher.complete(bytes(buffer)) == _feed_complete(bytes(buffer), method), len(buffer)


def _feed_complete(data: bytes, method: str) -> bool:
    progress = _feed_response(data, method, eof=False)
    return progress.done and progress.error is None


def assert_every_prefix_fails(data: bytes, method: str = "GET") -> None:
    for end in range(len(data)):
        for eof in (True, False):
            with pytest.raises(HttpParseError):
                parse_response(data[:end], request_method=method, eof=eof)


# --------------------------------------------------------------------------------------------
# Responses


def test_content_length_response() -> None:
    response = parse_response(CL_RESPONSE)
    assert response == HttpResponse(
        status=200,
        reason="OK",
        http_version="1.1",
        headers=(("content-type", "text/plain"), ("content-length", "5")),
        body=b"hello",
        framing="content-length",
        trailing=b"",
        content_length=5,
        head=CL_RESPONSE[: -len(b"hello")],
        bare_lf=False,
    )
    assert response.header("Content-Type") == "text/plain"
    assert response.header("CONTENT-LENGTH") == "5"
    assert response.header("x-missing") is None
    assert response.header_all("content-type") == ["text/plain"]
    # The end does not depend on EOF:
    assert parse_response(CL_RESPONSE, eof=False) == response


def test_content_length_response_byte_by_byte() -> None:
    assert_complete_only_at_end(CL_RESPONSE)
    assert_every_prefix_fails(CL_RESPONSE)


def test_content_length_response_with_trailing_bytes() -> None:
    extra = b"HTTP/1.1 200 OK\r\n"
    assert response_complete(CL_RESPONSE + extra)
    response = parse_response(CL_RESPONSE + extra)
    assert response.body == b"hello"
    assert response.trailing == extra
    assert parse_response(CL_RESPONSE + extra, eof=False).trailing == extra


def test_keep_alive_response_followed_by_extra_bytes() -> None:
    # A server that writes more than its Content-Length (e.g. a stray newline or a second copy).
    data = b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok\r\nok"
    response = parse_response(data, eof=False)
    assert response.body == b"ok"
    assert response.trailing == b"\r\nok"
    assert response.framing == "content-length"
    # Also with Connection: close, where h11 would refuse to read anything after the message.
    closing = data.replace(b"keep-alive", b"close")
    assert parse_response(closing).trailing == b"\r\nok"


def test_chunked_response() -> None:
    response = parse_response(CHUNKED_RESPONSE)
    assert response.body == b"hello, world"
    assert response.framing == "chunked"
    assert response.content_length is None
    assert response.trailing == b""
    assert response.head == b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert_complete_only_at_end(CHUNKED_RESPONSE)
    assert_every_prefix_fails(CHUNKED_RESPONSE)
    assert parse_response(CHUNKED_RESPONSE + b"more").trailing == b"more"


def test_chunked_response_with_bare_lf_chunks() -> None:
    data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n"
    assert not response_complete(data)
    with pytest.raises(HttpParseError) as info:
        parse_response(data)
    assert "chunked body not finished" in info.value.reason
    assert "bare \\n" in info.value.reason


def test_chunk_longer_than_declared() -> None:
    data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n"
    with pytest.raises(HttpParseError, match=r"chunk data not followed by \\r\\n"):
        parse_response(data)


def test_eof_delimited_response() -> None:
    response = parse_response(EOF_RESPONSE)
    assert response.framing == "eof"
    assert response.body == b"<html>hi</html>\n"
    assert response.http_version == "1.0"
    assert response.content_length is None
    assert response.trailing == b""
    # Its end is only known at EOF: never complete, and an error without EOF.
    for end in range(len(EOF_RESPONSE) + 1):
        assert not response_complete(EOF_RESPONSE[:end])
    with pytest.raises(HttpParseError, match="connection is still open"):
        parse_response(EOF_RESPONSE, eof=False)
    # Any prefix that includes the whole head is a (shorter) valid response at EOF.
    head_end = EOF_RESPONSE.index(b"\r\n\r\n") + 4
    for end in range(len(EOF_RESPONSE)):
        if end < head_end:
            with pytest.raises(HttpParseError):
                parse_response(EOF_RESPONSE[:end])
        else:
            assert parse_response(EOF_RESPONSE[:end]).body == EOF_RESPONSE[head_end:end]


def test_head_response_has_no_body() -> None:
    response = parse_response(HEAD_RESPONSE, request_method="HEAD")
    assert response.body == b""
    assert response.framing == "none"
    assert response.content_length == 1000
    assert_complete_only_at_end(HEAD_RESPONSE, "HEAD")
    assert_every_prefix_fails(HEAD_RESPONSE, "HEAD")
    # Method names are case-insensitive here.
    assert parse_response(HEAD_RESPONSE, request_method="head").framing == "none"
    # The same bytes answering a GET are a truncated body.
    with pytest.raises(HttpParseError, match="expected 1000 bytes, got 0"):
        parse_response(HEAD_RESPONSE)


def test_head_response_with_a_body_leaves_it_trailing() -> None:
    response = parse_response(HEAD_RESPONSE + b"oops", request_method="HEAD")
    assert response.body == b""
    assert response.trailing == b"oops"


def test_204_has_no_body() -> None:
    response = parse_response(NO_CONTENT_RESPONSE)
    assert response.status == 204
    assert response.reason == "No Content"
    assert response.body == b""
    assert response.framing == "none"
    assert response.header("server") == "x"
    assert_complete_only_at_end(NO_CONTENT_RESPONSE)
    assert_every_prefix_fails(NO_CONTENT_RESPONSE)


def test_304_has_no_body() -> None:
    data = b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n"
    response = parse_response(data, eof=False)
    assert response.framing == "none"
    assert response.content_length == 10


def test_interim_100_continue_then_response() -> None:
    data = b"HTTP/1.1 100 Continue\r\n\r\n" + CL_RESPONSE
    response = parse_response(data)
    assert response.informational == (100,)
    assert response.head == CL_RESPONSE[: -len(b"hello")]
    assert_complete_only_at_end(data)
    with pytest.raises(HttpParseError, match="only an interim 100 response"):
        parse_response(b"HTTP/1.1 100 Continue\r\n\r\n")


def test_truncated_body() -> None:
    data = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789"
    with pytest.raises(HttpParseError) as info:
        parse_response(data)
    assert info.value.reason == (
        "body shorter than Content-Length: expected 1000 bytes, got 10 before the connection closed"
    )
    assert str(info.value) == info.value.reason
    with pytest.raises(HttpParseError, match="connection is still open"):
        parse_response(data, eof=False)
    assert not response_complete(data)


def test_http09_style_response() -> None:
    data = b"<html><body>hello</body></html>\r\n"
    with pytest.raises(HttpParseError) as info:
        parse_response(data)
    assert info.value.reason.startswith("no HTTP status line: the response starts with '<html>")
    assert "missing status line" in info.value.reason
    # Also when the HTML contains blank lines (h11 would see a "status line" '<html>').
    with pytest.raises(HttpParseError, match="no HTTP status line"):
        parse_response(b"<html>\n\n<body></body></html>\n")
    assert not response_complete(data)


def test_empty_response() -> None:
    with pytest.raises(HttpParseError, match="without sending any bytes"):
        parse_response(b"")
    with pytest.raises(HttpParseError, match="0 bytes"):
        parse_response(b"", eof=False)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"http/1.1 200 OK\r\n\r\n", "upper case"),
        (b"\r\nHTTP/1.1 200 OK\r\n\r\n", "starts with an empty line"),
        (b" HTTP/1.1 200 OK\r\n\r\n", "starts with whitespace"),
        (b"HTTP/1.1 20 OK\r\n\r\n", "malformed status line 'HTTP/1.1 20 OK'"),
        (b"HTTP/1.1 200 OK\r\r\nServer: x\r\n\r\n", "stray \\r"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n", "invalid Content-Length"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            "conflicting Content-Length",
        ),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "unsupported Transfer-Encoding"),
        (b"HTTP/1.1 200 OK\r\n Folded: x\r\n\r\n", "starts with a space or tab"),
        (b"HTTP/1.1 200 OK\r\nServer: x\r\n", "no blank line"),
        (b"\x16\x03\x01\x02\x00", "TLS"),
    ],
)
def test_malformed_responses(data: bytes, reason: str) -> None:
    with pytest.raises(HttpParseError) as info:
        parse_response(data)
    assert reason in info.value.reason
    assert not response_complete(data)


def test_garbage_header_line() -> None:
    data = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nthis is not a header\r\n\r\nhi"
    with pytest.raises(HttpParseError) as info:
        parse_response(data)
    assert info.value.reason.startswith("malformed header line 'this is not a header'")
    assert "no ':'" in info.value.reason
    with pytest.raises(HttpParseError, match="whitespace is allowed between the header name"):
        parse_response(b"HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nhi")
    assert not response_complete(data)


def test_bare_lf_response_head() -> None:
    data = b"HTTP/1.1 200 OK\nContent-Length: 2\n\nhi"
    response = parse_response(data)
    assert response.bare_lf
    assert response.body == b"hi"
    assert response.head == b"HTTP/1.1 200 OK\nContent-Length: 2\n\n"
    assert line_ending_problems(response.head) == [
        "line 1 ends with \\n, not \\r\\n: 'HTTP/1.1 200 OK\\n'",
        "line 2 ends with \\n, not \\r\\n: 'Content-Length: 2\\n'",
        "line 3 ends with \\n, not \\r\\n: '\\n'",
    ]
    assert_complete_only_at_end(data)
    assert not parse_response(CL_RESPONSE).bare_lf


def test_binary_body_with_nuls() -> None:
    response = parse_response(BINARY_RESPONSE, eof=False)
    assert response.body == BINARY_BODY
    assert response.content_length == len(BINARY_BODY)
    assert response.trailing == b""
    assert_complete_only_at_end(BINARY_RESPONSE)
    assert parse_response(BINARY_RESPONSE + b"\x00").trailing == b"\x00"


def test_response_without_reason_phrase() -> None:
    response = parse_response(b"HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n")
    assert response.status == 404
    assert response.reason == ""


def test_invalid_request_method_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="invalid request method"):
        parse_response(CL_RESPONSE, request_method="G T")


def test_repeated_headers_in_order() -> None:
    data = b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nX: y\r\nset-cookie: b=2\r\nContent-Length: 0\r\n\r\n"
    response = parse_response(data)
    assert response.header_all("Set-Cookie") == ["a=1", "b=2"]
    assert [name for name, _ in response.headers] == ["set-cookie", "x", "set-cookie", "content-length"]


# --------------------------------------------------------------------------------------------
# Requests


GET_REQUEST = b"GET /search?q=socket+lab&page=2 HTTP/1.1\r\nHost: localhost:8080\r\nAccept: */*\r\n\r\n"


def test_request_with_query_string() -> None:
    request = parse_request(GET_REQUEST)
    assert request == HttpRequest(
        method="GET",
        target="/search?q=socket+lab&page=2",
        http_version="1.1",
        headers=(("host", "localhost:8080"), ("accept", "*/*")),
        head=GET_REQUEST,
        body=b"",
        trailing=b"",
        bare_lf=False,
    )
    assert request.header("HOST") == "localhost:8080"
    assert request.header_all("accept") == ["*/*"]
    assert line_ending_problems(request.head) == []


def test_request_byte_by_byte() -> None:
    for end in range(len(GET_REQUEST)):
        assert not request_head_complete(GET_REQUEST[:end]), end
        with pytest.raises(HttpParseError):
            parse_request(GET_REQUEST[:end])
    assert request_head_complete(GET_REQUEST)


def test_request_head_not_finished_reason() -> None:
    with pytest.raises(HttpParseError) as info:
        parse_request(b"GET / HTTP/1.1\r\nHost: x\r\n")
    assert info.value.reason.startswith(
        "request head not finished: no blank line (\\r\\n\\r\\n) after the headers"
    )
    with pytest.raises(HttpParseError, match="0 bytes"):
        parse_request(b"")


def test_request_with_trailing_bytes() -> None:
    request = parse_request(GET_REQUEST + b"GET /next HTTP/1.1\r\n")
    assert request.trailing == b"GET /next HTTP/1.1\r\n"
    assert request.body == b""


def test_request_with_body() -> None:
    data = b"POST /form HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\n\r\na=1&b=2"
    request = parse_request(data + b"!")
    assert request.body == b"a=1&b=2"
    assert request.trailing == b"!"
    with pytest.raises(HttpParseError, match="expected 7 bytes, got 3"):
        parse_request(data[:-4])


def test_chunked_request_body() -> None:
    data = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    assert parse_request(data).body == b"abc"
    with pytest.raises(HttpParseError, match="chunked request body not finished"):
        parse_request(data[:-2])


def test_http10_request_without_host_is_ok() -> None:
    request = parse_request(b"GET /index.html HTTP/1.0\r\n\r\n")
    assert request.http_version == "1.0"
    assert request.header("host") is None
    assert request.target == "/index.html"


def test_http11_request_without_host_is_an_error() -> None:
    with pytest.raises(HttpParseError) as info:
        parse_request(b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n")
    assert info.value.reason.startswith("missing Host header in an HTTP/1.1 request")


def test_request_with_bare_lf() -> None:
    data = b"GET / HTTP/1.1\r\nHost: x\nAccept: */*\r\n\r\n"
    assert request_head_complete(data)
    request = parse_request(data)
    assert request.bare_lf
    assert line_ending_problems(request.head) == ["line 2 ends with \\n, not \\r\\n: 'Host: x\\n'"]
    all_lf = b"GET / HTTP/1.1\nHost: x\n\n"
    for end in range(len(all_lf)):
        assert not request_head_complete(all_lf[:end])
    assert request_head_complete(all_lf)
    assert parse_request(all_lf).bare_lf


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"GET /\r\n\r\n", "HTTP/0.9-style"),
        (b"GET /my file HTTP/1.1\r\nHost: x\r\n\r\n", "%20"),
        (b"GET / http/1.1\r\nHost: x\r\n\r\n", "upper case"),
        (b"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", "starts with an empty line"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", "more than one Host header"),
        (b"GET / HTTP/1.1\r\nHost x\r\n\r\n", "malformed header line 'Host x'"),
        (b"\x16\x03\x01\x02\x00", "TLS"),
    ],
)
def test_malformed_requests(data: bytes, reason: str) -> None:
    with pytest.raises(HttpParseError) as info:
        parse_request(data)
    assert reason in info.value.reason


def test_line_ending_problems() -> None:
    head = b"GET / HTTP/1.1\r\nA: b\rc\r\nHost: x"
    assert line_ending_problems(head) == [
        "line 2 has a stray \\r inside it: 'A: b\\rc\\r\\n'",
        "line 3 has no line ending: 'Host: x'",
    ]
    assert line_ending_problems(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") == []
    assert line_ending_problems(b"") == []
