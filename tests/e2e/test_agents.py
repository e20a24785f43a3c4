"""The API surface agents use, through a real Envoy with the official SDKs (issue 15).

Doors: the OpenAI Responses API (`/v1/responses`, `openai` SDK `responses.create` and
`responses.stream`, and the `openai-agents` runner), embeddings (`/v1/embeddings`, `openai`
SDK), token counting (`/v1/messages/count_tokens`, `anthropic` SDK), the Anthropic door as
Claude Code uses it (recorded request shapes in tests/fixtures/claude_code/), and multi-MB
prompts. Each door meets every provider the mock speaks, for text, streams, tools and errors.

Each door reaches the providers' translation (src/providers/) through the filter
(src/filter/doors.rs: what a call is beyond a chat request, per endpoint kind).
"""
from __future__ import annotations

import asyncio
import base64
import json
import struct
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from harness import Envoy, header
from llm_config import BY_ALIAS, CLIENT_KEY, PROVIDER_KEYS, PROVIDERS, P, backend

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

# Mock behaviour headers the agent tests use beside the harness's list.
AGENT_MOCK_HEADERS = ["X-Mock-Thinking", "X-Mock-Thought-Signature"]

# Embedding backends: one per provider wire the issue names.
EMBED = [
    P("openai-embed", "openai", "openai", "text-embedding-3-small", "/v1/embeddings", "OPENAI_KEY"),
    P("azure-embed", "azure", "openai", "embed-deploy", "/openai/deployments", "AZURE_KEY",
      (("api_version", "2024-10-21"),)),
    P("gemini-embed", "gemini", "gemini", "gemini-embedding-001", "/v1beta/models", "GEMINI_KEY"),
    P("titan", "bedrock", "bedrock", "amazon.titan-embed-text-v2:0", "/model", None, (("region", "eu-west-1"),)),
    P("cohere", "bedrock", "bedrock", "cohere.embed-v4:0", "/model", None, (("region", "eu-west-1"),)),
    P("mistral-embed", "mistral", "openai", "mistral-embed", "/v1/embeddings", "MISTRAL_KEY"),
    P("ollama-embed", "ollama", "openai", "nomic-embed-text", "/v1/embeddings", None),
    P("vllm-embed", "vllm", "openai", "BAAI/bge-m3", "/v1/embeddings", None),
]
EMBED_ALIASES = [p.alias for p in EMBED]
ALIASES = [p.alias for p in PROVIDERS]
NON_OPENAI = ["claude", "gemini", "bedrock", "azure", "mistral", "ollama", "compat"]


def responses_backend(mock_url: str, p: P) -> dict:
    """OpenAI backends of the Responses door keep the client's API (pass-through)."""
    b = backend(mock_url, p)
    if p.provider == "openai":
        b["url_pattern"] = "/v1/responses"
    return b


def agents_config(mock_url: str) -> dict:
    chat = [backend(mock_url, p) for p in PROVIDERS]
    embed = [backend(mock_url, p) for p in EMBED] + [backend(mock_url, BY_ALIAS["claude"])]
    return {
        "version": 3,
        "endpoints": [
            {"endpoint": "/v1/chat/completions", "method": "POST", "backend": chat},
            {"endpoint": "/v1/messages", "method": "POST", "backend": chat},
            {"endpoint": "/v1/messages/count_tokens", "method": "POST", "backend": chat},
            {"endpoint": "/v1/responses", "method": "POST",
             "backend": [responses_backend(mock_url, p) for p in PROVIDERS]},
            {"endpoint": "/v1/embeddings", "method": "POST", "backend": embed},
            # max_payload follows into Envoy's buffer for this endpoint.
            {"endpoint": "/small/v1/chat/completions", "method": "POST",
             "extra_config": {"proxy": {"max_payload": 65536}}, "backend": [backend(mock_url, BY_ALIAS["openai"])]},
        ],
    }


@pytest.fixture(scope="module")
def agw(mock):
    from harness import MOCK_HEADERS
    cfg = agents_config(mock.url)
    for ep in cfg["endpoints"]:
        ep["input_headers"] = MOCK_HEADERS + AGENT_MOCK_HEADERS
    e = Envoy(cfg, env=PROVIDER_KEYS).wait_ready()
    yield e
    e.stop()


