"""Calling Gemini: the upstream client, its `requests.Session` with urllib3's `Retry` (backoff,
retry budget, per-attempt timeouts inside the request's deadline), upstream errors, the key pool
and server-sent events."""
