"""The API methods the simulator answers, named as the recorder and the faults know them."""

from __future__ import annotations

GENERATION_METHODS = frozenset({"generateContent", "streamGenerateContent", "countTokens"})
EMBEDDING_METHODS = frozenset({"embedContent", "batchEmbedContents"})
NATIVE_MODEL_METHODS = GENERATION_METHODS | EMBEDDING_METHODS

# The OpenAI-compatible surface (under /v1beta/openai/).
CHAT = "chat.completions"
EMBEDDINGS = "embeddings"
OPENAI_LIST_MODELS = "openai.listModels"
OPENAI_GET_MODEL = "openai.getModel"

# Every fault kind applies to these; only some apply to the GET_MODEL_METHODS.
MODEL_METHODS = NATIVE_MODEL_METHODS | {CHAT, EMBEDDINGS}
GET_MODEL_METHODS = frozenset({"getModel", OPENAI_GET_MODEL})