def mock_headers(alias: str, **extra) -> dict:
    p = BY_ALIAS.get(alias)
    return {**(dict(p.mock) if p else {}), **extra}


@pytest.fixture
def oai(agw, fresh_mock):
    with openai.OpenAI(base_url=agw.url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=30) as c:
        yield c


@pytest.fixture
def ant(agw, fresh_mock):
    with anthropic.Anthropic(base_url=agw.url, api_key=CLIENT_KEY, max_retries=0, timeout=30) as c:
        yield c


# --- what the mock computes, computed again here --------------------------------------------

def fnv1a64(data: bytes) -> int:
    h = 0xcbf29ce484222325
    for b in data:
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def mock_signature(text: str) -> str:
    """The signature the mock gives a thinking block of `text` (mock_llm/agents.rs)."""
    return f"mocksig{fnv1a64(text.encode()):016x}"


def mock_vector(text: str, dims: int = 8) -> list[float]:
    """The mock's deterministic embedding of `text` (mock_llm/agents.rs)."""
    h = fnv1a64(text.encode())
    out = []
    for _ in range(dims):
        h = (h * 0x9E3779B97F4A7C15 + 1) & 0xFFFFFFFFFFFFFFFF
        out.append(((h >> 33) % 2049 - 1024) / 1024)
    return out


def upstream_paths(mock) -> list[str]:
    return [r["path"] for r in mock.requests()]


WEATHER_TOOL = {
    "type": "function", "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}, "unit": {"type": "string"}},
                   "required": ["location"]},
}


# === Responses door ===========================================================================

