"""The app's typed keys, in their own module so handlers and app set-up share them."""

from __future__ import annotations

from aiohttp import web

from .reqlog import RequestLog
from .state import MockState

MOCK_STATE: web.AppKey[MockState] = web.AppKey("mock_state", MockState)
REQUEST_LOG: web.AppKey[RequestLog] = web.AppKey("request_log", RequestLog)
