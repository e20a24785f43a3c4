"""A KrakenD config with one `ai/llm` backend per provider, all pointing at the mock.

Every provider is reached by its alias (the client's `model`). The same backend list serves
the OpenAI front door (`/v1/chat/completions`) and the Anthropic one (`/v1/messages`).
"""
from __future__ import annotations

from dataclasses import dataclass

# Provider credentials the gateway holds (given to Envoy through its environment).
PROVIDER_KEYS = {
    "OPENAI_KEY": "sk-openai-provider-0001",
    "ANTHROPIC_KEY": "sk-ant-provider-0002",
    "GEMINI_KEY": "gemini-provider-0003",
    "AZURE_KEY": "azure-provider-0004",
    "MISTRAL_KEY": "mistral-provider-0005",
    "COMPAT_KEY": "compat-provider-0006",
    "AWS_AKID": "AKIDTOLLGATEEXAMPLE",
    "AWS_SECRET": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
    "AWS_SESSION": "FwoGZXIvYXdzEXAMPLEsessiontoken",
}
AWS_REGION = "eu-west-1"
AZURE_DEPLOYMENT = "gpt4o-mini-deploy"
AZURE_API_VERSION = "2024-10-21"
BEDROCK_MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
CLIENT_KEY = "client-key"


@dataclass(frozen=True)
class P:
    """One provider as the tests see it."""
    alias: str
    provider: str          # ai/llm provider key
    wire: str              # what the mock speaks: openai, anthropic, gemini, bedrock
    model: str | None      # variables.model (None: the client's model is passed on)
    url_pattern: str
    key_env: str | None    # env var of the credential (None: no credentials)
    extra: tuple = ()      # extra (key, value) settings beside credentials/variables
    mock: tuple = ()       # (header, value) that make the mock behave like this provider

    def settings(self) -> dict:
        s: dict = {"aliases": [self.alias]}
        if self.provider == "bedrock":
            s["credentials"] = {"access_key_id": '{{ env "AWS_AKID" }}',
                                "secret_access_key": '{{ env "AWS_SECRET" }}',
                                "session_token": '{{ env "AWS_SESSION" }}'}
        elif self.key_env:
            s["credentials"] = '{{ env "%s" }}' % self.key_env
        s.update(dict(self.extra))
        if self.model:
            s["variables"] = {"model": self.model}
        return s


PROVIDERS = [
    P("openai", "openai", "openai", "gpt-4o-mini", "/v1/chat/completions", "OPENAI_KEY"),
    P("claude", "anthropic", "anthropic", "claude-3-5-haiku-latest", "/v1/messages", "ANTHROPIC_KEY"),
    P("gemini", "gemini", "gemini", "gemini-2.0-flash", "/v1beta/models", "GEMINI_KEY"),
    P("bedrock", "bedrock", "bedrock", BEDROCK_MODEL, "/model", None, (("region", AWS_REGION),)),
    P("azure", "azure", "openai", AZURE_DEPLOYMENT, "/openai/deployments", "AZURE_KEY",
      (("api_version", AZURE_API_VERSION),)),
    # Mistral has no stream_options and always ends its streams with usage.
    P("mistral", "mistral", "openai", "mistral-small-latest", "/v1/chat/completions", "MISTRAL_KEY",
      mock=(("x-mock-stream-usage", "always"),)),
    P("ollama", "ollama", "openai", "llama3.2", "/v1/chat/completions", None),
    P("compat", "openai-compatible", "openai", "my-local-model", "/openai/v1/chat/completions", "COMPAT_KEY"),
]
BY_ALIAS = {p.alias: p for p in PROVIDERS}


def backend(mock_url: str, p: P, default: bool = False) -> dict:
    settings = p.settings()
    if default:
        settings["default"] = True
    return {
        "host": [mock_url],
        "url_pattern": p.url_pattern,
        "extra_config": {"ai/llm": {p.provider: {"v1beta" if p.provider == "gemini" else "v1": settings}}},
    }


def config(mock_url: str) -> dict:
    backends = [backend(mock_url, p) for p in PROVIDERS]
    return {
        "version": 3,
        "endpoints": [
            {"endpoint": "/v1/chat/completions", "method": "POST", "backend": backends},
            {"endpoint": "/v1/messages", "method": "POST", "backend": backends},
            # A second OpenAI door whose openai backend takes every unknown model.
            {"endpoint": "/fallback/v1/chat/completions", "method": "POST",
             "backend": [backend(mock_url, BY_ALIAS["openai"], default=True),
                         backend(mock_url, BY_ALIAS["claude"])]},
        ],
    }
