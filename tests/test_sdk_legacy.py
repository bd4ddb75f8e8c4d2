"""The deprecated google-generativeai client, still used by old L104 clients."""

from __future__ import annotations

import warnings

from tests.support.processes import Service
from tests.support.simulator_client import SimulatorControl


def test_generate_content_through_the_node(node: Service, simulator: SimulatorControl) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import google.generativeai as legacy_genai

        legacy_genai.configure(
            api_key="old-client-key",
            transport="rest",
            client_options={"api_endpoint": node.url},
        )
        model = legacy_genai.GenerativeModel("gemini-3.8-flash")
        response = model.generate_content("Hello from the old SDK")
    assert response.text == "L104 simulator reply to: Hello from the old SDK"
    (seen,) = simulator.requests()
    assert seen["api_method"] == "streamGenerateContent"  # UNARY_AS_STREAM
    assert seen["api_key"] != "old-client-key"
