"""The unified LLM interface end to end: official OpenAI and Anthropic SDKs as clients, a
real Envoy with the built filter, and the mock provider speaking each provider's API.

Every provider is one `ai/llm` backend of the same endpoint, chosen by the client's
`model` (an alias). The mock tells what it answered (`x-mock-usage: P,C`) and records what
it received (`/__mock/requests`), so each test checks both directions.
"""
from __future__ import annotations

import hashlib
import json
import time
from urllib.parse import quote

import anthropic
import httpx
from anthropic._exceptions import OverloadedError  # raised for 529; not exported at the top
import openai
import pytest

from harness import Envoy, header
from llm_config import (AWS_REGION, AZURE_API_VERSION, AZURE_DEPLOYMENT, BEDROCK_MODEL, BY_ALIAS,
                        CLIENT_KEY, PROVIDER_KEYS, PROVIDERS, config)

TEXT = "Paris is lovely in the spring"
TOOL_ARGS = {"location": "Paris", "unit": "celsius"}
TOOL_RESULT = "22 degrees and sunny"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["location"],
        },
    },
}
WEATHER_ANTHROPIC = {
    "name": "get_weather",
    "description": "Current weather in a city",
    "input_schema": WEATHER["function"]["parameters"],
}
ASK = [{"role": "user", "content": "What is the weather in Paris today?"}]
ALIASES = [p.alias for p in PROVIDERS]
# What the mock says when not told otherwise, by the wire format it speaks.
DEFAULT_TEXT = {w: f"Hello from mock {w}!" for w in ("openai", "anthropic", "gemini", "bedrock")}


@pytest.fixture(scope="module")
def gw(mock):
    e = Envoy(config(mock.url), env=PROVIDER_KEYS).wait_ready()
    yield e
    e.stop()


def provider_behaviour(request) -> dict:
    """Headers that make the mock act like the provider of a test's `alias` parameter."""
    callspec = getattr(request.node, "callspec", None)
    alias = callspec.params.get("alias") if callspec else None
    return dict(BY_ALIAS[alias].mock) if alias else {}


@pytest.fixture
def oai(gw, fresh_mock, request):
    with openai.OpenAI(base_url=gw.url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=20,
                       default_headers=provider_behaviour(request)) as c:
        yield c


@pytest.fixture
def ant(gw, fresh_mock, request):
    with anthropic.Anthropic(base_url=gw.url, api_key=CLIENT_KEY, max_retries=0, timeout=20,
                             default_headers=provider_behaviour(request)) as c:
        yield c


def mock_usage(headers) -> tuple[int, int]:
    p, c = headers["x-mock-usage"].split(",")
    return int(p), int(c)


def text_headers(**extra) -> dict:
    return {"x-mock-text": TEXT, **extra}


def upstream(mock, n: int = 1) -> list[dict]:
    """The provider calls the mock received (exactly `n`)."""
    reqs = mock.requests()
    assert len(reqs) == n, [r["path"] for r in reqs]
    return reqs


