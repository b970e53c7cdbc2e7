"""OpenRouter: the client (where the gate connects, retries), the key's status and balance,
and the price table."""
