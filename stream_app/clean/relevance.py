"""Is a tweet about the brand, and is it the brand's own post? Driven by a brand
configuration (``brands/<name>.yaml`` or ``DALLOSH_BRAND_FILE``), never by code."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from stream_app.settings import Settings, SettingsError

CUSTOMER, BRAND_OWN, OFF_TOPIC = "customer", "brand_own", "off_topic"
POLICIES = ("tag", "drop")


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


def load_brand(settings: Settings) -> BrandConfig:
    if settings.brand_file is not None:
        source, path = f"DALLOSH_BRAND_FILE={settings.brand_file}", Path(settings.brand_file)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise SettingsError(f"{source}: cannot read ({exc.strerror})") from None
    else:
        source = f"DALLOSH_BRAND={settings.brand}"
        entry = resources.files("stream_app.clean").joinpath("brands", f"{settings.brand}.yaml")
        if not entry.is_file():
            raise SettingsError(f"{source}: no such built-in brand (built in: free, airline); "
                                "or point DALLOSH_BRAND_FILE at your own YAML")
        text = entry.read_text(encoding="utf-8")
    return parse_brand(text, source)


def parse_brand(text: str, source: str) -> BrandConfig:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise SettingsError(f"{source}: not valid YAML ({exc})") from None
    except RecursionError:  # PyYAML recurses once per nesting level
        raise SettingsError(f"{source}: nested too deeply to be a brand file") from None
    if not isinstance(data, dict):
        raise SettingsError(f"{source}: must be a mapping (name, accounts, keywords, ...), "
                            f"not {type(data).__name__}")
    for key in ("accounts", "keywords"):
        if not isinstance(data.get(key) or [], list):
            raise SettingsError(f"{source}: {key} must be a list")
    data = data | {key: data.get(key) or [] for key in ("accounts", "keywords")}
    try:
        config = BrandConfig(
            name=str(data["name"]),
            accounts=frozenset(_fold(str(a).lstrip("@")) for a in data.get("accounts", [])),
            keywords=tuple(str(k) for k in data.get("keywords", [])),
            own_posts=str(data.get("own_posts", "tag")),
            off_topic=str(data.get("off_topic", "tag")))
    except KeyError as exc:
        raise SettingsError(f"{source}: missing key {exc}") from None
    for key in ("own_posts", "off_topic"):
        if getattr(config, key) not in POLICIES:
            raise SettingsError(f"{source}: {key} must be one of {POLICIES}")
    if not config.accounts and not config.keywords:
        raise SettingsError(f"{source}: give at least one account or keyword")
    return config