def check_upstream(rec: dict, p, stream: bool):
    """Path, provider credential and model of one upstream call; the client's key is gone."""
    body = json.loads(rec["body"])
    if p.wire == "anthropic":
        assert rec["path"] == "/v1/messages"
        assert header(rec, "x-api-key") == [PROVIDER_KEYS["ANTHROPIC_KEY"]]
        assert header(rec, "anthropic-version") == ["2023-06-01"]
        assert body["model"] == p.model
    elif p.wire == "gemini":
        action = "streamGenerateContent?alt=sse" if stream else "generateContent"
        assert rec["path"] == f"/v1beta/models/{p.model}:{action}"
        assert header(rec, "x-goog-api-key") == [PROVIDER_KEYS["GEMINI_KEY"]]
    elif p.wire == "bedrock":
        action = "converse-stream" if stream else "converse"
        assert rec["path"] == f"/model/{quote(BEDROCK_MODEL, safe='')}/{action}"
        (auth,) = header(rec, "authorization")
        assert auth.startswith(f"AWS4-HMAC-SHA256 Credential={PROVIDER_KEYS['AWS_AKID']}/")
        assert f"/{AWS_REGION}/bedrock/aws4_request" in auth
        assert len(header(rec, "x-amz-date")) == 1
        assert header(rec, "x-amz-content-sha256") == [hashlib.sha256(rec["body"].encode()).hexdigest()]
        assert header(rec, "x-amz-security-token") == [PROVIDER_KEYS["AWS_SESSION"]]
        assert PROVIDER_KEYS["AWS_SECRET"] not in json.dumps(rec)
    elif p.provider == "azure":
        assert rec["path"] == f"/openai/deployments/{AZURE_DEPLOYMENT}/chat/completions?api-version={AZURE_API_VERSION}"
        assert header(rec, "api-key") == [PROVIDER_KEYS["AZURE_KEY"]]
        assert header(rec, "authorization") == []
    else:
        assert rec["path"] == p.url_pattern
        assert body["model"] == p.model
        if p.key_env:
            assert header(rec, "authorization") == [f"Bearer {PROVIDER_KEYS[p.key_env]}"]
        else:
            assert header(rec, "authorization") == []
    if p.wire == "openai":
        assert body.get("stream", False) is stream
        if p.provider == "mistral":  # Mistral answers 422 to fields it does not know
            assert "stream_options" not in body
        elif stream:  # the gateway always asks for usage, whatever the client said
            assert body["stream_options"] == {"include_usage": True}
    for name in ("authorization", "x-api-key", "api-key", "x-goog-api-key"):
        assert all(CLIENT_KEY not in v for v in header(rec, name)), name
    assert CLIENT_KEY not in json.dumps(rec)


# --- OpenAI SDK: chat ------------------------------------------------------------------------

@pytest.mark.parametrize("alias", ALIASES)
def test_chat(oai, fresh_mock, alias):
    p = BY_ALIAS[alias]
    raw = oai.chat.completions.with_raw_response.create(model=alias, messages=ASK, extra_headers=text_headers())
    r = raw.parse()
    prompt, completion = mock_usage(raw.headers)
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == TEXT
    assert r.choices[0].finish_reason == "stop"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (
        prompt, completion, prompt + completion)
    assert completion == len(TEXT.split())
    check_upstream(upstream(fresh_mock)[0], p, stream=False)


@pytest.mark.parametrize("alias", ALIASES)
def test_chat_default_text(oai, fresh_mock, alias):
    r = oai.chat.completions.create(model=alias, messages=ASK)
    assert r.choices[0].message.content == DEFAULT_TEXT[BY_ALIAS[alias].wire]


def read_stream(stream):
    """(text, tool calls by index, finish reasons, chunks)."""
    text, tools, finish, chunks = "", {}, [], []
    for ch in stream:
        chunks.append(ch)
        assert ch.object == "chat.completion.chunk"
        for c in ch.choices:
            if c.delta.content:
                text += c.delta.content
            for tc in c.delta.tool_calls or []:
                t = tools.setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
                if tc.id:
                    t["id"] = tc.id
                if tc.function and tc.function.name:
                    t["name"] += tc.function.name
                if tc.function and tc.function.arguments:
                    t["arguments"] += tc.function.arguments
            if c.finish_reason:
                finish.append(c.finish_reason)
    return text, tools, finish, chunks


@pytest.mark.parametrize("alias", ALIASES)
def test_chat_stream_with_usage(oai, fresh_mock, alias):
    raw = oai.chat.completions.with_raw_response.create(
        model=alias, messages=ASK, stream=True, stream_options={"include_usage": True},
        extra_headers=text_headers())
    assert raw.headers["content-type"].startswith("text/event-stream")
    text, tools, finish, chunks = read_stream(raw.parse())
    prompt, completion = mock_usage(raw.headers)
    assert text == TEXT
    assert tools == {}
    assert finish == ["stop"]
    with_usage = [c for c in chunks if c.usage is not None]
    assert len(with_usage) == 1 and with_usage[0] is chunks[-1]
    assert chunks[-1].choices == []
    u = chunks[-1].usage
    assert (u.prompt_tokens, u.completion_tokens, u.total_tokens) == (prompt, completion, prompt + completion)
    check_upstream(upstream(fresh_mock)[0], BY_ALIAS[alias], stream=True)


