"""What clients and operators call: the blueprints `node` (Gemini API), `openai`
(OpenAI-compatible API), `legacy` (original L104 API), `ops` and `admin`, their wire formats
and input checks, the `/metrics` export, the status view and the console's files."""
