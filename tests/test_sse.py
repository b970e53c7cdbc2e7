"""gate.core.sse: one byte stream, cut anywhere, gives the same events."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gate.core.sse import DONE, Event, SSEParser, is_done

TERMINATORS = (b"\n", b"\r\n", b"\r")


# --- a model of a stream: events we build, so we know what must come out ----------


@dataclass(frozen=True)
class ModelEvent:
    raw: bytes
    data: bytes | None
    is_comment: bool


@dataclass(frozen=True)
class ModelStream:
    events: tuple[ModelEvent, ...]
    tail: bytes  # an unfinished event after the last complete one

    @property
    def wire(self) -> bytes:
        return b"".join(e.raw for e in self.events) + self.tail


def _clean(value: bytes) -> bytes:
    return value.replace(b"\r", b"").replace(b"\n", b"")


short_values = st.one_of(
    st.binary(max_size=24).map(_clean),
    st.just(b""),
    st.sampled_from([b" ", b"  lead", b":", b"[DONE]", b'{"a": 1}', "é✓".encode()]),
)
long_values = st.integers(min_value=100, max_value=600).map(lambda k: b"x" * k)

Line = tuple[bytes, bytes | None, bool]  # line without terminator, its data value, comment?


def line_strategy(values: st.SearchStrategy[bytes]) -> st.SearchStrategy[Line]:
    data_lines = st.builds(
        lambda sep, v: (b"data" + sep + v, v[1:] if sep == b":" and v[:1] == b" " else v, False),
        st.sampled_from([b":", b": "]),
        values,
    )
    bare_data_lines = st.just((b"data", b"", False))  # no colon: data with an empty value
    comment_lines = values.map(lambda v: (b":" + v, None, True))
    other_field_lines = st.builds(
        lambda name, v: (name + b": " + v, None, False),
        st.sampled_from([b"event", b"id", b"retry", b"dat", b"datax", b"x"]),
        values,
    )
    return st.one_of(data_lines, data_lines, bare_data_lines, comment_lines, other_field_lines)


short_lines = line_strategy(short_values)
any_lines = line_strategy(st.one_of(short_values, short_values, short_values, long_values))


@st.composite
def model_events(draw: st.DrawFn, lines: st.SearchStrategy[Line]) -> ModelEvent:
    body = draw(st.lists(st.tuples(lines, st.sampled_from(TERMINATORS)), max_size=4))
    blank = draw(st.sampled_from(TERMINATORS))
    if body and body[-1][1] == b"\r" and blank == b"\n":
        blank = b"\r\n"  # "\r" + "\n" would be one line end, not a line end and a blank line
    raw = b"".join(line + end for (line, _, _), end in body) + blank
    datas = [v for (_, v, comment), _ in body if v is not None]
    has_field = any(not comment for (_, _, comment), _ in body)
    has_comment = any(comment for (_, _, comment), _ in body)
    return ModelEvent(
        raw=raw,
        data=b"\n".join(datas) if datas else None,
        is_comment=has_comment and not has_field,
    )


@st.composite
def model_streams(
    draw: st.DrawFn, lines: st.SearchStrategy[Line] = any_lines, max_events: int = 8
) -> ModelStream:
    events: list[ModelEvent] = []
    for event in draw(st.lists(model_events(lines), max_size=max_events)):
        if event.raw == b"\n" and events and events[-1].raw.endswith(b"\r"):
            event = ModelEvent(b"\r\n", None, False)  # same reason as above
        events.append(event)
    # The tail: whole non-blank lines, then maybe part of one. Nothing in it ends an
    # event, and its first byte is no line terminator, so it cannot extend the last one.
    tail_lines = draw(st.lists(st.tuples(lines, st.sampled_from(TERMINATORS)), max_size=2))
    tail = b"".join(line + end for (line, _, _), end in tail_lines)
    tail += draw(st.one_of(st.just(b""), lines.map(lambda line: line[0])))
    return ModelStream(tuple(events), tail)


def feed_pieces(pieces: list[bytes]) -> tuple[SSEParser, list[Event]]:
    parser = SSEParser()
    events: list[Event] = []
    for piece in pieces:
        events.extend(parser.feed(piece))
    return parser, events


def assert_matches(stream: ModelStream, pieces: list[bytes]) -> None:
    assert b"".join(pieces) == stream.wire
    parser, events = feed_pieces(pieces)
    assert b"".join(e.raw for e in events) + parser.pending == stream.wire
    events += parser.flush()
    assert parser.pending == stream.tail
    assert [e.raw for e in events] == [m.raw for m in stream.events]
    assert [e.data for e in events] == [m.data for m in stream.events]
    assert [e.is_comment for e in events] == [m.is_comment for m in stream.events]


def cut(wire: bytes, offsets: list[int]) -> list[bytes]:
    bounds = [0, *sorted(offsets), len(wire)]
    return [wire[a:b] for a, b in itertools.pairwise(bounds)]


# --- properties --------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_one_feed_byte_by_byte_and_random_splits_give_the_model_events(
    data: st.DataObject,
) -> None:
    stream = data.draw(model_streams())
    wire = stream.wire
    assert_matches(stream, [wire])
    assert_matches(stream, [wire[i : i + 1] for i in range(len(wire))])
    for _ in range(3):
        offsets = data.draw(st.lists(st.integers(0, len(wire)), max_size=30))
        assert_matches(stream, cut(wire, offsets))


@settings(max_examples=100, deadline=None)
@given(model_streams(short_lines, max_events=4))
def test_split_at_every_offset(stream: ModelStream) -> None:
    wire = stream.wire
    for offset in range(len(wire) + 1):
        assert_matches(stream, [wire[:offset], wire[offset:]])


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_events_never_depend_on_the_split(data: st.DataObject) -> None:
    """Arbitrary bytes, not only well-formed events: still split-invariant."""
    tokens = [b"\r", b"\n", b"\r\n", b":", b"data: x", b"a", b" "]
    whole = b"".join(data.draw(st.lists(st.sampled_from(tokens), max_size=40)))
    offsets = data.draw(st.lists(st.integers(0, len(whole)), max_size=10))
    reference, expected = feed_pieces([whole])
    expected += reference.flush()
    parser, events = feed_pieces(cut(whole, offsets))
    assert b"".join(e.raw for e in events) + parser.pending == whole
    events += parser.flush()
    assert events == expected
    assert parser.pending == reference.pending


# --- examples ----------------------------------------------------------------------


def _chunk(delta: dict[str, object] | None = None, **extra: object) -> bytes:
    body: dict[str, object] = {"id": "gen-1", "object": "chat.completion.chunk", **extra}
    if delta is not None:
        body["choices"] = [{"index": 0, "delta": delta}]
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def test_openrouter_stream() -> None:
    usage = {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12, "cost": 0.0001}
    wire = (
        b": OPENROUTER PROCESSING\n\n"
        + _chunk({"role": "assistant", "content": "Hel"})
        + _chunk({"content": "lo"})
        + b": OPENROUTER PROCESSING\n\n"
        + _chunk(choices=[], usage=usage)
        + b"data: [DONE]\n\n"
    )
    parser = SSEParser()
    events = parser.feed(wire)
    assert parser.pending == b""
    assert b"".join(e.raw for e in events) == wire
    assert [e.is_comment for e in events] == [True, False, False, True, False, False]
    assert events[0].raw == b": OPENROUTER PROCESSING\n\n"
    assert events[0].data is None
    assert [is_done(e) for e in events] == [False] * 5 + [True]

    payloads = [json.loads(e.data) for e in events if e.data is not None and not is_done(e)]
    assert [p["choices"][0]["delta"]["content"] for p in payloads[:2]] == ["Hel", "lo"]
    assert payloads[2]["choices"] == []
    assert payloads[2]["usage"] == usage


def test_chunks_of_several_events_and_events_over_several_chunks() -> None:
    parser = SSEParser()
    assert [e.data for e in parser.feed(b"data: a\n\ndata: b\n\ndata: c")] == [b"a", b"b"]
    assert parser.pending == b"data: c"
    assert parser.feed(b"c") == []
    assert parser.feed(b"\n") == []
    assert [e.raw for e in parser.feed(b"\ndata: d\n")] == [b"data: cc\n\n"]
    assert parser.pending == b"data: d\n"


def test_crlf_split_between_feeds() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"\n\r") == []  # "\r" may still become "\r\n"
    [event] = parser.feed(b"\n")
    assert event.raw == b"data: a\r\n\r\n"
    assert event.data == b"a"
    assert parser.pending == b""
    # and the same bytes at once
    [again] = SSEParser().feed(b"data: a\r\n\r\n")
    assert again == event


def test_lone_cr_is_settled_by_the_next_byte_or_flush() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\r\r") == []  # the blank line may be "\r" or "\r\n"
    [event] = parser.feed(b"data: b\r\r")
    assert event.raw == b"data: a\r\r"
    assert parser.pending == b"data: b\r\r"
    [last] = parser.flush()
    assert last.data == b"b"
    assert parser.pending == b""


def test_trailing_incomplete_event_stays_pending() -> None:
    parser = SSEParser()
    [event] = parser.feed(b"data: one\n\ndata: two\ndata: thr")
    assert event.data == b"one"
    assert parser.pending == b"data: two\ndata: thr"
    assert parser.flush() == []
    assert parser.pending == b"data: two\ndata: thr"


def test_data_field_values() -> None:
    def data(raw: bytes) -> bytes | None:
        [event] = SSEParser().feed(raw)
        return event.data

    assert data(b"data:x\n\n") == b"x"
    assert data(b"data: x\n\n") == b"x"
    assert data(b"data:  x\n\n") == b" x"  # only one space is dropped
    assert data(b"data: x \n\n") == b"x "
    assert data(b"data\n\n") == b""
    assert data(b"data:\n\n") == b""
    assert data(b"data: a\ndata: b\r\ndata:c\r\n\n") == b"a\nb\nc"
    assert data(b"data: a\ndata\ndata: b\n\n") == b"a\n\nb"
    assert data(b"event: ping\nid: 7\n\n") is None
    assert data(b'data: {"a":1}\n: note\nevent: x\n\n') == b'{"a":1}'
    assert data(b"\n") is None


def test_is_comment() -> None:
    def event(raw: bytes) -> Event:
        [only] = SSEParser().feed(raw)
        return only

    assert event(b": keep-alive\n\n").is_comment
    assert event(b":\n\n").is_comment
    assert event(b": a\r\n: b\r\n\r\n").is_comment
    assert not event(b": a\ndata: x\n\n").is_comment
    assert not event(b"event: ping\n\n").is_comment
    assert not event(b"data: x\n\n").is_comment
    assert not event(b"\n").is_comment  # a stray blank line: no lines at all


def test_is_done() -> None:
    def done(raw: bytes) -> bool:
        [event] = SSEParser().feed(raw)
        return is_done(event)

    assert DONE == b"[DONE]"
    assert done(b"data: [DONE]\n\n")
    assert done(b"data:[DONE]\r\n\r\n")
    assert not done(b'data: {"done": true}\n\n')
    assert not done(b": [DONE]\n\n")
    assert not done(b"event: [DONE]\n\n")


def test_parse_is_lazy_and_cached() -> None:
    [event] = SSEParser().feed(b"data: x\n\n")
    assert event._comment is None  # nothing parsed until asked
    assert event.data is event.data
    assert event._comment is False


@pytest.mark.parametrize("terminator", TERMINATORS)
@pytest.mark.parametrize(("total", "line_size"), [(5 << 20, 5 << 20), (1 << 20, 32)])
def test_megabytes_in_one_kilobyte_pieces_is_linear(
    terminator: bytes, total: int, line_size: int
) -> None:
    """Each feed searches only the bytes not searched before, so total work is linear.

    Work is counted as the parser's own bookkeeping says it searches: from the resume
    offset `_search` to the end of what it holds. Rescanning from the event (or line)
    start on every piece would count about 5 MB x 5000 pieces. One 5 MB line takes
    the fast path; 1 MB of short lines with "\r" in every piece takes the general one.
    """
    value = b"y" * (line_size - 6)
    count = total // line_size
    event = (b"data: " + value + terminator) * count + terminator
    wire = event + b"data: next" + terminator
    size = 1024
    parser = SSEParser()
    events: list[Event] = []
    scanned = 0
    for start in range(0, len(wire), size):
        piece = wire[start : start + size]
        held = start - sum(len(e.raw) for e in events)  # == len(parser.pending)
        assert held - parser._search <= 1  # at most a held-back "\r" is looked at again
        scanned += held + len(piece) - parser._search
        events.extend(parser.feed(piece))
    assert scanned <= len(wire) + len(wire) // size + 1
    [only] = events
    assert only.raw == event
    assert only.data == b"\n".join([value] * count)
    assert parser.pending == b"data: next" + terminator


def test_pending_is_compacted() -> None:
    parser = SSEParser()
    for _ in range(1000):
        parser.feed(b"data: chunk\n\ndata: ha")
        parser.feed(b"lf\n\n")
    assert parser.pending == b""
    assert len(parser._buf) == 0


def test_feed_accepts_bytes_like_and_empty() -> None:
    parser = SSEParser()
    assert parser.feed(b"") == []
    [event] = parser.feed(bytearray(b"data: x\n\n"))  # type: ignore[arg-type]
    assert type(event.raw) is bytes
    assert event.data == b"x"
