"""HTTP/1.x parsing for judging student clients and servers, built on h11.

The message structure is always parsed by h11 (strict and well kept); this module only feeds it
the bytes seen on a connection, collects its events, and turns its complaints into reasons a
student can act on (:class:`HttpParseError`). A few extra facts h11 does not report are added:
the raw head bytes, bare-LF line endings (which h11 tolerates), the body framing, and the bytes
left over after the message.

Pure: bytes in, verdicts out, no I/O.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import h11

from grader.judge.show import escape

__all__ = [
    "Framing",
    "HttpParseError",
    "HttpRequest",
    "HttpResponse",
    "line_ending_problems",
    "parse_request",
    "parse_response",
    "request_head_complete",
    "response_complete",
]

Framing = Literal["content-length", "chunked", "eof", "none"]

# The rule h11 uses to find the end of a head: an empty line, ended by \n or \r\n.
_BLANK_LINE = re.compile(rb"\n\r?\n")
_BYTES_LITERAL = re.compile(r"""b(['"]).*\1""")
_HTTP_VERSION = re.compile(rb"HTTP/[0-9]\.[0-9]")
_STATUS_CODE = re.compile(rb"[0-9]{3}")
_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")

# Synthetic request sent (into the void) to put an h11 client connection in the right state.
_SYNTHETIC_HOST = "judge.invalid"
_MAX_HEAD = 16 * 1024  # h11's default max_incomplete_event_size


class HttpParseError(Exception):
    """The bytes are not a valid (or not a complete) HTTP message.

    ``reason`` explains why in terms a student can act on; it is also the exception's message.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _first_header(headers: tuple[tuple[str, str], ...], name: str) -> str | None:
    wanted = name.lower()
    for key, value in headers:
        if key == wanted:
            return value
    return None


def _all_headers(headers: tuple[tuple[str, str], ...], name: str) -> list[str]:
    wanted = name.lower()
    return [value for key, value in headers if key == wanted]


@dataclass(frozen=True)
class HttpResponse:
    """A parsed response.

    ``http_version`` is like ``"1.1"``; ``headers`` are (lower-cased name, value) pairs in order, as
    normalized by h11. ``framing`` tells how the body's end was found: ``"content-length"``,
    ``"chunked"``, ``"eof"`` (connection close) or ``"none"`` (no body allowed: HEAD, 204, 304, 2xx to
    CONNECT). ``trailing`` holds bytes that came after the end of the message (always empty for
    ``"eof"`` framing). ``content_length`` is the Content-Length header's value when present (also
    for HEAD/204/304, where it describes a body that is not sent). ``head`` is the raw status line and
    header lines including the blank line; ``bare_lf`` is True when a line of ``head`` ends in a
    bare ``\\n``. ``informational`` lists the status codes of any 1xx responses before this one.
    """

    status: int
    reason: str
    http_version: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    framing: Framing
    trailing: bytes
    content_length: int | None
    head: bytes
    bare_lf: bool = False
    informational: tuple[int, ...] = ()

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        return _first_header(self.headers, name)

    def header_all(self, name: str) -> list[str]:
        """Every value of header ``name`` (case-insensitive), in order."""
        return _all_headers(self.headers, name)


@dataclass(frozen=True)
class HttpRequest:
    """A parsed request.

    ``method`` and ``target`` are as sent (``target`` includes any query string); ``http_version`` is
    like ``"1.1"``; ``headers`` are (lower-cased name, value) pairs in order. ``head`` is the raw
    request line and header lines including the blank line; ``body`` is the de-chunked body;
    ``trailing`` the bytes after the end of the request; ``bare_lf`` is True when a line of
    ``head`` ends in a bare ``\\n``.
    """

    method: str
    target: str
    http_version: str
    headers: tuple[tuple[str, str], ...]
    head: bytes
    body: bytes
    trailing: bytes
    bare_lf: bool

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        return _first_header(self.headers, name)

    def header_all(self, name: str) -> list[str]:
        """Every value of header ``name`` (case-insensitive), in order."""
        return _all_headers(self.headers, name)


# --------------------------------------------------------------------------------------------
# Small helpers


def _quote(data: bytes, limit: int = 120) -> str:
    return f"'{escape(data, limit)}'"


def _preview(data: bytes, size: int = 32) -> str:
    """The first ``size`` bytes, escaped and quoted, with ``…`` when there is more."""
    more = "…" if len(data) > size else ""
    return f"'{escape(data[:size], size)}{more}'"


def _has_bare_lf(head: bytes) -> bool:
    return any(i == 0 or head[i - 1] != 0x0D for i, b in enumerate(head) if b == 0x0A)


def _convert_headers(headers: Iterable[tuple[bytes, bytes]]) -> tuple[tuple[str, str], ...]:
    return tuple((name.decode("ascii"), value.decode("latin-1")) for name, value in headers)


def _where(eof: bool) -> str:
    return "before the connection closed" if eof else "and the connection is still open"


def _bytes_in_message(message: str) -> bytes | None:
    """The bytes literal h11 puts in messages like ``illegal header line: bytearray(b'...')``."""
    match = _BYTES_LITERAL.search(message)
    if match is None:
        return None
    try:
        value = ast.literal_eval(match.group(0))
    except (ValueError, SyntaxError):
        return None
    return value if isinstance(value, bytes) else None


def _tls_hint(data: bytes) -> str:
    return " (this looks like a TLS handshake, not plain HTTP)" if data[:1] == b"\x16" else ""


# --------------------------------------------------------------------------------------------
# Turning h11's complaints into reasons


def _status_line_hint(line: bytes) -> str:
    parts = line.split(b" ", 2)
    if not _HTTP_VERSION.fullmatch(parts[0]):
        return " (the version must be written like 'HTTP/1.1', in upper case)"
    if len(parts) < 2 or not _STATUS_CODE.fullmatch(parts[1]):
        return " (the status code must be exactly 3 digits, after a single space)"
    if _CONTROL.search(line):
        return " (the reason phrase contains a control character, such as a stray \\r)"
    return ""


def _request_line_hint(line: bytes) -> str:
    if line[:1] in (b" ", b"\t"):
        return " (the line must not start with whitespace)"
    parts = line.split(b" ")
    if len(parts) == 2 and parts[1]:
        return " (no HTTP version: this is an HTTP/0.9-style request line; end it with ' HTTP/1.1')"
    if len(parts) != 3 or not all(parts):
        return (
            " (it must be exactly three parts separated by single spaces; "
            "spaces inside the path must be written %20)"
        )
    if not _TOKEN.fullmatch(parts[0]):
        return " (the method contains a character that is not allowed)"
    if not _HTTP_VERSION.fullmatch(parts[2]):
        return " (the version must be written like 'HTTP/1.1', in upper case)"
    return " (the target contains a control or non-ASCII character)"


def _header_line_hint(line: bytes) -> str:
    if b":" not in line:
        return " (there is no ':' in it)"
    name, _, value = line.partition(b":")
    if not name:
        return " (there is nothing before the ':')"
    if name != name.rstrip(b" \t"):
        return " (no whitespace is allowed between the header name and the ':')"
    if not _TOKEN.fullmatch(name):
        return " (the header name contains a character that is not allowed in names)"
    if _CONTROL.search(value):
        return " (the value contains a control character, such as a stray \\r)"
    return ""


def _translate(message: str, kind: str, data: bytes) -> str:
    """A student-readable reason for an h11 complaint ``message`` about a ``kind`` ("request"...)."""
    quoted = _bytes_in_message(message)
    if message.startswith("illegal status line"):
        if quoted is None:
            return f"malformed status line: {message}"
        return (
            f"malformed status line {_quote(quoted)}: expected 'HTTP/1.1 <3-digit code> <reason>'"
            f"{_status_line_hint(quoted)}"
        )
    if message.startswith("illegal request line"):
        if quoted is None:
            return (
                f"the {kind} starts with {_preview(data)}: the first line must start with a method such "
                f"as 'GET', with no whitespace or control characters before it{_tls_hint(data)}"
            )
        return (
            f"malformed request line {_quote(quoted)}: expected 'METHOD /path HTTP/1.1'"
            f"{_request_line_hint(quoted)}"
        )
    if message.startswith("illegal header line"):
        if quoted is None:
            return f"malformed header line: {message}"
        return (
            f"malformed header line {_quote(quoted)}: header lines must look like 'Name: value'"
            f"{_header_line_hint(quoted)}"
        )
    if message.startswith("illegal chunk header"):
        shown = _quote(quoted) if quoted is not None else "(unreadable)"
        return (
            f"malformed chunk-size line {shown}: each chunk must start with its size in hexadecimal "
            "followed by \\r\\n"
        )
    if message.startswith("malformed chunk footer"):
        return (
            "chunk data not followed by \\r\\n: the chunk is longer than its declared size, or the "
            "\\r\\n after the chunk data is missing"
        )
    if message in ("no request line received", "no response line received"):
        first = "request line (e.g. 'GET / HTTP/1.1')" if kind == "request" else "status line"
        return f"the {kind} starts with an empty line: the {first} must come first"
    if message == "continuation line at start of headers":
        return (
            "the first header line starts with a space or tab (an obsolete line folding with nothing "
            "to continue); header lines must start with the header name"
        )
    if message == "Missing mandatory Host: header":
        return "missing Host header in an HTTP/1.1 request: HTTP/1.1 requires a 'Host: <server>' header line"
    if message == "Found multiple Host: headers":
        return "more than one Host header: a request must have exactly one"
    if message == "conflicting Content-Length headers":
        return f"conflicting Content-Length headers: the {kind} gives several different body lengths"
    if message == "bad Content-Length":
        return "invalid Content-Length value: it must be a non-negative decimal number of bytes"
    if message.startswith("Only Transfer-Encoding: chunked"):
        return "unsupported Transfer-Encoding: only 'chunked' is understood"
    if message.startswith("multiple Transfer-Encoding"):
        return "more than one Transfer-Encoding header"
    if message == "Receive buffer too long":
        return (
            f"{kind} head too large: more than {_MAX_HEAD} bytes arrived without the blank line "
            "(\\r\\n\\r\\n) that ends the headers"
        )
    if "status_code should be in range" in message:
        code = message.rsplit(" ", 1)[-1]
        return f"invalid status code {code}: it must be between 100 and 999"
    if "_SWITCH_UPGRADE" in message:
        return "unexpected '101 Switching Protocols' response: the request did not ask to switch protocols"
    return f"invalid HTTP {kind}: {message}"


# --------------------------------------------------------------------------------------------
# Responses


@dataclass
class _ResponseProgress:
    """How far h11 got through a response, and what it found."""

    informational: list[int] = field(default_factory=list)
    consumed: int = 0  # bytes of heads consumed so far
    response: h11.Response | None = None
    head: bytes = b""
    framing: Framing = "none"
    content_length: int | None = None
    body: bytearray = field(default_factory=bytearray)
    done: bool = False
    trailing: bytes = b""
    error: str | None = None


def _response_framing(method: str, response: h11.Response) -> tuple[Framing, int | None]:
    lengths = [value for name, value in response.headers if name == b"content-length"]
    content_length = int(lengths[0]) if lengths else None
    status = response.status_code
    if status in (204, 304) or method == "HEAD" or (method == "CONNECT" and 200 <= status < 300):
        return "none", content_length
    if any(name == b"transfer-encoding" for name, _ in response.headers):
        return "chunked", content_length
    if content_length is not None:
        return "content-length", content_length
    return "eof", None


def _feed_response(data: bytes, method: str, eof: bool) -> _ResponseProgress:
    conn = h11.Connection(our_role=h11.CLIENT)
    try:
        conn.send(h11.Request(method=method, target="/", headers=[("Host", _SYNTHETIC_HOST)]))
    except h11.LocalProtocolError:
        raise ValueError(f"invalid request method {method!r}") from None
    conn.send(h11.EndOfMessage())
    if data:
        conn.receive_data(data)
    if eof:
        conn.receive_data(b"")
    progress = _ResponseProgress()
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            progress.error = str(exc)
            return progress
        if isinstance(event, (h11.InformationalResponse, h11.Response)):
            # h11 has just consumed this head: what is left in its buffer comes after it.
            end = len(data) - len(conn.trailing_data[0])
            head = data[progress.consumed : end]
            progress.consumed = end
            if isinstance(event, h11.InformationalResponse):
                progress.informational.append(event.status_code)
            else:
                progress.response = event
                progress.head = head
                progress.framing, progress.content_length = _response_framing(method, event)
        elif isinstance(event, h11.Data):
            progress.body += event.data
        elif isinstance(event, h11.EndOfMessage):
            progress.done = True
            progress.trailing = conn.trailing_data[0]
            return progress
        else:  # NEED_DATA, PAUSED, ConnectionClosed: nothing more to learn
            return progress


def _status_line_problem(data: bytes) -> str | None:
    """A reason when ``data`` cannot be the start of a status line, else None."""
    start = data[:5]
    if not start or b"HTTP/".startswith(start):
        return None
    if data.startswith((b"\r\n", b"\n")):
        return (
            "the response starts with an empty line: the status line (e.g. 'HTTP/1.1 200 OK') must come first"
        )
    if b"HTTP/".startswith(start.upper()):
        return (
            "the status line must start with 'HTTP/' in upper case, but the response starts with "
            f"{_preview(data)}"
        )
    if data[:1] in (b" ", b"\t"):
        return (
            f"the response starts with whitespace: {_preview(data)}; the status line must start at the "
            "very first byte"
        )
    return (
        f"no HTTP status line: the response starts with {_preview(data)} "
        f"(HTTP/0.9-style or missing status line){_tls_hint(data)}"
    )


def _response_unfinished(progress: _ResponseProgress, data: bytes, eof: bool) -> str:
    if progress.response is None:
        if not data:
            return (
                "no response: the connection closed without sending any bytes"
                if eof
                else "no response received (0 bytes)"
            )
        rest = data[progress.consumed :]
        if progress.informational and not rest:
            codes = ", ".join(str(code) for code in progress.informational)
            return f"only an interim {codes} response arrived {_where(eof)}: the final response is missing"
        return (
            f"response head not finished: no blank line (\\r\\n\\r\\n) after the headers {_where(eof)}; "
            f"received {len(rest)} bytes: {_quote(rest)}"
        )
    body = len(progress.body)
    if progress.framing == "content-length":
        return (
            f"body shorter than Content-Length: expected {progress.content_length} bytes, "
            f"got {body} {_where(eof)}"
        )
    if progress.framing == "chunked":
        after_head = data[progress.consumed :]
        size_line_end = after_head.find(b"\n")
        hint = ""
        if size_line_end >= 0 and after_head[size_line_end - 1 : size_line_end] != b"\r":
            hint = " (chunk-size lines and chunk data must each end with \\r\\n, but a bare \\n was found)"
        return (
            "chunked body not finished: it must end with a zero-size chunk and an empty line "
            f"('0\\r\\n\\r\\n'), but that did not arrive {_where(eof)}{hint}"
        )
    return (
        "the response has neither Content-Length nor Transfer-Encoding: chunked, so its body ends only "
        f"when the server closes the connection, but the connection is still open ({body} body bytes so far)"
    )


_CLOSED_MESSAGES = (
    "peer unexpectedly closed connection",
    "peer closed connection without sending complete message body",
    "can't handle event type ConnectionClosed",
)


def _response_failure(progress: _ResponseProgress, data: bytes, eof: bool) -> str:
    if progress.error is None:
        return _response_unfinished(progress, data, eof)
    if progress.error.startswith(_CLOSED_MESSAGES):
        return _response_unfinished(progress, data, eof=True)
    return _translate(progress.error, "response", data)


def parse_response(data: bytes, *, request_method: str = "GET", eof: bool = True) -> HttpResponse:
    """Parse one complete response, as received on a connection.

    ``eof=True`` means the peer closed the connection after ``data`` (needed to end a body that has
    neither Content-Length nor chunked framing). ``request_method`` matters for HEAD (no body). Bytes
    after the end of the message go to ``trailing``. Raises :class:`HttpParseError` when the response
    is malformed or cut short (and ValueError when ``request_method`` is not a valid method name).
    """
    method = request_method.upper()
    problem = _status_line_problem(data)
    if problem is not None:
        raise HttpParseError(problem)
    progress = _feed_response(data, method, eof)
    if progress.error is not None or not progress.done or progress.response is None:
        raise HttpParseError(_response_failure(progress, data, eof))
    response = progress.response
    return HttpResponse(
        status=response.status_code,
        reason=response.reason.decode("latin-1"),
        http_version=response.http_version.decode("ascii"),
        headers=_convert_headers(response.headers),
        body=bytes(progress.body),
        framing=progress.framing,
        trailing=progress.trailing,
        content_length=progress.content_length,
        head=progress.head,
        bare_lf=_has_bare_lf(progress.head),
        informational=tuple(progress.informational),
    )


class ResponseWatcher:
    """Tells, as bytes arrive, whether a whole response is in: one h11 parser per read, fed only what is new
    (re-parsing the whole buffer at each arrival costs quadratic time on a large body).

    ``complete(buffer)`` takes the buffer read so far, which only grows between calls; it has the meaning of
    :func:`response_complete` on that buffer.
    """

    def __init__(self, request_method: str = "GET") -> None:
        self.conn = h11.Connection(our_role=h11.CLIENT)
        self.conn.send(h11.Request(method=request_method.upper(), target="/", headers=[("Host", _SYNTHETIC_HOST)]))
        self.conn.send(h11.EndOfMessage())
        self.seen = 0
        self.state: bool | None = None  # True: complete; False: malformed (never completes); None: not yet

    def complete(self, buffer: bytes) -> bool:
        if self.state is not None:
            return self.state
        if len(buffer) > self.seen:
            self.conn.receive_data(bytes(buffer[self.seen:]))
            self.seen = len(buffer)
        while True:
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError:
                self.state = False
                return False
            if isinstance(event, h11.EndOfMessage):
                self.state = True
                return True
            if event is h11.NEED_DATA or event is h11.PAUSED or isinstance(event, h11.ConnectionClosed):
                return False


def response_complete(data: bytes, request_method: str = "GET") -> bool:
    """True once ``data`` holds a whole response whose end does not depend on the connection closing.

    That is: Content-Length satisfied, chunked body finished, or a response without a body. A body
    delimited by connection close is never complete here. Malformed data gives False too (no more
    bytes will complete it; :func:`parse_response` explains what is wrong).
    """
    return ResponseWatcher(request_method).complete(data)


# --------------------------------------------------------------------------------------------
# Requests


def request_head_complete(data: bytes) -> bool:
    """True once the blank line ending a request head has arrived (``\\r\\n\\r\\n`` or ``\\n\\n``).

    Uses h11's own rule, so a head that starts with an empty line also counts as ended (and is then
    rejected by :func:`parse_request`).
    """
    return data.startswith((b"\n", b"\r\n")) or _BLANK_LINE.search(data) is not None


def parse_request(data: bytes) -> HttpRequest:
    """Parse one request as a server would: head, body (by Content-Length or chunked), trailing bytes.

    Raises :class:`HttpParseError` when the request is malformed or not complete in ``data``.
    """
    if not data:
        raise HttpParseError("no request received (0 bytes)")
    conn = h11.Connection(our_role=h11.SERVER)
    conn.receive_data(data)
    request: h11.Request | None = None
    head = b""
    body = bytearray()
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise HttpParseError(_translate(str(exc), "request", data)) from exc
        if isinstance(event, h11.Request):
            request = event
            head = data[: len(data) - len(conn.trailing_data[0])]
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage) and request is not None:
            return HttpRequest(
                method=request.method.decode("ascii"),
                target=request.target.decode("latin-1"),
                http_version=request.http_version.decode("ascii"),
                headers=_convert_headers(request.headers),
                head=head,
                body=bytes(body),
                trailing=conn.trailing_data[0],
                bare_lf=_has_bare_lf(head),
            )
        else:
            raise HttpParseError(_request_unfinished(request, data, len(body)))


def _request_unfinished(request: h11.Request | None, data: bytes, body: int) -> str:
    if request is None:
        hint = ""
        if data.endswith(b"\n"):
            hint = " (the last line is complete, but the empty line that ends the head is missing)"
        return (
            "request head not finished: no blank line (\\r\\n\\r\\n) after the headers; "
            f"received {len(data)} bytes: {_quote(data)}{hint}"
        )
    if any(name == b"transfer-encoding" for name, _ in request.headers):
        return (
            "chunked request body not finished: it must end with a zero-size chunk and an empty line "
            "('0\\r\\n\\r\\n')"
        )
    lengths = [value for name, value in request.headers if name == b"content-length"]
    expected = lengths[0].decode("ascii") if lengths else "?"
    return f"request body shorter than Content-Length: expected {expected} bytes, got {body}"


def line_ending_problems(head: bytes) -> list[str]:
    """Describe each line of ``head`` that does not end in ``\\r\\n`` properly.

    For example ``"line 2 ends with \\n, not \\r\\n: 'Host: x\\n'"``; a ``\\r`` inside a line and a last
    line with no line ending at all are reported too. Lines are numbered from 1.
    """
    problems: list[str] = []
    lines = head.split(b"\n")
    for number, content in enumerate(lines, start=1):
        is_last = number == len(lines)
        if is_last and not content:
            break  # head ended with \n: nothing after it
        line = content if is_last else content + b"\n"
        body = content[:-1] if content.endswith(b"\r") else content
        if is_last:
            problems.append(f"line {number} has no line ending: {_quote(line)}")
        elif not content.endswith(b"\r"):
            problems.append(f"line {number} ends with \\n, not \\r\\n: {_quote(line)}")
        if b"\r" in body:
            problems.append(f"line {number} has a stray \\r inside it: {_quote(line)}")
    return problems