class TestResponsesDoor:
    def test_the_mock_speaks_openais_responses_api(self, mock, fresh_mock):
        """The pass-through cells rest on the mock's Responses API: the SDK's own stream state
        machine and types accept it, plain and streamed, with tools and reasoning."""
        with openai.OpenAI(base_url=mock.url + "/v1", api_key="k", max_retries=0) as c:
            r = c.responses.create(model="gpt-5", input="hi", tools=[WEATHER_TOOL],
                                   extra_headers={"x-mock-thinking": "Plan."})
            assert [o.type for o in r.output] == ["reasoning", "function_call"]
            with c.responses.stream(model="gpt-5", input="hi", extra_headers={"x-mock-text": "a b"}) as s:
                assert s.get_final_response().output_text == "a b"

    @pytest.mark.parametrize("alias", ALIASES)
    def test_text(self, oai, fresh_mock, alias):
        r = oai.responses.create(model=alias, input="Say hello", instructions="Be brief.",
                                 extra_headers=mock_headers(alias, **{"x-mock-text": "Hello there"}))
        assert r.output_text == "Hello there"
        assert r.status == "completed" and r.model == alias
        assert r.usage.input_tokens > 0 and r.usage.output_tokens == 2
        rec = fresh_mock.last()
        if alias == "openai":
            # Pass-through: OpenAI gets the Responses API itself.
            assert rec["path"] == "/v1/responses"
            assert json.loads(rec["body"])["instructions"] == "Be brief."
        else:
            assert "/responses" not in rec["path"]

    @pytest.mark.parametrize("alias", ALIASES)
    def test_stream(self, oai, fresh_mock, alias):
        # The SDK's stream helper checks the event sequence (identities, indexes, completion).
        with oai.responses.stream(model=alias, input="Say hello",
                                  extra_headers=mock_headers(alias, **{"x-mock-text": "one two three"})) as s:
            deltas = [e.delta for e in s if e.type == "response.output_text.delta"]
            final = s.get_final_response()
        assert "".join(deltas) == "one two three"
        assert final.output_text == "one two three"
        assert final.usage is not None and final.usage.output_tokens == 3

    @pytest.mark.parametrize("alias", ALIASES)
    def test_tools(self, oai, fresh_mock, alias):
        r = oai.responses.create(model=alias, input="Weather in Paris?", tools=[WEATHER_TOOL],
                                 extra_headers=mock_headers(alias))
        (call,) = [o for o in r.output if o.type == "function_call"]
        assert call.name == "get_weather"
        assert json.loads(call.arguments) == {"location": "Paris", "unit": "celsius"}
        r2 = oai.responses.create(model=alias, tools=[WEATHER_TOOL], extra_headers=mock_headers(alias), input=[
            {"role": "user", "content": "Weather in Paris?"},
            *[o.model_dump(exclude_none=True) for o in r.output],
            {"type": "function_call_output", "call_id": call.call_id, "output": "22C and sunny"},
        ])
        assert r2.output_text == "The tool said: 22C and sunny"

    @pytest.mark.parametrize("alias", ALIASES)
    def test_streamed_tool_call(self, oai, fresh_mock, alias):
        with oai.responses.stream(model=alias, input="Weather?", tools=[WEATHER_TOOL],
                                  extra_headers=mock_headers(alias)) as s:
            args = "".join(e.delta for e in s if e.type == "response.function_call_arguments.delta")
            final = s.get_final_response()
        assert json.loads(args) == {"location": "Paris", "unit": "celsius"}
        assert final.output[-1].type == "function_call"

    @pytest.mark.parametrize("alias", NON_OPENAI)
    @pytest.mark.parametrize("field,value", [("previous_response_id", "resp_123"), ("store", True),
                                             ("background", True)])
    def test_stateful_features_are_refused_elsewhere(self, oai, fresh_mock, alias, field, value):
        with pytest.raises(openai.BadRequestError) as e:
            oai.responses.create(model=alias, input="hi", extra_body={field: value})
        assert e.value.body["param"] == field
        assert field in e.value.body["message"]
        assert fresh_mock.requests() == []  # nothing reached the provider

    def test_stateful_features_go_through_to_openai(self, oai, fresh_mock):
        oai.responses.create(model="openai", input="hi", previous_response_id="resp_123", store=True,
                             metadata={"k": "v"})
        body = json.loads(fresh_mock.last()["body"])
        assert (body["previous_response_id"], body["store"], body["metadata"]) == ("resp_123", True, {"k": "v"})

    @pytest.mark.parametrize("alias", ["claude", "openai"])
    def test_malformed_items_name_the_field(self, oai, fresh_mock, alias):
        with pytest.raises(openai.BadRequestError) as e:
            oai.responses.create(model=alias, input=[{"role": "user", "content": "hi"},
                                                     {"type": "function_call", "name": "f", "arguments": "{}"}])
        assert e.value.body["param"] == "input[1].call_id"
        assert fresh_mock.requests() == []

    @pytest.mark.parametrize("alias", ALIASES)
    def test_provider_errors_in_openai_shape(self, oai, fresh_mock, alias):
        with pytest.raises(openai.InternalServerError):
            oai.responses.create(model=alias, input="hi", extra_headers={"x-mock-status": "500"})
        with pytest.raises(openai.RateLimitError):
            oai.responses.create(model=alias, input="hi", extra_headers={"x-mock-status": "429"})

    @pytest.mark.parametrize("alias", ["openai", "claude", "gemini", "bedrock", "mistral"])
    def test_text_format_json_schema(self, oai, fresh_mock, alias):
        """`text.format` reaches each provider in its own terms (OpenAI: as sent)."""
        place = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
        r = oai.responses.create(model=alias, input="Where?", extra_headers=mock_headers(alias),
                                 text={"format": {"type": "json_schema", "name": "place", "schema": place}})
        assert r.output_text and r.text.format.type == "json_schema"
        body = json.loads(fresh_mock.last()["body"])
        if alias == "openai":
            assert body["text"]["format"]["schema"] == place
        elif alias == "mistral":
            assert body["response_format"]["json_schema"]["schema"] == place
        elif alias == "gemini":
            g = body["generationConfig"]
            assert (g["responseMimeType"], g["responseSchema"]) == ("application/json", place)
        else:  # Anthropic, Bedrock: an instruction ends the system prompt
            system = body["system"] if isinstance(body["system"], str) else body["system"][-1]["text"]
            assert json.loads(system.rsplit("\n", 1)[1]) == place

    @pytest.mark.parametrize("alias", ["openai", "claude", "gemini", "bedrock"])
    def test_reasoning_effort(self, oai, fresh_mock, alias):
        r = oai.responses.create(model=alias, input="Think.", reasoning={"effort": "high"}, max_output_tokens=30000,
                                 extra_headers=mock_headers(alias, **{"x-mock-thinking": "Hmm."}))
        body = json.loads(fresh_mock.last()["body"])
        if alias == "openai":
            assert body["reasoning"]["effort"] == "high"
        elif alias == "claude":
            assert body["thinking"]["type"] == "enabled" and body["thinking"]["budget_tokens"] > 0
        elif alias == "gemini":
            assert body["generationConfig"]["thinkingConfig"]["thinkingBudget"] > 0
        else:
            assert body["additionalModelRequestFields"]["thinking"]["type"] == "enabled"
        assert r.output[0].type == "reasoning" and r.output_text

    def test_reasoning_from_claude_comes_back_to_claude(self, oai, fresh_mock):
        """A Responses client (the agents SDK replays output items) carries Claude's signed
        thinking as a reasoning item; Anthropic gets it back with its signature."""
        r = oai.responses.create(model="claude", input="Weather?", tools=[WEATHER_TOOL],
                                 extra_headers={"x-mock-thinking": "Check the tool."})
        assert r.output[0].type == "reasoning"
        call = r.output[-1]
        oai.responses.create(model="claude", tools=[WEATHER_TOOL], input=[
            {"role": "user", "content": "Weather?"}, *[o.model_dump(exclude_none=True) for o in r.output],
            {"type": "function_call_output", "call_id": call.call_id, "output": "22C"}])
        sent = json.loads(fresh_mock.last()["body"])
        assert sent["messages"][1]["content"][0] == {
            "type": "thinking", "thinking": "Check the tool.", "signature": mock_signature("Check the tool.")}


