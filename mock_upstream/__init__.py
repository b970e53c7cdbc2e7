"""An OpenRouter look-alike for tests and demos: `python -m mock_upstream --port 9000`.

Serves `/api/v1/...` and `/v1/...`: `POST chat/completions` (JSON or OpenRouter-style
SSE), `GET models`, `GET key`, `GET generation?id=`. Cost = `PRICES` x tokens, exact
`Decimal`s. Misbehaviour is queued as `Fault`s (one per chat request, FIFO), either on
`app[MOCK_STATE].faults` in-process or with the control endpoints of a subprocess:
`POST /_mock/faults` (a list of Fault field objects), `POST /_mock/config`,
`POST /_mock/reset`, `GET /_mock/stats`. Console mode: the same server answers the
JetPatch console's `POST /api/gate/spend` and `GET /api/gate/budgets`, set up and read
through `/_mock/console` (see `mock_upstream.console`).
"""

from .app import MOCK_STATE, create_app
from .prices import PRICES, ModelPrice
from .state import Fault, MockState

__all__ = ["MOCK_STATE", "PRICES", "Fault", "MockState", "ModelPrice", "create_app"]