@pytest.mark.parametrize("alias", ALIASES)
def test_chat_stream_without_usage(oai, fresh_mock, alias):
    stream = oai.chat.completions.create(model=alias, messages=ASK, stream=True, extra_headers=text_headers())
    text, _, finish, chunks = read_stream(stream)
    assert text == TEXT
    assert finish == ["stop"]
    assert [c for c in chunks if c.usage is not None] == []
    assert all(c.choices for c in chunks)
    check_upstream(upstream(fresh_mock)[0], BY_ALIAS[alias], stream=True)


def sampling_of(wire: str, body: dict) -> dict:
    """System prompt and sampling parameters as the provider's request spells them."""
    if wire == "anthropic":
        return {"system": body["system"], "max": body["max_tokens"], "temperature": body["temperature"],
                "top_p": body["top_p"], "stop": body["stop_sequences"]}
    if wire == "gemini":
        g = body["generationConfig"]
        return {"system": body["systemInstruction"]["parts"][0]["text"], "max": g["maxOutputTokens"],
                "temperature": g["temperature"], "top_p": g["topP"], "stop": g["stopSequences"]}
    if wire == "bedrock":
        c = body["inferenceConfig"]
        return {"system": body["system"][0]["text"], "max": c["maxTokens"], "temperature": c["temperature"],
                "top_p": c["topP"], "stop": c["stopSequences"]}
    assert body["messages"][0]["role"] == "system"
    return {"system": body["messages"][0]["content"], "max": body["max_tokens"], "temperature": body["temperature"],
            "top_p": body["top_p"], "stop": body["stop"]}


SAMPLING = {"system": "You are terse.", "max": 50, "temperature": 0.3, "top_p": 0.9, "stop": ["END"]}


@pytest.mark.parametrize("alias", ALIASES)
def test_system_prompt_and_sampling_reach_the_provider(oai, ant, fresh_mock, alias):
    oai.chat.completions.create(model=alias, messages=[{"role": "system", "content": "You are terse."}] + ASK,
                                max_tokens=50, temperature=0.3, top_p=0.9, stop=["END"])
    # anthropic 2.x no longer types `temperature`/`top_p` (Anthropic's newer models take
    # `output_config.effort`); older models and other providers still honour them, and clients
    # still send them, so they go in the body as such.
    ant.messages.create(model=alias, system="You are terse.", messages=ASK, max_tokens=50,
                        stop_sequences=["END"], extra_body={"temperature": 0.3, "top_p": 0.9})
    for rec in upstream(fresh_mock, 2):
        assert sampling_of(BY_ALIAS[alias].wire, json.loads(rec["body"])) == SAMPLING


@pytest.mark.parametrize("alias", ["openai", "mistral"])
def test_seed_and_max_completion_tokens_in_the_provider_dialect(oai, fresh_mock, alias):
    oai.chat.completions.create(model=alias, messages=ASK, seed=7, max_completion_tokens=20)
    body = json.loads(upstream(fresh_mock)[0]["body"])
    if alias == "mistral":
        assert (body["random_seed"], body["max_tokens"]) == (7, 20)
        assert "seed" not in body and "max_completion_tokens" not in body
    else:
        assert (body["seed"], body["max_completion_tokens"]) == (7, 20)


@pytest.mark.parametrize("alias", ALIASES)
def test_translated_streams_are_not_buffered(oai, alias):
    # Content events 100 ms apart: the first delta must reach the client long before
    # the last one is sent.
    stream = oai.chat.completions.create(model=alias, messages=ASK, stream=True,
                                         extra_headers={"x-mock-chunks": "4", "x-mock-delay-ms": "100"})
    seen = []
    for ch in stream:
        if ch.choices and ch.choices[0].delta.content:
            seen.append((time.monotonic(), ch.choices[0].delta.content))
    assert len(seen) == 4
    assert seen[-1][0] - seen[0][0] > 0.2


PNG_B64 = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")