class TestOpenAIAgents:
    """The `openai-agents` runner with a tool, against providers that are not OpenAI."""

    @staticmethod
    def run_agent(agw, model_cls, alias, streamed=False):
        from agents import Agent, Runner, function_tool, set_tracing_disabled
        set_tracing_disabled(True)
        calls = []

        @function_tool
        def get_weather(location: str, unit: str = "celsius") -> str:
            """Current weather in a city."""
            calls.append((location, unit))
            return f"22 degrees {unit} in {location}"

        async def go():
            client = openai.AsyncOpenAI(base_url=agw.url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=30)
            agent = Agent(name="weather", instructions="Answer with the tool.", tools=[get_weather],
                          model=model_cls(model=alias, openai_client=client))
            try:
                if not streamed:
                    return await Runner.run(agent, "What is the weather in Paris?")
                run = Runner.run_streamed(agent, "What is the weather in Paris?")
                async for _ in run.stream_events():
                    pass
                return run
            finally:
                await client.close()

        result = asyncio.run(go())
        return result, calls

    @pytest.mark.parametrize("alias", ["claude", "gemini", "bedrock"])
    def test_responses_model_runs_a_tool_using_agent(self, agw, fresh_mock, alias):
        from agents import OpenAIResponsesModel
        result, calls = self.run_agent(agw, OpenAIResponsesModel, alias)
        assert calls == [("Paris", "celsius")]
        assert result.final_output == "The tool said: 22 degrees celsius in Paris"

    @pytest.mark.parametrize("alias", ["claude", "gemini", "bedrock"])
    def test_responses_model_streams_a_tool_using_agent(self, agw, fresh_mock, alias):
        from agents import OpenAIResponsesModel
        result, calls = self.run_agent(agw, OpenAIResponsesModel, alias, streamed=True)
        assert calls == [("Paris", "celsius")]
        assert result.final_output == "The tool said: 22 degrees celsius in Paris"

    @pytest.mark.parametrize("alias", ["claude", "gemini"])
    def test_chat_completions_model_runs_a_tool_using_agent(self, agw, fresh_mock, alias):
        from agents import OpenAIChatCompletionsModel
        result, calls = self.run_agent(agw, OpenAIChatCompletionsModel, alias)
        assert calls == [("Paris", "celsius")]
        assert result.final_output == "The tool said: 22 degrees celsius in Paris"


