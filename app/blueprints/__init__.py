"""The node's blueprints: `node` (Gemini API), `openai` (OpenAI-compatible API), `legacy`
(original L104 API), `ops`, `admin`."""
