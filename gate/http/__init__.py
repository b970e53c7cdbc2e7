"""What clients talk to: the inference endpoints (admission, relay, streaming), request
intake, the admin API, the dashboard, the OpenAPI document, error bodies."""