# === Embeddings ===============================================================================

class TestEmbeddings:
    @pytest.mark.parametrize("alias", EMBED_ALIASES)
    def test_one_input_default_base64(self, oai, fresh_mock, alias):
        # The SDK asks for base64 unless told otherwise, and decodes it.
        r = oai.embeddings.create(model=alias, input="hello world")
        assert len(r.data) == 1
        assert r.data[0].embedding == pytest.approx(mock_vector("hello world"), abs=0)
        assert r.model == alias
        if alias != "gemini-embed":  # Gemini reports no count: the gateway's estimate
            assert r.usage.prompt_tokens == 2

    @pytest.mark.parametrize("alias", [a for a in EMBED_ALIASES if a != "titan"])
    def test_list_float_and_dimensions(self, oai, fresh_mock, alias):
        r = oai.embeddings.create(model=alias, input=["a b", "c"], dimensions=256 if alias != "cohere" else 256,
                                  encoding_format="float")
        assert [len(d.embedding) for d in r.data] == [256, 256]
        assert r.data[1].embedding == mock_vector("c", 256)

    @pytest.mark.parametrize("alias", EMBED_ALIASES)
    def test_provider_errors_in_openai_shape(self, oai, fresh_mock, alias):
        with pytest.raises(openai.InternalServerError) as e:
            oai.embeddings.create(model=alias, input="x", extra_headers={"x-mock-status": "500"})
        assert "mock error" in e.value.body["message"]
        with pytest.raises(openai.RateLimitError):
            oai.embeddings.create(model=alias, input="x", extra_headers={"x-mock-status": "429"})

    def test_titan_takes_one_text_per_call(self, oai, fresh_mock):
        with pytest.raises(openai.BadRequestError) as e:
            oai.embeddings.create(model="titan", input=["a", "b"])
        assert "input" in e.value.body["message"]
        assert fresh_mock.requests() == []

    def test_anthropic_has_no_embeddings(self, oai, fresh_mock):
        with pytest.raises(openai.BadRequestError) as e:
            oai.embeddings.create(model="claude", input="x")
        assert "Anthropic offers no embeddings API" in e.value.body["message"]
        assert fresh_mock.requests() == []

    def test_bad_input_names_the_field(self, oai, fresh_mock):
        with pytest.raises(openai.BadRequestError) as e:
            oai.embeddings.create(model="openai-embed", input=["ok", ""])
        assert e.value.body["param"] == "input[1]"

    def test_models_list_embedding_models(self, oai):
        ids = {m.id for m in oai.models.list()}
        assert {"openai-embed", "titan", "cohere", "gemini-embed"} <= ids

    def test_usage_is_accounted(self, agw, oai, fresh_mock):
        def prompt_tokens():
            for line in agw.stats().splitlines():
                if line.startswith("tollgate_tokens_total{") and 'model="text-embedding-3-small"' in line \
                        and 'kind="prompt"' in line:
                    return float(line.rsplit(" ", 1)[1])
            return 0.0
        before = prompt_tokens()
        oai.embeddings.create(model="openai-embed", input="one two three")
        assert prompt_tokens() - before == 3


# === Token counting ===========================================================================