@pytest.mark.parametrize("alias", ALIASES)
def test_content_parts_and_image_reach_the_provider(oai, fresh_mock, alias):
    r = oai.chat.completions.create(model=alias, messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}}]}])
    assert r.choices[0].message.content == DEFAULT_TEXT[BY_ALIAS[alias].wire]
    (rec,) = upstream(fresh_mock)
    assert "What is in this picture?" in rec["body"]
    assert PNG_B64 in rec["body"]


# --- OpenAI SDK: tools -----------------------------------------------------------------------

def tool_turn(call_id: str, arguments: str) -> list[dict]:
    return ASK + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": "get_weather", "arguments": arguments}}]},
        {"role": "tool", "tool_call_id": call_id, "content": TOOL_RESULT},
    ]


@pytest.mark.parametrize("alias", ALIASES)
def test_tools(oai, fresh_mock, alias):
    r = oai.chat.completions.create(model=alias, messages=ASK, tools=[WEATHER])
    c = r.choices[0]
    assert c.finish_reason == "tool_calls"
    (call,) = c.message.tool_calls
    assert call.type == "function"
    assert call.id
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == TOOL_ARGS
    r2 = oai.chat.completions.create(model=alias, messages=tool_turn(call.id, call.function.arguments), tools=[WEATHER])
    assert r2.choices[0].message.content == f"The tool said: {TOOL_RESULT}"
    assert r2.choices[0].finish_reason == "stop"
    assert not r2.choices[0].message.tool_calls


@pytest.mark.parametrize("alias", ALIASES)
def test_tools_stream(oai, fresh_mock, alias):
    stream = oai.chat.completions.create(model=alias, messages=ASK, tools=[WEATHER], stream=True,
                                         stream_options={"include_usage": True})
    text, tools, finish, chunks = read_stream(stream)
    assert text == ""
    assert list(tools) == [0]
    assert tools[0]["name"] == "get_weather"
    assert tools[0]["id"]
    assert json.loads(tools[0]["arguments"]) == TOOL_ARGS
    assert finish == ["tool_calls"]
    assert chunks[-1].usage is not None
    stream = oai.chat.completions.create(model=alias, messages=tool_turn(tools[0]["id"], tools[0]["arguments"]),
                                         tools=[WEATHER], stream=True)
    text, tools, finish, _ = read_stream(stream)
    assert (text, tools, finish) == (f"The tool said: {TOOL_RESULT}", {}, ["stop"])


# --- OpenAI SDK: errors ----------------------------------------------------------------------

@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("alias", ALIASES)
def test_rate_limit(oai, alias, stream):
    with pytest.raises(openai.RateLimitError) as e:
        oai.chat.completions.create(model=alias, messages=ASK, stream=stream, extra_headers={"x-mock-status": "429"})
    assert e.value.status_code == 429
    assert "mock error: HTTP 429 Too Many Requests (x-mock-status)" in e.value.body["message"]


@pytest.mark.parametrize("status", [500, 503, 529])
@pytest.mark.parametrize("alias", ALIASES)
def test_server_errors(oai, alias, status):
    with pytest.raises(openai.APIStatusError) as e:
        oai.chat.completions.create(model=alias, messages=ASK, extra_headers={"x-mock-status": str(status)})
    assert 500 <= e.value.status_code <= 599
    if status == 529:
        assert e.value.status_code == 503  # 529 is Anthropic's; OpenAI clients get 503
    assert f"mock error: HTTP {status}" in e.value.body["message"]


@pytest.mark.parametrize("alias", ALIASES)
def test_provider_auth_failure_is_bad_gateway(oai, alias):
    # The gateway's key was refused: not the client's fault, so not a 401 to the client.
    with pytest.raises(openai.APIStatusError) as e:
        oai.chat.completions.create(model=alias, messages=ASK, extra_headers={"x-mock-status": "401"})
    assert e.value.status_code == 502
    assert not isinstance(e.value, openai.AuthenticationError)
    assert e.value.body["type"] == "server_error"


@pytest.mark.parametrize("alias", ALIASES)
def test_invalid_provider_json_is_bad_gateway(oai, alias):
    with pytest.raises(openai.APIStatusError) as e:
        oai.chat.completions.create(model=alias, messages=ASK, extra_headers={"x-mock-invalid-json": "1"})
    assert e.value.status_code == 502
    assert e.value.body["type"] == "server_error"


