"""The OpenRouter client: where the gate connects, with which headers, and retries.

The URL comes from the config alone; nothing a client sends changes it, and redirects
are never followed. One pooled `ClientSession` serves every request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
from yarl import URL

from gate.config import OpenRouterConfig, RetryConfig
from gate.upstream.keystatus import KeyStatus
from gate.upstream.sendmark import sending

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
# Told (status, seconds to the response headers, Retry-After) for every inference attempt that
# got an HTTP answer: metrics and alerts (402, 429 storms) watch upstream through it.
AnswerHook = Callable[[int, float, float | None], None]


class UpstreamError(Exception):
    """Upstream answered an error status (after any retries), before any byte was relayed."""

    def __init__(self, status: int, body: bytes, retry_after: float | None, attempts: int) -> None:
        super().__init__(f"upstream answered {status}")
        self.status = status
        self.body = body
        self.retry_after = retry_after
        self.attempts = attempts


class UpstreamUnreachable(Exception):
    """No answer at all from upstream (connection refused, reset, timed out)."""

    def __init__(self, reason: str, *, timed_out: bool = False) -> None:
        super().__init__(reason)
        self.timed_out = timed_out  # no answer within the timeouts: a 504, not a 502


def retry_after_seconds(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date: treated as absent, the backoff applies
    return seconds if seconds >= 0 else None


def is_retryable(status: int, retry_after: float | None) -> bool:
    """408, 429, 5xx, and a 402 with Retry-After (OpenRouter's transient in-flight limit)."""
    return status in (408, 429) or status >= 500 or (status == 402 and retry_after is not None)


def not_an_answer(status: int) -> bytes:
    """The error body for an upstream status that is neither a completion nor an error."""
    message = f"upstream answered {status} instead of a completion; redirects are not followed"
    return json.dumps({"error": {"message": message}}).encode()


def _utc_now() -> datetime:
    return datetime.now(UTC)


def backoff_delay(retry: RetryConfig, attempt: int, retry_after: float | None) -> float:
    delay = retry.backoff_seconds * (2**attempt) if retry_after is None else retry_after
    return min(delay, retry.max_backoff_seconds)


@dataclass(frozen=True, slots=True)
class Upstream:
    session: aiohttp.ClientSession
    config: OpenRouterConfig
    retry: RetryConfig
    sleep: Sleep = asyncio.sleep
    on_answer: AnswerHook | None = None
    key_status: KeyStatus | None = None  # told when upstream rejects the gate's key

    # Built once per config, not per request: each API's URL (parsed once, not on every
    # POST), the fixed headers and the timeouts.
    _urls: dict[str, URL] = field(init=False, repr=False, compare=False)
    _fixed_headers: dict[str, str] = field(init=False, repr=False, compare=False)
    _timeout: aiohttp.ClientTimeout = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_urls", {})
        object.__setattr__(self, "_fixed_headers", dict(self.config.headers))
        # No total timeout: a long answer is fine; silence between reads is not.
        timeout = aiohttp.ClientTimeout(
            total=None,
            sock_connect=self.config.connect_timeout_seconds,
            sock_read=self.config.timeout_seconds,
        )
        object.__setattr__(self, "_timeout", timeout)

    def headers(
        self, authorization: str, forwarded: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        headers = self._fixed_headers.copy()  # same keys, same order as {**fixed, ...}
        if forwarded:  # an API's own headers (anthropic-version), never the fixed ones'
            for name, value in forwarded.items():
                headers.setdefault(name, value)
        headers["Authorization"] = authorization
        headers["Content-Type"] = "application/json"
        return headers

    def url(self, path: str) -> URL:
        """The upstream URL of an API's path (`/chat/completions`): the config's base URL
        and the gate's own path, never anything a client sent."""
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = URL(self.config.base_url + path)
        return url

    def timeout(self) -> aiohttp.ClientTimeout:
        return self._timeout

    async def chat(
        self,
        body: bytes,
        authorization: str,
        on_retry: Callable[[int], None] | None = None,
        before_send: Callable[[], Awaitable[None]] | None = None,
    ) -> aiohttp.ClientResponse:
        """POST a chat completion (`post` to `/chat/completions`)."""
        return await self.post("/chat/completions", body, authorization, on_retry, before_send)

    async def post(
        self,
        path: str,
        body: bytes,
        authorization: str,
        on_retry: Callable[[int], None] | None = None,
        before_send: Callable[[], Awaitable[None]] | None = None,
        forwarded: Mapping[str, str] | None = None,
    ) -> aiohttp.ClientResponse:
        """POST to an inference API's path; return the 200 response, unread. Retries
        what is worth retrying; raises UpstreamError or UpstreamUnreachable otherwise.
        `before_send` runs once a connection is ready, before the request is written on
        it (gate.upstream.sendmark: the session's SendMarkConnector calls it)."""
        url = self.url(path)
        headers = self.headers(authorization, forwarded)
        attempt = 0
        while True:
            started = time.perf_counter()
            try:
                with sending(before_send):
                    resp = await self.session.post(
                        url,
                        data=body,
                        headers=headers,
                        allow_redirects=False,
                        timeout=self._timeout,
                    )
            except (aiohttp.ClientError, TimeoutError) as exc:
                # Only a connection that was never made is safe to try again: once the
                # body may have reached upstream, a second POST could be billed twice.
                if attempt >= self.retry.max_retries or not isinstance(
                    exc, aiohttp.ClientConnectorError
                ):
                    raise UpstreamUnreachable(
                        type(exc).__name__, timed_out=isinstance(exc, TimeoutError)
                    ) from None
                await self.sleep(backoff_delay(self.retry, attempt, None))
                attempt += 1
                if on_retry is not None:
                    on_retry(0)
                continue
            if self.on_answer is not None:
                retry_after = retry_after_seconds(resp.headers.get("Retry-After"))
                self.on_answer(resp.status, time.perf_counter() - started, retry_after)
            if self.key_status is not None and self.config.api_key is not None:
                self.key_status.saw_chat_status(resp.status, _utc_now)
            if resp.status == 200:
                return resp
            retry_after = retry_after_seconds(resp.headers.get("Retry-After"))
            try:
                error_body = await resp.read()
            except (aiohttp.ClientError, TimeoutError):
                error_body = b""
            finally:
                resp.release()
            if resp.status < 400:  # a redirect (never followed) or some other non-answer
                raise UpstreamError(502, not_an_answer(resp.status), None, attempt + 1)
            if is_retryable(resp.status, retry_after) and attempt < self.retry.max_retries:
                await self.sleep(backoff_delay(self.retry, attempt, retry_after))
                attempt += 1
                if on_retry is not None:
                    on_retry(resp.status)
                continue
            raise UpstreamError(resp.status, error_body, retry_after, attempt + 1)

    async def key_check(self, authorization: str) -> tuple[int | None, Any]:
        """`GET /key`: its status (200: the key works, 401: rejected; None: no answer)
        and its JSON document (the key's limit and usage; None when not JSON)."""
        try:
            async with self.session.get(
                self.config.base_url + "/key",
                headers={**self.config.headers, "Authorization": authorization},
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self.config.connect_timeout_seconds + 10),
            ) as resp:
                raw = await resp.read()
        except (aiohttp.ClientError, TimeoutError):
            return None, None
        try:
            return resp.status, json.loads(raw)
        except ValueError:
            return resp.status, None

    async def get_json(
        self, path: str, authorization: str | None, params: Mapping[str, str] | None = None
    ) -> Any:
        """GET a small JSON document (models, key, generation); None on any failure."""
        headers = dict(self.config.headers)  # fixed headers (a gateway's) on every call
        if authorization:
            headers["Authorization"] = authorization
        try:
            async with self.session.get(
                self.config.base_url + path,
                params=params,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self.config.connect_timeout_seconds + 10),
            ) as resp:
                if resp.status != 200:
                    return None
                return json.loads(await resp.read())
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None

    async def generation(
        self, generation_id: str, authorization: str | None
    ) -> Mapping[str, Any] | None:
        """OpenRouter's record of a generation; it answers 404 for a while after a
        stream ends, so ask a few times with backoff."""
        for attempt in range(self.retry.max_retries + 2):
            found = await self.get_json("/generation", authorization, {"id": generation_id})
            data = found.get("data") if isinstance(found, dict) else None
            if isinstance(data, dict):
                return data
            await self.sleep(backoff_delay(self.retry, attempt, None))
        return None
