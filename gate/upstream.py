"""The OpenRouter client: where the gate connects, with which headers, and retries.

The URL comes from the config alone; nothing a client sends changes it, and redirects
are never followed. One pooled `ClientSession` serves every request.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from .config import OpenRouterConfig, RetryConfig

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


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


def backoff_delay(retry: RetryConfig, attempt: int, retry_after: float | None) -> float:
    delay = retry.backoff_seconds * (2**attempt) if retry_after is None else retry_after
    return min(delay, retry.max_backoff_seconds)


@dataclass(frozen=True, slots=True)
class Upstream:
    session: aiohttp.ClientSession
    config: OpenRouterConfig
    retry: RetryConfig
    sleep: Sleep = asyncio.sleep

    def headers(self, authorization: str) -> dict[str, str]:
        return {
            **self.config.headers,
            "Authorization": authorization,
            "Content-Type": "application/json",
        }

    def timeout(self) -> aiohttp.ClientTimeout:
        # No total timeout: a long answer is fine; silence between reads is not.
        return aiohttp.ClientTimeout(
            total=None,
            sock_connect=self.config.connect_timeout_seconds,
            sock_read=self.config.timeout_seconds,
        )

    async def chat(
        self, body: bytes, authorization: str, on_retry: Callable[[int], None] | None = None
    ) -> aiohttp.ClientResponse:
        """POST the chat completion; return the 200 response, unread. Retries what is
        worth retrying; raises UpstreamError or UpstreamUnreachable otherwise."""
        url = self.config.base_url + "/chat/completions"
        attempt = 0
        while True:
            try:
                resp = await self.session.post(
                    url,
                    data=body,
                    headers=self.headers(authorization),
                    allow_redirects=False,
                    timeout=self.timeout(),
                )
            except (aiohttp.ClientError, TimeoutError) as exc:
                if attempt >= self.retry.max_retries:
                    raise UpstreamUnreachable(type(exc).__name__) from None
                await self.sleep(backoff_delay(self.retry, attempt, None))
                attempt += 1
                if on_retry is not None:
                    on_retry(0)
                continue
            if resp.status == 200:
                return resp
            retry_after = retry_after_seconds(resp.headers.get("Retry-After"))
            try:
                error_body = await resp.read()
            except (aiohttp.ClientError, TimeoutError):
                error_body = b""
            finally:
                resp.release()
            if is_retryable(resp.status, retry_after) and attempt < self.retry.max_retries:
                await self.sleep(backoff_delay(self.retry, attempt, retry_after))
                attempt += 1
                if on_retry is not None:
                    on_retry(resp.status)
                continue
            raise UpstreamError(resp.status, error_body, retry_after, attempt + 1)

    async def get_json(
        self, path: str, authorization: str | None, params: Mapping[str, str] | None = None
    ) -> Any:
        """GET a small JSON document (models, key, generation); None on any failure."""
        headers = {"Authorization": authorization} if authorization else {}
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