class TestCountTokens:
    PROMPT = dict(system="Be brief.", messages=[{"role": "user", "content": "count these four words"}])

    @pytest.mark.parametrize("alias", ["claude", "gemini", "bedrock"])
    def test_providers_with_a_count_api(self, ant, fresh_mock, alias):
        c = ant.messages.count_tokens(model=alias, **self.PROMPT)
        answer = ant.messages.create(model=alias, max_tokens=20, **self.PROMPT)
        assert c.input_tokens == answer.usage.input_tokens
        assert not (c.model_extra or {}).get("estimated")

    @pytest.mark.parametrize("alias", ["openai", "mistral", "azure", "ollama", "compat"])
    def test_others_get_a_marked_estimate(self, ant, fresh_mock, alias):
        c = ant.messages.count_tokens(model=alias, **self.PROMPT)
        assert c.input_tokens > 0
        assert c.model_extra["estimated"] is True
        assert fresh_mock.requests() == []  # no provider call

    @pytest.mark.parametrize("alias", ["claude", "gemini", "bedrock"])
    def test_provider_errors_in_anthropic_shape(self, ant, fresh_mock, alias):
        with pytest.raises(anthropic.InternalServerError) as e:
            ant.messages.count_tokens(model=alias, **self.PROMPT, extra_headers={"x-mock-status": "500"})
        assert e.value.body["type"] == "error" and "mock error" in e.value.body["error"]["message"]
        with pytest.raises(anthropic.RateLimitError):
            ant.messages.count_tokens(model=alias, **self.PROMPT, extra_headers={"x-mock-status": "429"})

    def test_bad_request_in_anthropic_shape(self, ant, fresh_mock):
        with pytest.raises(anthropic.BadRequestError) as e:
            ant.messages.count_tokens(model="claude", messages=[{"role": "robot", "content": "x"}])
        # Anthropic's shape (a top-level type), and the Anthropic door's own message.
        assert e.value.body["type"] == "error"
        assert e.value.body["error"]["message"].startswith(
            'messages[0].role: unknown role "robot" (expected user or assistant)')


# === The Anthropic door as Claude Code uses it ================================================

def claude_code_request() -> dict:
    req = json.loads((FIXTURES / "claude_code/messages_tools_thinking.json").read_text())
    # The recorded signature is Anthropic's; the mock checks its own (as Anthropic checks its).
    for block in req["messages"][1]["content"]:
        if block["type"] == "thinking":
            block["signature"] = mock_signature(block["thinking"])
    return req


