"""Reading an SSE answer as a client does, and checking every chunk arrived in order.

The mock's content chunks are `token_text(0)`, `token_text(1)`, ... so the expected
stream is known exactly: each content chunk once, in order, then the finish chunk,
the usage chunk (when asked for) and `data: [DONE]`, and nothing after it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from mock_upstream.wire import token_text


@dataclass(slots=True)
class StreamCheck:
    expected_chunks: int
    want_usage: bool
    first_chunk_at: float | None = None
    contents: list[str] = field(default_factory=list)
    done: bool = False
    usage_seen: bool = False
    notes: list[str] = field(default_factory=list)
    _buffer: bytes = b""

    def feed(self, data: bytes, now: float) -> None:
        """Take bytes as they arrive; `now` is when they arrived."""
        self._buffer += data
        if b"\r" in self._buffer:
            self._buffer = self._buffer.replace(b"\r\n", b"\n")
        *events, self._buffer = self._buffer.split(b"\n\n")
        for event in events:
            self._event(event, now)

    def _event(self, block: bytes, now: float) -> None:
        data = [ln[5:].lstrip() for ln in block.split(b"\n") if ln.startswith(b"data:")]
        if not data:
            return  # a comment (": OPENROUTER PROCESSING") or an empty block
        payload = b"\n".join(data)
        if self.done:
            self.notes.append("an event after [DONE]")
            return
        if payload == b"[DONE]":
            self.done = True
            return
        try:
            chunk = json.loads(payload)
        except ValueError:
            self.notes.append(f"unreadable event {payload[:60]!r}")
            return
        if not isinstance(chunk, dict):
            self.notes.append("an event that is not a JSON object")
            return
        if chunk.get("error") is not None:
            self.notes.append(f"error event: {chunk['error']}")
        if chunk.get("usage") is not None:
            self.usage_seen = True
        for choice in chunk.get("choices") or []:
            content = (choice.get("delta") or {}).get("content")
            if content:
                if self.first_chunk_at is None:
                    self.first_chunk_at = now
                self.contents.append(content)

    def problems(self) -> list[str]:
        """Empty when the stream was whole and in order."""
        found = list(self.notes)
        if self._buffer.strip():
            found.append("a torn event at the end of the stream")
        expected = [token_text(i) for i in range(self.expected_chunks)]
        if self.contents != expected:
            for index, (want, got) in enumerate(zip(expected, self.contents, strict=False)):
                if want != got:
                    found.append(f"chunk {index}: expected {want!r}, got {got!r} (reordered)")
                    break
            if len(self.contents) != len(expected):
                found.append(f"{len(self.contents)} content chunks, expected {len(expected)}")
        if self.want_usage and not self.usage_seen:
            found.append("no usage chunk")
        if not self.done:
            found.append("no data: [DONE]")
        return found
