"""Chat completions on the OpenAI-compatible surface: checked requests, answers, chunks."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any

from app.simulator.errors import ApiError
from app.simulator.responses import count_words, reply_to, split_text

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
RESPONSE_FORMATS = ("text", "json_object", "json_schema")
# A value for each JSON schema type, in the arguments of a simulated tool call.
_SAMPLES: dict[str, Any] = {"integer": 1, "number": 1, "boolean": True, "array": [], "object": {}}


@dataclass(frozen=True)
class ChatRequest:
    """A checked chat.completions body and what the simulator answers to it."""

    content: str | None  # the reply's text; None when the reply is a tool call
    tool_call: dict[str, str] | None  # {"name", "arguments"} of the function called
    prompt_tokens: int
    stream: bool
    include_usage: bool

    @property
    def completion_tokens(self) -> int:
        """Tokens of the reply, counted as the native side counts them."""
        call = self.tool_call
        return count_words(call["arguments"] if call else self.content or "")

    def usage(self) -> dict[str, int]:
        """The `usage` object of the answer."""
        done = self.completion_tokens
        total = self.prompt_tokens + done
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": done,
            "total_tokens": total,
        }


def message_text(content: object, where: str) -> str:
    """The text of one message's content: a string, or a list of `{"type": "text"}` parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise ApiError(400, f"{where}.content must be a string or a list of content parts.")
    texts: list[str] = []
    for part in content:
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise ApiError(400, f"{where}.content parts must be objects with a type.")
        if part["type"] == "text":
            if not isinstance(part.get("text"), str):
                raise ApiError(400, f"{where}.content text parts need a string text.")
            texts.append(part["text"])
    return "".join(texts)


def _messages(body: dict[str, Any]) -> list[tuple[str, str]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages must be a non-empty list.")
    checked: list[tuple[str, str]] = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ROLES:
            raise ApiError(400, f"{where}.role must be one of {', '.join(sorted(ROLES))}.")
        assert isinstance(message, dict) and isinstance(role, str)
        checked.append((role, message_text(message.get("content"), where)))
    return checked


def _functions(body: dict[str, Any]) -> list[dict[str, Any]]:
    tools = body.get("tools")
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise ApiError(400, "tools must be a list.")
    functions: list[dict[str, Any]] = []
    for index, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise ApiError(400, f"tools[{index}] must be a function tool with a name.")
        functions.append(function)
    return functions


def _tool_to_call(body: dict[str, Any], last_role: str) -> dict[str, Any] | None:
    functions = _functions(body)
    choice = body.get("tool_choice", "auto")
    if isinstance(choice, dict):
        named = choice.get("function")
        name = named.get("name") if isinstance(named, dict) else None
        chosen = [f for f in functions if f["name"] == name]
        if not chosen:
            raise ApiError(400, f"tool_choice names {name!r}, which is not in tools.")
        functions = chosen
    elif choice not in ("auto", "required", "none"):
        raise ApiError(400, 'tool_choice must be "auto", "required", "none" or a function.')
    if not functions or choice == "none" or last_role == "tool":
        return None
    return functions[0]


def _sample(schema: dict[str, Any], text: str) -> Any:
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    return text if kind == "string" else _SAMPLES.get(str(kind).lower())


def _arguments(function: dict[str, Any], text: str) -> str:
    """A JSON object for `function`'s parameters: each property filled by its type."""
    parameters = function.get("parameters")
    properties = parameters.get("properties") if isinstance(parameters, dict) else None
    if not isinstance(properties, dict):
        return "{}"
    filled = {
        name: _sample(schema, text or "L104")
        for name, schema in properties.items()
        if isinstance(schema, dict)
    }
    return json.dumps(filled, ensure_ascii=False)


def _json_reply(body: dict[str, Any]) -> bool:
    given = body.get("response_format")
    if given is None:
        return False
    kind = given.get("type") if isinstance(given, dict) else None
    if kind not in RESPONSE_FORMATS:
        raise ApiError(400, f"response_format.type must be one of {', '.join(RESPONSE_FORMATS)}.")
    return bool(kind != "text")


def chat_request(body: dict[str, Any]) -> ChatRequest:
    """Check a chat.completions body (a 400 ApiError when it is invalid) and decide the reply."""
    messages = _messages(body)
    stream = body.get("stream", False)
    options = body.get("stream_options")
    options = {} if options is None else options
    if not isinstance(stream, bool):
        raise ApiError(400, "stream must be true or false.")
    if not isinstance(options, dict) or not isinstance(options.get("include_usage", False), bool):
        raise ApiError(400, 'stream_options must be {"include_usage": true|false}.')
    last_user = next((text for role, text in reversed(messages) if role == "user"), "")
    prompt = count_words(" ".join(text for _, text in messages))
    function = _tool_to_call(body, messages[-1][0])
    json_reply = _json_reply(body)
    if function is not None:
        call = {"name": function["name"], "arguments": _arguments(function, last_user)}
        return ChatRequest(None, call, prompt, stream, bool(options.get("include_usage")))
    text = reply_to(last_user)
    if json_reply:
        text = json.dumps({"answer": text}, ensure_ascii=False)
    return ChatRequest(text, None, prompt, stream, bool(options.get("include_usage")))


def completion_id() -> str:
    """A random `chatcmpl-` id."""
    return f"chatcmpl-{secrets.token_hex(12)}"


def _tool_calls(call: dict[str, str], streamed: bool) -> list[dict[str, Any]]:
    entry: dict[str, Any] = {"index": 0} if streamed else {}
    entry.update({"id": f"call_{secrets.token_hex(12)}", "type": "function", "function": call})
    return [entry]


def completion(request: ChatRequest, model: str, cid: str, created: int) -> dict[str, Any]:
    """The non-streamed answer (`chat.completion`)."""
    message: dict[str, Any] = {"role": "assistant", "content": request.content}
    if request.tool_call is not None:
        message["tool_calls"] = _tool_calls(request.tool_call, streamed=False)
    return {
        "id": cid,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": "stop" if request.tool_call is None else "tool_calls",
            }
        ],
        "usage": request.usage(),
    }


def chunks(
    request: ChatRequest, model: str, pieces: int, cid: str, created: int
) -> list[dict[str, Any]]:
    """The streamed answer's `chat.completion.chunk`s (a usage chunk last when asked for)."""
    head = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model}
    deltas: list[dict[str, Any]]
    if request.tool_call is not None:
        deltas = [{"content": None, "tool_calls": _tool_calls(request.tool_call, streamed=True)}]
    else:
        deltas = [{"content": part} for part in split_text(request.content or "", pieces)]
    deltas[0] = {"role": "assistant", **deltas[0]}
    finish = "stop" if request.tool_call is None else "tool_calls"
    out = [
        {
            **head,
            "choices": [
                {
                    "index": 0,
                    "delta": delta,
                    "finish_reason": finish if index == len(deltas) - 1 else None,
                }
            ],
        }
        for index, delta in enumerate(deltas)
    ]
    if request.include_usage:
        out.append({**head, "choices": [], "usage": request.usage()})
    return out