class TestClaudeCodeDoor:
    @pytest.mark.parametrize("alias", ["claude", "bedrock"])
    def test_recorded_request_reaches_anthropic_wire_backends_whole(self, agw, fresh_mock, alias):
        req = {**claude_code_request(), "model": alias, "stream": False}
        r = httpx.post(agw.url + "/v1/messages", json=req, timeout=30,
                       headers={"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01"})
        assert r.status_code == 200, r.text
        sent = json.loads(fresh_mock.last()["body"])
        thinking = req["messages"][1]["content"][0]
        if alias == "claude":
            assert sent["system"] == req["system"]
            assert sent["tools"] == req["tools"]
            assert sent["metadata"] == req["metadata"]
            assert sent["messages"][1]["content"][0] == thinking
            assert sent["messages"][1]["content"][-1]["cache_control"] == {"type": "ephemeral"}
            assert sent["messages"][2]["content"][1]["cache_control"] == {"type": "ephemeral"}
        else:
            assert sent["messages"][1]["content"][0] == {"reasoningContent": {"reasoningText": {
                "text": thinking["thinking"], "signature": thinking["signature"]}}}
            assert {"cachePoint": {"type": "default"}} in sent["system"]

    @pytest.mark.parametrize("alias", ["gemini", "openai", "mistral", "azure"])
    def test_recorded_request_reaches_other_providers_cleanly(self, agw, fresh_mock, alias):
        req = {**claude_code_request(), "model": alias, "stream": False}
        r = httpx.post(agw.url + "/v1/messages", json=req, timeout=30,
                       headers={"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01"})
        assert r.status_code == 200, r.text
        body = fresh_mock.last()["body"]
        sig = req["messages"][1]["content"][0]["signature"]
        assert sig not in body and "cache_control" not in body and "thinking" not in body
        if alias == "gemini":
            assert "$schema" not in body and "additionalProperties" not in body

    @pytest.mark.parametrize("alias", ["claude", "bedrock", "gemini", "openai"])
    def test_streamed_thinking_then_the_next_turn(self, ant, fresh_mock, alias):
        """Claude Code streams a thinking turn, then sends it back with the tool result."""
        tools = [{"name": "Read", "description": "Read a file",
                  "input_schema": {"type": "object", "properties": {"file_path": {"type": "string"}},
                                   "required": ["file_path"], "additionalProperties": False,
                                   "$schema": "http://json-schema.org/draft-07/schema#"}}]
        ask = [{"role": "user", "content": "Read the style sheet."}]
        with ant.messages.stream(model=alias, max_tokens=2000, tools=tools, messages=ask,
                                 thinking={"type": "enabled", "budget_tokens": 1024},
                                 extra_headers={"x-mock-thinking": "I should read it."}) as s:
            first = s.get_final_message()
        kinds = [b.type for b in first.content]
        assert kinds[-1] == "tool_use"
        if alias in ("claude", "bedrock"):
            assert first.content[0].type == "thinking"
            assert first.content[0].thinking == "I should read it."
            assert first.content[0].signature == mock_signature("I should read it.")
        sent = json.loads(fresh_mock.last()["body"])
        if alias == "claude":
            assert sent["thinking"] == {"type": "enabled", "budget_tokens": 1024}
        tool = first.content[-1]
        second = ant.messages.create(model=alias, max_tokens=1000, tools=tools, messages=[
            *ask, {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool.id, "content": "body { color: red }"}]}])
        assert second.content[-1].text == "The tool said: body { color: red }"
        back = fresh_mock.last()["body"]
        if alias in ("claude", "bedrock"):
            assert mock_signature("I should read it.") in back  # its own reasoning went back
        else:
            assert "I should read it." not in back  # another family's reasoning never goes

    def test_foreign_reasoning_never_reaches_anthropic(self, ant, fresh_mock):
        """Gemini's thought summary shown to Claude Code as thinking, sent back when the
        session moves to Claude: dropped (Anthropic would refuse its signature)."""
        first = ant.messages.create(model="gemini", max_tokens=100, messages=[{"role": "user", "content": "hi"}],
                                    extra_headers={"x-mock-thinking": "Pondering."})
        assert first.content[0].type == "thinking"
        assert first.content[0].signature.startswith("tollgate.gemini.")
        ant.messages.create(model="claude", max_tokens=100, messages=[
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
            {"role": "user", "content": "and?"}])
        assert "Pondering." not in fresh_mock.last()["body"]

    def test_gemini_thought_signatures_survive_the_anthropic_door(self, ant, fresh_mock):
        tools = [{"name": "get_weather", "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}}}]
        sign = {"x-mock-thought-signature": "1"}
        ask = [{"role": "user", "content": "Weather?"}]
        first = ant.messages.create(model="gemini", max_tokens=100, tools=tools, messages=ask, extra_headers=sign)
        call = first.content[-1]
        assert call.type == "tool_use" and "__ts_" in call.id
        # The mock, like Gemini 3, refuses the next turn unless the call's signature is back.
        second = ant.messages.create(model="gemini", max_tokens=100, tools=tools, extra_headers=sign, messages=[
            *ask, {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "22C"}]}])
        assert second.content[-1].text == "The tool said: 22C"

    @pytest.mark.parametrize("alias", ["claude", "gemini", "bedrock", "openai"])
    def test_documents_and_images(self, ant, fresh_mock, alias):
        pdf = base64.b64encode(b"%PDF-1.4 minimal").decode()
        png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
        r = ant.messages.create(model=alias, max_tokens=50, messages=[{"role": "user", "content": [
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": pdf},
             "title": "Q3 report", "cache_control": {"type": "ephemeral"}},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}},
            {"type": "text", "text": "Summarise."}]}])
        assert r.content[0].text
        body = fresh_mock.last()["body"]
        assert pdf in body and png in body

    def test_invalid_signature_is_the_providers_400_in_anthropic_shape(self, ant, fresh_mock):
        with pytest.raises(anthropic.BadRequestError) as e:
            ant.messages.create(model="claude", max_tokens=10, messages=[
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": [{"type": "thinking", "thinking": "x", "signature": "forged"},
                                                  {"type": "text", "text": "y"}]},
                {"role": "user", "content": "again"}])
        assert "signature" in e.value.body["error"]["message"]

    def test_anthropic_beta_reaches_anthropic_only(self, ant, fresh_mock):
        beta = {"anthropic-beta": "oauth-2025-04-20,interleaved-thinking-2025-05-14"}
        ant.messages.create(model="claude", max_tokens=10, messages=[{"role": "user", "content": "hi"}],
                            extra_headers=beta)
        assert header(fresh_mock.last(), "anthropic-beta") == ["interleaved-thinking-2025-05-14"]
        ant.messages.create(model="bedrock", max_tokens=10, messages=[{"role": "user", "content": "hi"}],
                            extra_headers=beta)
        rec = fresh_mock.last()
        assert header(rec, "anthropic-beta") == []
        assert json.loads(rec["body"])["additionalModelRequestFields"]["anthropic_beta"] == [
            "interleaved-thinking-2025-05-14"]
        ant.messages.create(model="openai", max_tokens=10, messages=[{"role": "user", "content": "hi"}],
                            extra_headers=beta)
        assert header(fresh_mock.last(), "anthropic-beta") == []