@pytest.mark.parametrize("alias", ALIASES)
def test_invalid_provider_stream_event_is_an_error_event(oai, alias):
    # The 200 and the first events are gone already: the client gets an error event.
    with pytest.raises(openai.APIError) as e:
        list(oai.chat.completions.create(model=alias, messages=ASK, stream=True,
                                         extra_headers={"x-mock-invalid-json": "1"}))
    assert not isinstance(e.value, openai.APIStatusError)
    assert "invalid" in e.value.message or "unreadable" in e.value.message, e.value.message


def test_unknown_model_is_404(oai, fresh_mock):
    with pytest.raises(openai.NotFoundError) as e:
        oai.chat.completions.create(model="no-such-model", messages=ASK)
    assert e.value.status_code == 404
    assert e.value.body["code"] == "model_not_found"
    assert e.value.body["param"] == "model"
    assert '"no-such-model"' in e.value.body["message"]
    assert fresh_mock.requests() == []


def test_unknown_model_goes_to_the_default_backend(gw, fresh_mock):
    with openai.OpenAI(base_url=gw.url + "/fallback/v1", api_key=CLIENT_KEY, max_retries=0) as c:
        r = c.chat.completions.create(model="no-such-model", messages=ASK)
        assert r.choices[0].message.content == DEFAULT_TEXT["openai"]
        assert json.loads(fresh_mock.last()["body"])["model"] == "gpt-4o-mini"
        r = c.chat.completions.create(model="claude", messages=ASK)
        assert r.choices[0].message.content == DEFAULT_TEXT["anthropic"]


@pytest.mark.parametrize("body, message", [
    (b'{"model": "openai", "messages": [', "request body is not valid JSON: EOF while parsing a list at line 1 column 33"),
    (b'[1, 2]', "JSON object"),
    (b'{"messages": [{"role": "user", "content": "hi"}]}', "model"),
    (b'{"model": "openai", "messages": [{"role": "wizard", "content": "hi"}]}', "role"),
    (b'{"model": "openai"}', "messages"),
])
def test_malformed_request_is_400(gw, fresh_mock, body, message):
    r = httpx.post(gw.url + "/v1/chat/completions", content=body,
                   headers={"content-type": "application/json", "authorization": f"Bearer {CLIENT_KEY}"})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error"
    assert message in err["message"], err
    assert fresh_mock.requests() == []


def test_malformed_json_message_is_precise(gw, fresh_mock):
    r = httpx.post(gw.url + "/v1/chat/completions", content=b'{"model": "openai",\n "messages": [}',
                   headers={"content-type": "application/json"})
    assert r.status_code == 400
    msg = r.json()["error"]["message"]
    assert "line 2" in msg and "column" in msg, msg


# --- structured output: response_format reaches every provider in its own terms ---------------

PLACE = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def upstream_format(p, body: dict) -> tuple[str, object]:
    """How a provider's request carries the JSON format: (where, what)."""
    if p.wire == "openai":
        return "response_format", body["response_format"]
    if p.wire == "gemini":
        g = body["generationConfig"]
        return "generationConfig", (g["responseMimeType"], g.get("responseSchema"))
    system = body["system"]
    text = system if isinstance(system, str) else system[-1]["text"]
    return "system", text


@pytest.mark.parametrize("alias", ["openai", "claude", "gemini", "bedrock", "mistral"])
@pytest.mark.parametrize("kind", ["json_object", "json_schema"])
def test_response_format_reaches_every_provider(oai, fresh_mock, alias, kind):
    p = BY_ALIAS[alias]
    fmt = ({"type": "json_object"} if kind == "json_object"
           else {"type": "json_schema", "json_schema": {"name": "place", "schema": PLACE}})
    r = oai.chat.completions.create(model=alias, messages=ASK, response_format=fmt)
    assert r.choices[0].message.content
    (rec,) = upstream(fresh_mock)
    where, what = upstream_format(p, json.loads(rec["body"]))
    if where == "response_format":
        assert what == fmt
    elif where == "generationConfig":
        assert what == ("application/json", PLACE if kind == "json_schema" else None)
    else:  # Anthropic, Bedrock: no JSON mode, an instruction ends the system prompt
        assert what.startswith("Respond only with a single valid JSON"), what
        if kind == "json_schema":
            assert json.loads(what.rsplit("\n", 1)[1]) == PLACE


