"""Is a tweet about the brand, and is it the brand's own post? Driven by a brand
configuration (``brands/<name>.yaml`` or ``DALLOSH_BRAND_FILE``), never by code.

The brand file also declares the brand's ``taxonomy`` (topics with their teams,
descriptions and examples; the three priority levels): the labels every classifier tier
uses (:mod:`stream_app.taxonomy`). It is required, since nothing can be classified
without labels, and a mistake anywhere in the file (an unknown key included) is one
:class:`~stream_app.settings.SettingsError` naming the file and the place."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any
from importlib import resources
from pathlib import Path

import yaml

from stream_app.settings import Settings, SettingsError
from stream_app.taxonomy import Taxonomy, TaxonomyError, parse_taxonomy

CUSTOMER, BRAND_OWN, OFF_TOPIC = "customer", "brand_own", "off_topic"
POLICIES = ("tag", "drop")
KNOWN_KEYS = ("name", "display_name", "accounts", "keywords", "own_posts", "off_topic",
              "taxonomy")


def _fold(text: str) -> str:
    """Case- and accent-free ASCII ("Révolution" -> "revolution"); other characters
    (emojis, non-Latin scripts) are dropped, keywords being Latin words."""
    return unicodedata.normalize("NFKD", text.casefold()).encode("ascii", "ignore").decode()


@dataclass(frozen=True)
class BrandConfig:
    name: str
    accounts: frozenset[str]      # folded, without @
    keywords: tuple[str, ...]
    own_posts: str                # "tag" | "drop"
    off_topic: str                # "tag" | "drop"
    taxonomy: Taxonomy            # the labels every classifier tier uses

    def __post_init__(self) -> None:
        words = sorted({_fold(k) for k in self.keywords} | set(self.accounts), key=len, reverse=True)
        pattern = r"(?<![\w@])@?(?:" + "|".join(re.escape(w) for w in words) + r")(?!\w)"
        object.__setattr__(self, "_pattern", re.compile(pattern))

    def relevance(self, text: str, author: str, in_reply_to: str = "") -> str:
        """``customer`` when the tweet names the brand (account or keyword) or replies
        to one of its accounts; ``brand_own`` when one of its accounts wrote it."""
        if _fold(author.lstrip("@")) in self.accounts:
            return BRAND_OWN
        if _fold(in_reply_to.lstrip("@")) in self.accounts or self._pattern.search(_fold(text)):  # type: ignore[attr-defined]
            return CUSTOMER
        return OFF_TOPIC

    def policy(self, relevance: str) -> str:
        return {BRAND_OWN: self.own_posts, OFF_TOPIC: self.off_topic}.get(relevance, "tag")


BUILTIN_BRANDS = ("free", "airline")


def load_brand(settings: Settings, spec: str | Path | None = None) -> BrandConfig:
    """The brand named by ``spec`` (a brand YAML file, or a built-in brand name such as
    ``airline``), by default the configured one (``DALLOSH_BRAND_FILE``, else
    ``DALLOSH_BRAND``). The one place a brand file is read: workers, ``dallosh train``
    and ``dallosh eval`` all come here. Raises :class:`SettingsError` (one line)."""
    if spec is None:
        if settings.brand_file is not None:
            spec, source = Path(settings.brand_file), f"DALLOSH_BRAND_FILE={settings.brand_file}"
        else:
            spec, source = settings.brand, f"DALLOSH_BRAND={settings.brand}"
    else:
        source = f"--brand {spec}"
    path = Path(spec)
    builtin = isinstance(spec, str) and not path.is_file() and "/" not in spec \
        and not spec.endswith((".yaml", ".yml"))
    if builtin:
        entry = resources.files("stream_app.clean").joinpath("brands", f"{spec}.yaml")
        if not entry.is_file():
            raise SettingsError(f"{source}: no such built-in brand (built in: "
                                f"{', '.join(BUILTIN_BRANDS)}); or give your own brand YAML file")
        text, folder = entry.read_text(encoding="utf-8"), entry.parent
    else:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise SettingsError(f"{source}: cannot read ({exc.strerror or exc})") from None
        folder = path.parent
    return parse_brand(text, source, folder)


def parse_brand(text: str, source: str, folder: Any = None) -> BrandConfig:
    """A brand file's text; ``folder`` holds the files it names (the taxonomy's
    ``labelled_examples``): the brand file's directory."""
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise SettingsError(f"{source}: not valid YAML ({exc})") from None
    except RecursionError:  # PyYAML recurses once per nesting level
        raise SettingsError(f"{source}: nested too deeply to be a brand file") from None
    if not isinstance(data, dict):
        raise SettingsError(f"{source}: must be a mapping (name, accounts, keywords, ...), "
                            f"not {type(data).__name__}")
    unknown = sorted(str(k) for k in data if k not in KNOWN_KEYS)
    if unknown:
        raise SettingsError(f"{source}: unknown key(s) {', '.join(unknown)} "
                            f"(known: {', '.join(KNOWN_KEYS)})")
    for key in ("accounts", "keywords"):
        if not isinstance(data.get(key) or [], list):
            raise SettingsError(f"{source}: {key} must be a list")
    data = data | {key: data.get(key) or [] for key in ("accounts", "keywords")}
    if "name" not in data:
        raise SettingsError(f"{source}: missing key 'name'")
    if "taxonomy" not in data:
        raise SettingsError(f"{source}: missing `taxonomy` (the brand's topics with their teams, "
                            "descriptions and examples, and its priorities 0-2; see "
                            "stream_app/clean/brands/free.yaml)")
    try:
        taxonomy = parse_taxonomy(data["taxonomy"], source, folder)
    except TaxonomyError as exc:
        raise SettingsError(str(exc)) from None
    config = BrandConfig(
        name=str(data["name"]),
        accounts=frozenset(_fold(str(a).lstrip("@")) for a in data.get("accounts", [])),
        keywords=tuple(str(k) for k in data.get("keywords", [])),
        own_posts=str(data.get("own_posts", "tag")),
        off_topic=str(data.get("off_topic", "tag")),
        taxonomy=taxonomy)
    for key in ("own_posts", "off_topic"):
        if getattr(config, key) not in POLICIES:
            raise SettingsError(f"{source}: {key} must be one of {POLICIES}")
    if not config.accounts and not config.keywords:
        raise SettingsError(f"{source}: give at least one account or keyword")
    return config
