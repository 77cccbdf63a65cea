"""Loading, defaults and validation of the classifier providers (providers.yaml)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream_app.classify.provider_config import (ProviderConfig, ProviderConfigError,
                                                 load_providers, parse_providers)

CLOUD_KEYS = {"gemini-flash": "GEMINI_API_KEY", "mistral-small": "MISTRAL_API_KEY",
              "gpt-4o-mini": "OPENAI_API_KEY"}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "providers.yaml"
    path.write_text(text, "utf-8")
    return path


# --------------------------------------------------------------------------- packaged defaults

def test_packaged_defaults_list_cloud_then_onprem_providers_in_priority_order():
    providers = load_providers(None, environ={})
    assert [p.name for p in providers] == ["gemini-flash", "mistral-small", "gpt-4o-mini",
                                           "ollama", "vllm", "llamacpp"]
    by_name = {p.name: p for p in providers}
    gemini = by_name["gemini-flash"]
    assert (gemini.tier, gemini.base_url, gemini.model, gemini.key_env) == (
        "cloud", "https://generativelanguage.googleapis.com/v1beta/openai", "gemini-2.5-flash",
        "GEMINI_API_KEY")
    assert (gemini.context_tokens, gemini.max_output_tokens) == (1048576, 8192)
    assert gemini.chat_url == "https://generativelanguage.googleapis.com/v1beta/openai/chat/completions"
    assert (by_name["mistral-small"].base_url, by_name["mistral-small"].model) == (
        "https://api.mistral.ai/v1", "mistral-small-latest")
    assert by_name["gpt-4o-mini"].base_url == "https://api.openai.com/v1"
    for name, key_env in CLOUD_KEYS.items():
        p = by_name[name]
        assert p.key_env == key_env and p.enabled and p.supports_json_schema
        assert not p.zero_retention  # cloud providers get scrubbed text
        assert 0 < p.price_in_per_m < p.price_out_per_m < 10
        assert p.rpm and p.rpm > 0 and p.max_concurrency >= 1 and p.timeout_s > 0
    ollama = by_name["ollama"]
    assert (ollama.tier, ollama.base_url, ollama.key_env) == ("onprem", "http://127.0.0.1:11434/v1", None)
    assert (ollama.context_tokens, ollama.max_output_tokens) == (8192, 2048)
    for p in providers[3:]:
        assert p.tier == "onprem" and p.zero_retention and not p.enabled and not p.available
        assert p.price_in_per_m == p.price_out_per_m == 0
        assert "disabled" in (p.unavailable_reason or "")


def test_a_cloud_provider_is_available_only_while_its_key_is_set(monkeypatch):
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    gemini = load_providers(None, environ={})[0]
    assert not gemini.available
    assert gemini.unavailable_reason == "GEMINI_API_KEY is not set"
    assert gemini.api_key() is None
    monkeypatch.setenv("GEMINI_API_KEY", "")
    assert not gemini.available
    monkeypatch.setenv("GEMINI_API_KEY", "AIzaSyTestKey0123456789")
    assert gemini.available and gemini.unavailable_reason is None
    assert gemini.api_key() == "AIzaSyTestKey0123456789"  # read at call time, not at load time


def test_setting_an_onprem_url_variable_enables_it_at_that_url():
    providers = load_providers(None, environ={"DALLOSH_OLLAMA_URL": "http://gpu-box.lan:11434/v1/"})
    ollama = next(p for p in providers if p.name == "ollama")
    assert ollama.enabled and ollama.available
    assert ollama.base_url == "http://gpu-box.lan:11434/v1"
    vllm = next(p for p in providers if p.name == "vllm")
    assert not vllm.enabled


def test_secrets_are_never_in_a_config_repr(monkeypatch):
    secret = "sk-proj-SECRETSECRETSECRET"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    providers = load_providers(None, environ={})
    assert providers[2].api_key() == secret
    for text in (repr(providers), str(providers[2]), providers[2].unavailable_reason or ""):
        assert secret not in text


def test_cost_is_priced_per_million_tokens():
    p = ProviderConfig(name="x", tier="cloud", base_url="https://x.test/v1", model="m",
                       price_in_per_m=0.30, price_out_per_m=2.50)
    assert p.cost_usd(1_000_000, 0) == pytest.approx(0.30)
    assert p.cost_usd(2000, 400) == pytest.approx(0.0006 + 0.001)


# --------------------------------------------------------------------------- user files

def test_a_user_file_replaces_the_list_and_omitted_fields_take_defaults(tmp_path):
    path = write(tmp_path, """
- name: my-ollama
  tier: onprem
  base_url: http://127.0.0.1:11434/v1
  model: llama3.1:8b
- name: azure-mini
  tier: cloud
  base_url: https://example.openai.azure.com/openai/v1
  model: gpt-4o-mini
  key_env: AZURE_OPENAI_API_KEY
  rpm: 30
  supports_json_schema: true