# --- Bedrock SigV4, checked by botocore ---------------------------------------------------------

@pytest.mark.parametrize("stream", [False, True])
def test_bedrock_sigv4_matches_botocore(oai, fresh_mock, stream):
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    r = oai.chat.completions.create(model="bedrock", messages=ASK, stream=stream)
    if stream:
        list(r)
    (rec,) = upstream(fresh_mock)
    (auth,) = header(rec, "authorization")
    fields = dict(part.strip().split("=", 1) for part in auth.removeprefix("AWS4-HMAC-SHA256 ").split(","))
    signed = fields["SignedHeaders"].split(";")
    assert {"host", "x-amz-date", "x-amz-content-sha256"} <= set(signed)
    (amz_date,) = header(rec, "x-amz-date")
    assert fields["Credential"] == f"{PROVIDER_KEYS['AWS_AKID']}/{amz_date[:8]}/{AWS_REGION}/bedrock/aws4_request"
    headers = {}
    for name in signed:
        (value,) = header(rec, name)
        headers[name] = value
    req = AWSRequest(method=rec["method"], url=f"http://{headers['host']}{rec['path']}",
                     data=rec["body"].encode(), headers=headers)
    req.context["timestamp"] = amz_date
    creds = Credentials(PROVIDER_KEYS["AWS_AKID"], PROVIDER_KEYS["AWS_SECRET"], PROVIDER_KEYS["AWS_SESSION"])
    signer = SigV4Auth(creds, "bedrock", AWS_REGION)
    canonical = signer.canonical_request(req)
    assert signer.signed_headers(signer.headers_to_sign(req)) == fields["SignedHeaders"]
    expected = signer.signature(signer.string_to_sign(req, canonical), req)
    assert fields["Signature"] == expected, canonical


# --- Anthropic SDK -----------------------------------------------------------------------------

@pytest.mark.parametrize("alias", ALIASES)
def test_anthropic_messages_create(ant, fresh_mock, alias):
    raw = ant.messages.with_raw_response.create(model=alias, max_tokens=256, messages=ASK,
                                               extra_headers=text_headers())
    m = raw.parse()
    prompt, completion = mock_usage(raw.headers)
    assert m.type == "message" and m.role == "assistant"
    assert [b.type for b in m.content] == ["text"]
    assert m.content[0].text == TEXT
    assert m.stop_reason == "end_turn"
    assert (m.usage.input_tokens, m.usage.output_tokens) == (prompt, completion)
    check_upstream(upstream(fresh_mock)[0], BY_ALIAS[alias], stream=False)


@pytest.mark.parametrize("alias", ALIASES)
def test_anthropic_messages_stream(ant, fresh_mock, alias):
    with ant.messages.stream(model=alias, max_tokens=256, messages=ASK, extra_headers=text_headers()) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == TEXT
    assert final.content[0].text == TEXT
    assert final.stop_reason == "end_turn"
    (rec,) = upstream(fresh_mock)
    check_upstream(rec, BY_ALIAS[alias], stream=True)
    # The mock's usage for this call: its rule is deterministic, so a non-stream twin tells it.
    fresh_mock.clear()
    raw = ant.messages.with_raw_response.create(model=alias, max_tokens=256, messages=ASK,
                                               extra_headers=text_headers())
    assert (final.usage.input_tokens, final.usage.output_tokens) == mock_usage(raw.headers)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("alias", ALIASES)
