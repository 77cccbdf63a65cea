"""The classifier providers: OpenAI-compatible chat endpoints, in priority order.

The packaged ``providers.yaml`` lists the defaults (cloud: Gemini Flash, Mistral Small,
GPT-4o-mini; on-prem: Ollama, vLLM, llama.cpp, off until configured). A user file
(``DALLOSH_PROVIDERS``) replaces the whole list; it has the same shape: a mapping with a
``providers`` list, or the list itself.

Fields of an entry (only ``name``, ``tier``, ``model`` and ``base_url`` or
``base_url_env`` are required):

=====================  ==========================================================
name                   unique, ``[A-Za-z0-9._-]``; the ledger's ``provider``
tier                   ``cloud`` or ``onprem``
base_url               ``http(s)://host[:port]/path`` without credentials; the client
                       POSTs to ``{base_url}/chat/completions``
base_url_env           a variable that, when set and non-empty, replaces base_url and
                       enables the entry (``DALLOSH_OLLAMA_URL=...`` turns Ollama on)
model                  the provider's model name
key_env                the variable holding the API key (null: the server needs none)
price_in_per_m         USD per million input tokens (default 0)
price_out_per_m        USD per million output tokens (default 0)
context_tokens         the context window (default 8192)
max_output_tokens      the most output tokens one request may ask for (default 2048)
rpm                    our client-side requests-per-minute cap (null: none)
max_concurrency        requests in flight at once (default 4)
timeout_s              one HTTP attempt's total time limit (default 30)
zero_retention         the provider keeps nothing, so it may see unscrubbed text
                       (default: true on-prem, false in the cloud)
supports_json_schema   send ``response_format: json_schema`` (else ``json_object``)
enabled                default true; the packaged on-prem entries say false
extra_body             a mapping merged into every request body (e.g. Gemini's
                       ``reasoning_effort: none``)
=====================  ==========================================================

Secrets: a config never holds a key. :meth:`ProviderConfig.api_key` reads
``os.environ[key_env]`` at call time, and :attr:`ProviderConfig.available` is False
(the provider is skipped, not an error) while that variable is unset or empty.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

import yaml

PROVIDER_TIERS = ("cloud", "onprem")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# Upper case only: a key pasted where its variable's name belongs (``AIza...``,
# ``sk-...``) is refused rather than echoed in "XYZ is not set".
_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]{0,127}$")
PACKAGED = "providers.yaml"


class ProviderConfigError(ValueError):
    """A providers file the program cannot use; the message names the file and field."""


@dataclass(frozen=True)
class ProviderConfig:
    name: str
    tier: str
    base_url: str
    model: str
    key_env: str | None = None
    price_in_per_m: float = 0.0
    price_out_per_m: float = 0.0
    context_tokens: int = 8192
    max_output_tokens: int = 2048
    rpm: float | None = None
    max_concurrency: int = 4
    timeout_s: float = 30.0
    zero_retention: bool = False
    supports_json_schema: bool = False
    enabled: bool = True
    base_url_env: str | None = None
    # Not part of equality/hash: a dict is unhashable, and two configs that differ only
    # by an extra request parameter are still the same provider.
    extra_body: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def api_key(self) -> str | None:
        """The key, read from the environment now (None: no key needed, or unset)."""
        if not self.key_env:
            return None
        return os.environ.get(self.key_env) or None

    @property
    def available(self) -> bool:
        """Enabled, and its key (when it needs one) is set in the environment."""
        return self.unavailable_reason is None

    @property
    def unavailable_reason(self) -> str | None:
        """Why the cascade must skip this provider, or None (never contains a secret)."""
        if not self.enabled:
            hint = f" (set {self.base_url_env} or enabled: true)" if self.base_url_env else ""
            return f"disabled{hint}"
        if self.key_env and not os.environ.get(self.key_env):
            return f"{self.key_env} is not set"
        return None

    @property
    def chat_url(self) -> str:
        return self.base_url.rstrip("/") + "/chat/completions"

    def cost_usd(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.price_in_per_m + output_tokens * self.price_out_per_m) / 1e6


def load_providers(path: Path | None = None,
                   environ: Mapping[str, str] | None = None) -> list[ProviderConfig]:
    """The providers of ``path`` (a user's YAML), or the packaged defaults when None.

    ``environ`` (default ``os.environ``) resolves ``base_url_env`` overrides. Raises
    :class:`ProviderConfigError` naming the file and the field.
    """
    environ = os.environ if environ is None else environ
    if path is None:
        source = f"packaged {PACKAGED}"
        text = resources.files("stream_app.classify").joinpath(PACKAGED).read_text("utf-8")
    else:
        path = Path(path).expanduser()
        source = str(path)
        try:
            text = path.read_text("utf-8")
        except OSError as exc:
            raise ProviderConfigError(f"{source}: cannot read the providers file: "
                                      f"{exc.strerror or exc}") from None
    return parse_providers(text, source, environ)


def parse_providers(text: str, source: str = "<providers>",
                    environ: Mapping[str, str] | None = None) -> list[ProviderConfig]:
    environ = os.environ if environ is None else environ
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ProviderConfigError(f"{source}:{where} not valid YAML: "
                                  f"{getattr(exc, 'problem', None) or exc}") from None
    except RecursionError:  # PyYAML recurses once per nesting level
        raise ProviderConfigError(f"{source}: nested too deeply to be a providers file") from None
    if isinstance(data, dict):
        extra = set(data) - {"providers"}
        if extra:
            raise ProviderConfigError(f"{source}: unknown top-level key(s) {sorted(extra)}; "
                                      "expected `providers:`")
        data = data.get("providers")
    if not isinstance(data, list) or not data:
        raise ProviderConfigError(f"{source}: expected a non-empty list of providers "
                                  "(`providers:` followed by `- name: ...` entries)")
    providers: list[ProviderConfig] = []
    seen: set[str] = set()
    for index, entry in enumerate(data):
        provider = _entry(entry, f"{source}: providers[{index}]", environ)
        if provider.name in seen:
            raise ProviderConfigError(f"{source}: providers[{index}].name: duplicate provider "
                                      f"name {provider.name!r}")
        seen.add(provider.name)
        providers.append(provider)
    return providers


_FIELDS = {"name", "tier", "base_url", "base_url_env", "model", "key_env", "price_in_per_m",
           "price_out_per_m", "context_tokens", "max_output_tokens", "rpm", "max_concurrency",
           "timeout_s", "zero_retention", "supports_json_schema", "enabled", "extra_body"}


def _entry(entry: Any, where: str, environ: Mapping[str, str]) -> ProviderConfig:
    if not isinstance(entry, dict):
        raise ProviderConfigError(f"{where}: expected a mapping of fields, got {_kind(entry)}")
    name = entry.get("name")
    if isinstance(name, str) and _NAME.match(name):
        where = f"{where} ({name})"
    unknown = sorted(str(k) for k in set(entry) - _FIELDS)
    if unknown:
        raise ProviderConfigError(f"{where}: unknown field(s) {', '.join(unknown)} "
                                  f"(known: {', '.join(sorted(_FIELDS))})")

    def fail(field_name: str, message: str) -> ProviderConfigError:
        return ProviderConfigError(f"{where}.{field_name}: {message}")

    def string(field_name: str, required: bool = False) -> str | None:
        value = entry.get(field_name)
        if value is None:
            if required:
                raise fail(field_name, "is required")
            return None
        if not isinstance(value, str) or not value.strip():
            raise fail(field_name, f"must be a non-empty string, got {_kind(value)}")
        return value.strip()

    def number(field_name: str, default: float | None, *, integer: bool = False,
               minimum: float = 0.0, allow_zero: bool = True, nullable: bool = False) -> Any:
        if field_name not in entry:
            return default
        value = entry[field_name]
        if value is None and nullable:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                (isinstance(value, float) and not math.isfinite(value)):
            raise fail(field_name, f"must be a number, got {_kind(value)}")
        if integer and value != int(value):
            raise fail(field_name, f"must be a whole number, got {value!r}")
        if value < minimum or (not allow_zero and value == 0):
            bound = f"greater than {minimum:g}" if not allow_zero else f"at least {minimum:g}"
            raise fail(field_name, f"must be {bound}, got {value!r}")
        return int(value) if integer else float(value)

    def boolean(field_name: str, default: bool) -> bool:
        if field_name not in entry or entry[field_name] is None:
            return default
        value = entry[field_name]
        if not isinstance(value, bool):
            raise fail(field_name, f"must be true or false, got {_kind(value)}")
        return value

    def env_name(field_name: str) -> str | None:
        value = string(field_name)
        if value is not None and not _ENV_NAME.match(value):
            raise fail(field_name, "must be the NAME of an environment variable "
                                   "(UPPER_CASE letters, digits, underscores), not its value")
        return value

    name = string("name", required=True)
    assert name is not None
    if not _NAME.match(name):
        raise fail("name", "must be 1-64 characters of letters, digits, '.', '_' or '-'")
    tier = string("tier", required=True)
    if tier not in PROVIDER_TIERS:
        raise fail("tier", f"must be one of {', '.join(PROVIDER_TIERS)}, got {tier!r}")
    model = string("model", required=True)

    base_url_env = env_name("base_url_env")
    base_url = string("base_url")
    enabled = boolean("enabled", True)
    override = environ.get(base_url_env, "").strip() if base_url_env else ""
    if override:
        base_url, enabled = override, True
        url_field = f"base_url (from ${base_url_env})"
    else:
        url_field = "base_url"
    if base_url is None:
        raise fail("base_url", "is required" + (f" (or set ${base_url_env})" if base_url_env else ""))
    _check_url(base_url, lambda message: fail(url_field, message))

    extra_body = entry.get("extra_body") or {}
    if not isinstance(extra_body, dict) or not all(isinstance(k, str) for k in extra_body):
        raise fail("extra_body", f"must be a mapping of request fields, got {_kind(extra_body)}")
    reserved = sorted({"model", "messages"} & set(extra_body))
    if reserved:
        raise fail("extra_body", f"may not override {', '.join(reserved)}")

    context_tokens = number("context_tokens", 8192, integer=True, minimum=1)
    max_output = number("max_output_tokens", 2048, integer=True, minimum=1)
    if max_output >= context_tokens:
        raise fail("max_output_tokens", f"must be smaller than context_tokens ({context_tokens})")
    return ProviderConfig(
        name=name, tier=tier, base_url=base_url.rstrip("/"), model=model,
        key_env=env_name("key_env"),
        price_in_per_m=number("price_in_per_m", 0.0),
        price_out_per_m=number("price_out_per_m", 0.0),
        context_tokens=context_tokens, max_output_tokens=max_output,
        rpm=number("rpm", None, allow_zero=False, nullable=True),
        max_concurrency=number("max_concurrency", 4, integer=True, minimum=1),
        timeout_s=number("timeout_s", 30.0, allow_zero=False),
        zero_retention=boolean("zero_retention", tier == "onprem"),
        supports_json_schema=boolean("supports_json_schema", False),
        enabled=enabled, base_url_env=base_url_env, extra_body=dict(extra_body),
    )


def _check_url(url: str, fail: Any) -> None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise fail(f"not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise fail("must be an http:// or https:// URL with a host")
    # Never echo the URL itself here: it is exactly where a misplaced secret would be.
    if parts.username or parts.password:
        raise fail("must not contain credentials; put the key in the variable named by key_env")
    if parts.query or parts.fragment:
        raise fail("must not have a query string or fragment (keys go in key_env)")


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, (bool, int, float)):
        return repr(value)
    if isinstance(value, str):
        return f"{value[:40]!r}"
    return type(value).__name__
