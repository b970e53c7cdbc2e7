"""An alert, as /api/alerts lists it, and its delivery to a Slack- or Discord-compatible
webhook (`gate.ops.alerts` decides what fires)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from gate.context import Gate
from gate.upstream.client import backoff_delay, retry_after_seconds

log = logging.getLogger(__name__)

NAME = "Execwall OR Gate"


@dataclass(slots=True)
class Alert:
    id: int
    ts: str
    kind: str
    message: str
    agent_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    delivery: str = "pending"  # pending | sent | failed | dropped | not_configured
    attempts: int = 0
    error: str | None = None

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "ts": self.ts,
            "kind": self.kind,
            "agent_id": self.agent_id,
            "message": self.message,
            "details": self.details,
            "delivery": self.delivery,
            "attempts": self.attempts,
            "error": self.error,
        }


def webhook_body(alert: Alert, fmt: str) -> dict[str, Any]:
    """Slack's incoming-webhook body, or Discord's (which would ping nobody)."""
    text = f"[{NAME}] {alert.message}"
    if fmt == "discord":
        return {"content": text[:2000], "allowed_mentions": {"parse": []}}
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return {"text": escaped}


async def deliver(gate: Gate, alert: Alert) -> None:
    """Post one alert to the configured webhook, retrying as upstream calls do."""
    retry = gate.config.retry
    for attempt in range(retry.max_retries + 1):
        cfg = gate.config.alerts  # a reload may change the hook between tries
        if cfg.webhook_url is None:
            alert.delivery = "not_configured"
            return
        alert.attempts += 1
        retry_after = None
        try:
            async with gate.upstream.session.post(
                cfg.webhook_url,
                json=webhook_body(alert, cfg.format),
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=cfg.timeout_seconds),
            ) as resp:
                if resp.status < 300:
                    alert.delivery, alert.error = "sent", None
                    return
                alert.error = f"webhook answered {resp.status}"
                retry_after = retry_after_seconds(resp.headers.get("Retry-After"))
                if resp.status < 500 and resp.status not in (408, 429):
                    break  # a wrong URL or body: trying again will not help
        except (aiohttp.ClientError, TimeoutError) as exc:
            alert.error = f"webhook unreachable ({type(exc).__name__})"
        if attempt < retry.max_retries:
            await asyncio.sleep(backoff_delay(retry, attempt, retry_after))
    alert.delivery = "failed"
    log.warning("alert %d (%s) not delivered: %s", alert.id, alert.kind, alert.error)
