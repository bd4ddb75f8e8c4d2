"""The Gemini error each error fault answers with; other faults shape the answer instead."""

from __future__ import annotations

from app.simulator import responses as r
from app.simulator.errors import ApiError
from app.simulator.faults import KEY_FAULTS, Fault

ERROR_FAULTS: dict[str, tuple[int, str]] = {
    "500": (500, "An internal error has occurred."),
    "503": (503, "The model is overloaded. Please try again later."),
    "504": (504, "Deadline expired before operation could complete."),
}


def key_fault_error(fault: Fault, key_id: str | None) -> ApiError:
    """The answer of an `invalid_key` or `permission_denied` fault (never naming the key)."""
    if fault.kind == "invalid_key":
        return ApiError(400, r.BAD_KEY_MESSAGE, r.BAD_KEY_DETAILS)
    return ApiError(403, r.suspended_message(key_id), r.SUSPENDED_DETAILS)


def fault_error(fault: Fault, model: str, key_id: str | None) -> ApiError | None:
    """The error `fault` answers a call on `model` with, or None if it is not an error."""
    kind = fault.kind
    if kind in ("429", "429_day"):
        delay, no_details = fault.params["retry_delay"], fault.params["no_details"]
        return r.quota_error(model, kind == "429_day", delay, not no_details)
    if kind in ERROR_FAULTS:
        return ApiError(*ERROR_FAULTS[kind])
    if kind in KEY_FAULTS:
        return key_fault_error(fault, key_id)
    return None
