"""Incremental Server-Sent Events framing, on bytes, for the relay's side channel.

The gate relays upstream bytes to the client unchanged; this parser only watches them
go by. Feed it each chunk as it arrives and it hands back the events that chunk
completed. Every event keeps its exact bytes (`Event.raw`, terminating blank line
included), so that ``b"".join(e.raw for e in events) + parser.pending`` is always
exactly what was fed.

Framing follows the SSE spec (html.spec.whatwg.org, "event stream interpretation"):
lines end with ``\\r\\n``, ``\\n`` or a lone ``\\r``, in any mix; a blank line ends an
event; lines starting with ``:`` are comments; ``data:`` values drop one leading
space and join with ``\\n``. Lines may be of any length.

Cost: each byte is searched once, in C (``bytes.find`` / a compiled regex); the scan
resumes where the previous chunk stopped, so a long event that arrives in many small
pieces is linear, not quadratic. The common shape (``\\n`` terminators, whole events
per chunk) takes a fast path that slices events straight out of the chunk.

A ``\\r`` as the very last byte fed is ambiguous: it is a line end either alone or
together with a ``\\n`` that has not arrived yet. The parser waits for the next byte
before deciding, so any split of a stream yields the same events. At end of stream,
`SSEParser.flush` settles a trailing ``\\r`` as a line end; `SSEParser.finish` also
ends an event whose blank line never came.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["DONE", "Event", "SSEParser", "is_done"]

DONE: Final = b"[DONE]"

_LF: Final = 0x0A
_CR: Final = 0x0D
_COLON: Final = 0x3A
_TERMINATOR: Final = re.compile(rb"[\r\n]")
_LINE_END: Final = re.compile(rb"\r\n|\r|\n")


class Event:
    """One complete SSE event (or a comment-only / empty block), as it was sent.

    `raw` holds the exact bytes, terminating blank line included. The fields are
    parsed only when `data` or `is_comment` is first asked for, then cached.
    """

    __slots__ = ("_comment", "_data", "raw")

    raw: bytes
    _data: bytes | None
    _comment: bool | None  # None: not parsed yet

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self._data = None
        self._comment = None

    @property
    def data(self) -> bytes | None:
        """The ``data`` field: every data line's value joined with ``\\n``.

        One space after the colon is dropped (``data: x`` and ``data:x`` both give
        ``b"x"``). None when the event has no data line at all (a comment or
        keep-alive); ``b""`` for a present but empty data line.
        """
        if self._comment is None:
            self._parse()
        return self._data

    @property
    def is_comment(self) -> bool:
        """True for a block of comment lines only (``: OPENROUTER PROCESSING``)."""
        if self._comment is None:
            self._parse()
        return bool(self._comment)

    def _parse(self) -> None:
        raw = self.raw
        lines = raw.split(b"\n") if b"\r" not in raw else _LINE_END.split(raw)
        values: list[bytes] = []
        has_field = has_comment = False
        for line in lines:
            if not line:  # the terminating blank line (and split's empty tail)
                continue
            if line[0] == _COLON:
                has_comment = True
                continue
            has_field = True
            name, _, value = line.partition(b":")
            if name == b"data":
                values.append(value[1:] if value[:1] == b" " else value)
        self._data = b"\n".join(values) if values else None
        self._comment = has_comment and not has_field

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return self.raw == other.raw

    def __hash__(self) -> int:
        return hash(self.raw)

    def __repr__(self) -> str:
        raw = self.raw if len(self.raw) <= 80 else self.raw[:77] + b"..."
        return f"Event({raw!r})"


def is_done(event: Event) -> bool:
    """True for the stream's end marker, ``data: [DONE]``.

    Matched as the OpenAI SDK does: the data starts with ``[DONE]``.
    """
    data = event.data
    return data is not None and data.startswith(DONE)


class SSEParser:
    """Cuts a byte stream into `Event`s, chunk by chunk. Never decodes to str.

    State between feeds, as offsets into the pending bytes: `_line` is where the
    unfinished line starts (the lines before it belong to the unfinished event and
    none is blank); `_search` (>= `_line`) is where the search for that line's end
    resumes, since ``pending[_line:_search]`` holds no line terminator.
    """

    __slots__ = ("_buf", "_line", "_search")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._line = 0
        self._search = 0

    @property
    def pending(self) -> bytes:
        """Bytes fed but not yet part of a complete event."""
        return bytes(self._buf)

    def feed(self, chunk: bytes) -> list[Event]:
        """Take the next chunk of the stream; return the events it completed, in order."""
        if not chunk:
            return []
        if type(chunk) is not bytes:
            chunk = bytes(chunk)
        buf = self._buf
        if buf:
            old_len = len(buf)
            buf += chunk
            data: bytes | bytearray = buf
        else:
            old_len = 0
            data = chunk
        # Fast path: nothing left unresolved (no held-back \r) and no \r arriving.
        if self._search == old_len and b"\r" not in chunk:
            ends = self._scan_lf(data)
        else:
            ends = self._scan(data, eof=False)
        if not ends:
            if data is chunk:
                buf += chunk
            return []
        return self._cut(data, ends)

    def flush(self) -> list[Event]:
        """At end of stream: settle a trailing ``\\r`` as a line end.

        Returns the event that completes, if any. An unfinished event stays in
        `pending` (the SSE spec discards it). Feeding after `flush` is not supported.
        """
        if not self._buf:
            return []
        ends = self._scan(self._buf, eof=True)
        return self._cut(self._buf, ends) if ends else []

    def finish(self) -> list[Event]:
        """At end of stream, for a relay: `flush`, then whatever is still pending as one
        last event, its missing blank line added (upstream's last event often lacks it)."""
        events = self.flush()
        if self._buf:
            events.append(Event(bytes(self._buf) + b"\n\n"))
            self._buf.clear()
            self._line = self._search = 0
        return events

    def _cut(self, data: bytes | bytearray, ends: list[int]) -> list[Event]:
        """Slice the events ending at `ends` out of `data`; keep the rest pending."""
        events: list[Event] = []
        start = 0
        last = ends[-1]
        if isinstance(data, bytes):  # straight from the chunk: one copy per event
            for end in ends:
                events.append(Event(data[start:end]))
                start = end
            if last < len(data):
                with memoryview(data) as view:
                    self._buf += view[last:]
        else:  # from the pending buffer
            with memoryview(data) as view:
                for end in ends:
                    events.append(Event(bytes(view[start:end])))
                    start = end
            del data[:last]
        self._line -= last
        self._search -= last
        return events

    def _scan_lf(self, data: bytes | bytearray) -> list[int]:
        """Event ends in `data`, when ``data[_search:]`` holds no ``\\r``."""
        ends: list[int] = []
        n = len(data)
        pos = self._line
        search = self._search
        while pos < n:
            if search == pos and data[pos] == _LF:  # a blank line opens the block
                pos = search = pos + 1
                ends.append(pos)
                continue
            # Every \n ends a line, so the first b"\n\n" is the first blank line.
            found = data.find(b"\n\n", search)
            if found < 0:
                last_lf = data.rfind(b"\n", search, n)
                if last_lf >= 0:
                    pos = last_lf + 1
                search = n
                break
            pos = search = found + 2
            ends.append(pos)
        self._line = pos
        self._search = search
        return ends

    def _scan(self, data: bytes | bytearray, *, eof: bool) -> list[int]:
        """Event ends in `data`, line by line, for any mix of terminators."""
        ends: list[int] = []
        n = len(data)
        pos = self._line
        search = self._search
        while pos < n:
            if search == pos:  # at a line start: is this line blank?
                first = data[pos]
                if first == _LF:
                    pos = search = pos + 1
                    ends.append(pos)
                    continue
                if first == _CR:
                    if pos + 1 < n:
                        pos = search = pos + 2 if data[pos + 1] == _LF else pos + 1
                    elif eof:
                        pos = search = n
                    else:
                        break  # \r\n or lone \r? wait for the next byte
                    ends.append(pos)
                    continue
            match = _TERMINATOR.search(data, search)
            if match is None:
                search = n
                break
            end = match.start()
            if data[end] == _LF:
                pos = search = end + 1
            elif end + 1 < n:
                pos = search = end + 2 if data[end + 1] == _LF else end + 1
            elif eof:
                pos = search = n
            else:
                search = end  # \r\n or lone \r? wait for the next byte
                break
        self._line = pos
        self._search = search
        return ends
