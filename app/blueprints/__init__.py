"""The node's blueprints: `node` (Gemini API), `legacy` (original L104 API), `ops`."""