""")
    ollama, azure = load_providers(path, environ={})
    assert (ollama.enabled, ollama.available, ollama.zero_retention, ollama.key_env) == (True, True, True, None)
    assert (ollama.context_tokens, ollama.max_output_tokens, ollama.rpm, ollama.max_concurrency,
            ollama.timeout_s, ollama.price_in_per_m, ollama.supports_json_schema) == (
        8192, 2048, None, 4, 30.0, 0.0, False)
    assert (azure.zero_retention, azure.rpm, azure.supports_json_schema) == (False, 30.0, True)
    assert azure.extra_body == {}


def test_a_providers_mapping_is_accepted_too(tmp_path):
    path = write(tmp_path, "providers:\n  - {name: a, tier: cloud, base_url: 'https://a.test', model: m}\n")
    assert [p.name for p in load_providers(path, environ={})] == ["a"]


BASE = "  - name: p\n    tier: cloud\n    base_url: https://api.test/v1\n    model: m\n"


@pytest.mark.parametrize("text,field,fragment", [
    ("providers:\n  - tier: cloud\n    base_url: https://a.test\n    model: m\n", "providers[0].name",
     "is required"),
    (BASE.replace("tier: cloud", "tier: local"), "providers[0] (p).tier", "must be one of cloud, onprem"),
    (BASE + "    modle: typo\n", "providers[0] (p)", "unknown field(s) modle"),
    (BASE + "    price_in_per_m: -1\n", "providers[0] (p).price_in_per_m", "at least 0"),
    (BASE + "    price_out_per_m: cheap\n", "providers[0] (p).price_out_per_m", "must be a number"),
    (BASE + "    rpm: 0\n", "providers[0] (p).rpm", "greater than 0"),
    (BASE + "    timeout_s: 0\n", "providers[0] (p).timeout_s", "greater than 0"),
    (BASE + "    max_concurrency: 1.5\n", "providers[0] (p).max_concurrency", "whole number"),
    (BASE + "    context_tokens: true\n", "providers[0] (p).context_tokens", "must be a number"),
    (BASE + "    context_tokens: 4096\n    max_output_tokens: 4096\n", "providers[0] (p).max_output_tokens",
     "smaller than context_tokens"),
    (BASE + "    zero_retention: 'yes'\n", "providers[0] (p).zero_retention", "true or false"),
    (BASE + "    extra_body: {model: other}\n", "providers[0] (p).extra_body", "may not override model"),
    (BASE.replace("https://api.test/v1", "ftp://api.test"), "providers[0] (p).base_url", "http:// or https://"),
    (BASE.replace("https://api.test/v1", "https://api.test/v1?key=abc"), "providers[0] (p).base_url",
     "query string"),
    ("providers:\n  - name: p\n    tier: onprem\n    model: m\n    base_url_env: DALLOSH_P_URL\n",
     "providers[0] (p).base_url", "is required (or set $DALLOSH_P_URL)"),
    (BASE + BASE, "providers[1].name", "duplicate provider name 'p'"),
    ("providers: []\n", "", "non-empty list of providers"),
    ("", "", "non-empty list of providers"),
    ("providers:\n  - [a, b]\n", "providers[0]", "expected a mapping"),
    ("provider:\n" + BASE, "", "unknown top-level key(s) ['provider']"),
    ("providers:\n  - name: p\n   tier: x\n", "", "not valid YAML"),
])
def test_invalid_files_are_refused_naming_the_file_and_the_field(tmp_path, text, field, fragment):
    path = write(tmp_path, text)
    with pytest.raises(ProviderConfigError) as caught:
        load_providers(path, environ={})
    message = str(caught.value)
    assert message.startswith(str(path)), message
    assert field in message and fragment in message, message


def test_a_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ProviderConfigError, match=r"nope\.yaml: cannot read the providers file"):
        load_providers(tmp_path / "nope.yaml")


@pytest.mark.parametrize("secret_url", ["https://user:hunter2secret@api.test/v1",
                                        "https://api.test/v1?key=hunter2secret"])
def test_a_url_with_credentials_is_refused_without_echoing_them(tmp_path, secret_url):
    path = write(tmp_path, BASE.replace("https://api.test/v1", secret_url))
    with pytest.raises(ProviderConfigError) as caught:
        load_providers(path, environ={})
    assert "hunter2secret" not in str(caught.value)


@pytest.mark.parametrize("value", ["AIzaSyD0123456789abcdefghijklmnopqrstu", "sk-proj-abc123def456"])
def test_a_key_pasted_as_key_env_is_refused_without_echoing_it(tmp_path, value):
    path = write(tmp_path, BASE + f"    key_env: {value}\n")
    with pytest.raises(ProviderConfigError) as caught:
        load_providers(path, environ={})
    assert "providers[0] (p).key_env" in str(caught.value)
    assert value not in str(caught.value)


def test_an_onprem_url_from_the_environment_is_validated_too():
    with pytest.raises(ProviderConfigError) as caught:
        parse_providers("- {name: o, tier: onprem, model: m, base_url: 'http://127.0.0.1:1/v1', "
                        "base_url_env: O_URL, enabled: false}", "user.yaml",
                        environ={"O_URL": "127.0.0.1:11434"})
    assert "user.yaml: providers[0] (o).base_url (from $O_URL)" in str(caught.value)
