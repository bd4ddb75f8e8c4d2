"""The bundled Gemini simulator: a fake Gemini REST server for tests, benchmarks and the demo.

The standard library's HTTP server (as a process, `python -m app.simulator`, monkey-patched
by gevent so that each connection is a greenlet). Serves `/v1` and `/v1beta`
(generateContent, streamGenerateContent, countTokens, embedContent, batchEmbedContents,
models), Gemini's OpenAI-compatible surface under `/v1beta/openai/` (chat/completions,
embeddings, models) with bearer auth and array-wrapped errors, plus a control API under
`/_sim/` for fault injection, keys, per-key quotas (on a clock tests move forward), config,
stats and the request log. Every fault applies to every model method of both surfaces, for
one API key or all. Keys are shown by id (`key_ids.key_id`), never themselves. Run it with
`python -m app.simulator --port 0 --api-keys K1,K2`, or in-process:

    server = start_in_thread(api_keys=["k1", "k2"])
    ...  # talk to server.url
    server.shutdown()
"""

from app.simulator.server import SimulatorServer, start_in_thread

__all__ = ["SimulatorServer", "start_in_thread"]
