"""An OpenRouter look-alike for tests and demos: `python -m mock_upstream --port 9000`.

Serves `/api/v1/...` and `/v1/...`: `POST chat/completions` (JSON or OpenRouter-style
SSE), `POST responses`, `POST messages`, `POST completions`, `POST embeddings` (one small
module each over `engine`), `GET models`, `GET key`, `GET generation?id=`. Cost = `PRICES`
x tokens, exact `Decimal`s. Misbehaviour is queued as `Fault`s (one per inference request
of any API, FIFO), either on
`app[MOCK_STATE].faults` in-process or with the control endpoints of a subprocess:
`POST /_mock/faults` (a list of Fault field objects), `POST /_mock/config`,
`POST /_mock/reset`, `GET /_mock/stats`. Console mode: the same server answers the
JetPatch console's `POST /api/gate/spend` and `GET /api/gate/budgets`, set up and read
through `/_mock/console` (see `mock_upstream.console`).

What OpenRouter's documentation says of the other APIs, and what the mock makes of it:

- Responses API (beta, stateless, `/api/v1/responses`): the Response object's `usage`
  is `input_tokens`, `input_tokens_details.cached_tokens`, `output_tokens`,
  `output_tokens_details.reasoning_tokens`, `total_tokens`, and optionally `cost`,
  `is_byok`, `cost_details` (OpenRouter's SDK model `OpenResponsesUsage`). Streams are
  `event:`/`data:` pairs whose payloads carry `type` and `sequence_number`; the whole
  response with its usage comes in `response.completed`. The docs show no `data: [DONE]`
  after it, so the mock sends none (the openai SDK would stop at one if it came). The
  docs do not say what the response `id` is; the mock uses its generation id
  (`gen-...`), also in `X-Generation-Id`.
- Anthropic Messages (`/api/v1/messages`, base URL `https://openrouter.ai/api`, key as
  `ANTHROPIC_AUTH_TOKEN` -> bearer, or `x-api-key`): Anthropic's own shapes. The docs do
  not say where OpenRouter puts the cost; the mock adds `usage.cost` to the message
  (and to `message_delta`'s cumulative usage). Its id, `msg_...`, is its generation id.
  A user has reported (OpenRouterTeam/docs issue 1) that OpenRouter ends these streams
  with an undocumented `event: data` / `data: [DONE]` after `message_stop`; the
  Anthropic Python SDK would fail to parse that as JSON, so the mock does not send it.
- Completions (`/api/v1/completions`): chat's request rules with `prompt`, answered as
  `text_completion` with `choices[].text`, usage as chat's (cost with
  `usage: {include: true}` or in the stream's usage chunk).
- Embeddings (`/api/v1/embeddings`): OpenRouter serves them; the answer is OpenAI's
  list shape with an optional `id`, and `usage` is `prompt_tokens`, `total_tokens`,
  `cost` (OpenRouter's SDK model `CreateEmbeddingsUsage`). Never streamed. The mock
  prices `openai/text-embedding-3-small` and accepts any priced model.
"""

from .app import MOCK_STATE, create_app
from .prices import PRICES, ModelPrice
from .state import Fault, MockState

__all__ = ["MOCK_STATE", "PRICES", "Fault", "MockState", "ModelPrice", "create_app"]