def test_anthropic_tool_use(ant, alias, stream):
    kw = dict(model=alias, max_tokens=256, messages=ASK, tools=[WEATHER_ANTHROPIC])
    if stream:
        with ant.messages.stream(**kw) as s:
            m = s.get_final_message()
    else:
        m = ant.messages.create(**kw)
    assert m.stop_reason == "tool_use"
    uses = [b for b in m.content if b.type == "tool_use"]
    assert len(uses) == 1
    assert uses[0].name == "get_weather"
    assert uses[0].input == TOOL_ARGS
    assert uses[0].id
    follow = ASK + [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in m.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": TOOL_RESULT}]},
    ]
    kw["messages"] = follow
    if stream:
        with ant.messages.stream(**kw) as s:
            text = "".join(s.text_stream)
            m2 = s.get_final_message()
        assert text == f"The tool said: {TOOL_RESULT}"
    else:
        m2 = ant.messages.create(**kw)
    assert m2.content[0].text == f"The tool said: {TOOL_RESULT}"
    assert m2.stop_reason == "end_turn"


@pytest.mark.parametrize("alias", ALIASES)
def test_anthropic_errors(ant, alias):
    with pytest.raises(anthropic.RateLimitError) as e:
        ant.messages.create(model=alias, max_tokens=64, messages=ASK, extra_headers={"x-mock-status": "429"})
    assert e.value.status_code == 429
    assert e.value.body["type"] == "error"
    assert "mock error: HTTP 429" in e.value.body["error"]["message"]
    with pytest.raises(anthropic.RateLimitError) as e:
        with ant.messages.stream(model=alias, max_tokens=64, messages=ASK, extra_headers={"x-mock-status": "429"}) as s:
            list(s.text_stream)
    assert e.value.body["error"]["type"] == "rate_limit_error"
    # A provider's 503: Anthropic's `api_error` is a 502 (as its 500); any other provider's 503 is
    # `overloaded_error`, which the Anthropic door answers with Anthropic's 529.
    with pytest.raises(anthropic.APIStatusError) as e:
        ant.messages.create(model=alias, max_tokens=64, messages=ASK, extra_headers={"x-mock-status": "503"})
    overloaded = BY_ALIAS[alias].wire != "anthropic"
    assert e.value.status_code == (529 if overloaded else 502)
    assert isinstance(e.value, OverloadedError if overloaded else anthropic.InternalServerError)
    assert e.value.body["error"]["type"] == ("overloaded_error" if overloaded else "api_error")
    # Any provider's 529 is Anthropic's OverloadedError (the OpenAI door keeps 503:
    # test_server_errors).
    with pytest.raises(OverloadedError) as e:
        ant.messages.create(model=alias, max_tokens=64, messages=ASK, extra_headers={"x-mock-status": "529"})
    assert e.value.status_code == 529
    with pytest.raises(anthropic.APIStatusError) as e:
        ant.messages.create(model=alias, max_tokens=64, messages=ASK, extra_headers={"x-mock-status": "401"})
    assert e.value.status_code == 502


def test_anthropic_unknown_model_and_bad_request(ant, fresh_mock):
    with pytest.raises(anthropic.NotFoundError) as e:
        ant.messages.create(model="no-such-model", max_tokens=64, messages=ASK)
    assert e.value.body["type"] == "error"
    assert e.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.BadRequestError) as e:
        ant.messages.create(model="claude", max_tokens=64, messages=[{"role": "wizard", "content": "hi"}])
    assert e.value.body["error"]["type"] == "invalid_request_error"
    assert fresh_mock.requests() == []


# --- models ------------------------------------------------------------------------------------

def test_models_list_and_retrieve(oai, fresh_mock):
    ids = [m.id for m in oai.models.list()]
    for p in PROVIDERS:
        assert p.alias in ids
        assert p.model in ids
    assert len(ids) == len(set(ids))
    m = oai.models.retrieve("claude")
    assert (m.id, m.owned_by) == ("claude", "anthropic")
    with pytest.raises(openai.NotFoundError) as e:
        oai.models.retrieve("no-such-model")
    assert e.value.body["code"] == "model_not_found"
    assert fresh_mock.requests() == []


def test_anthropic_models_list(ant):
    ids = [m.id for m in ant.models.list()]
    assert set(ALIASES) <= set(ids)
    assert ant.models.retrieve("gemini").id == "gemini"
    with pytest.raises(anthropic.NotFoundError):
        ant.models.retrieve("no-such-model")


def test_no_secret_in_envoy_log(gw):
    log = gw.log()
    for value in PROVIDER_KEYS.values():
        assert value not in log