# === Multi-MB prompts =========================================================================

TEN_MB = 10 * 1024 * 1024


class TestMultiMegabytePrompts:
    @pytest.mark.parametrize("alias", ["openai", "claude", "gemini"])
    def test_10mb_chat_prompt_succeeds(self, oai, fresh_mock, alias):
        big = "word " * (TEN_MB // 5)
        r = oai.chat.completions.create(model=alias, messages=[{"role": "user", "content": big}],
                                        extra_headers={"x-mock-no-record": "1"})
        assert r.choices[0].message.content

    def test_10mb_anthropic_prompt_succeeds(self, ant):
        big = "word " * (TEN_MB // 5)
        r = ant.messages.create(model="claude", max_tokens=10, messages=[{"role": "user", "content": big}],
                                extra_headers={"x-mock-no-record": "1"})
        assert r.content[0].text

    def test_10mb_responses_prompt_succeeds(self, oai):
        big = "word " * (TEN_MB // 5)
        r = oai.responses.create(model="claude", input=big, extra_headers={"x-mock-no-record": "1"})
        assert r.output_text

    def test_over_the_limit_is_413_in_each_clients_shape(self, agw, fresh_mock):
        # 17 MiB: past the LLM default (16 MiB); Envoy's 413, shaped for the client.
        big = b'{"model":"openai","messages":[{"role":"user","content":"' + b"a" * (17 << 20) + b'"}]}'
        r = httpx.post(agw.url + "/v1/chat/completions", content=big, timeout=120,
                       headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert r.json()["error"]["type"] == "invalid_request_error"
        r = httpx.post(agw.url + "/v1/messages", content=big, timeout=120,
                       headers={"content-type": "application/json", "anthropic-version": "2023-06-01"})
        assert r.status_code == 413
        assert r.json()["error"]["type"] == "request_too_large"
        r = httpx.post(agw.url + "/v1/messages/count_tokens", content=big, timeout=120,
                       headers={"content-type": "application/json", "anthropic-version": "2023-06-01"})
        assert r.status_code == 413
        assert r.json()["error"]["type"] == "request_too_large"
        for path in ("/v1/responses", "/v1/embeddings"):
            r = httpx.post(agw.url + path, content=big, timeout=120, headers={"content-type": "application/json"})
            assert r.status_code == 413, path
            assert r.json()["error"]["type"] == "invalid_request_error", path
        assert fresh_mock.requests() == []

    def test_max_payload_sets_envoys_buffer(self, agw, fresh_mock):
        # 100 KB against max_payload 64 KiB: refused by the filter (content-length) or by
        # Envoy's buffer (chunked), 413 in OpenAI's shape either way.
        body = b'{"model":"openai","messages":[{"role":"user","content":"' + b"a" * 100_000 + b'"}]}'
        r = httpx.post(agw.url + "/small/v1/chat/completions", content=body, timeout=30,
                       headers={"content-type": "application/json"})
        assert r.status_code == 413, r.text
        chunks = (body[i:i + 8192] for i in range(0, len(body), 8192))
        r = httpx.post(agw.url + "/small/v1/chat/completions", content=chunks, timeout=30,
                       headers={"content-type": "application/json"})
        assert r.status_code == 413, r.text
        assert r.json()["error"]["type"] == "invalid_request_error"
        assert fresh_mock.requests() == []
