"""A brand's taxonomy: the topics (each with its routing team) and the three priority
levels that every classifier tier uses, declared in the brand file, never in code.

The labels are the brand's: a telecom operator routes ``fibre`` to ``network_ops``, an
airline routes ``baggage`` to ``baggage_services``. The LLM prompt and its response
schema, the rules tier's keywords, the local model's heads and the dashboards all read
them from here. Each topic and each priority level comes with a description and example
tweets: the prompt quotes them, and the local tier learns from them.

Brand file section (see ``stream_app/clean/brands/free.yaml``)::

    taxonomy:
      topics:
        - name: network                 # [a-z0-9_], unique
          team: network_ops             # who handles it
          description: "Mobile network or general outage, no signal, ..."
          examples: ["plus de 4G du tout depuis ce matin", ...]   # MIN_TOPIC_EXAMPLES or more
          keywords: [4g, reseau]        # optional, for the rules tier (weight 1.5 each),
                                        # or by weight: {3.0: [panne totale], 1.0: [coupe]}
          urgent: true                  # optional: evidence of it makes a negative tweet P0
          negated_verbs: [marche, work] # optional: verbs meaning this topic when negated
          services: [internet, wifi]    # optional: "plus de wifi", "no internet" = outage
        - name: other                   # required: tweets about none of the others
          ...
      priorities:                       # 0 = act now, 1, 2 = low
        0: {description: "...", examples: [...]}    # MIN_PRIORITY_EXAMPLES or more
        1: {description: "...", examples: [...]}
        2: {description: "...", examples: [...]}

A mistake in it (an unknown key, a topic without enough examples, a missing team) is
one :class:`TaxonomyError` naming the file and the place.

The optional rules-tier fields (``keywords``, ``urgent``, ``negated_verbs``,
``services``) are read by :mod:`stream_app.classify.rules`, whose docstring says how;
the other tiers only need names, teams, descriptions and examples.
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources
from dataclasses import dataclass, replace
from typing import Any, Mapping

MIN_TOPIC_EXAMPLES = 8
MIN_PRIORITY_EXAMPLES = 6
FALLBACK_TOPIC = "other"
PRIORITY_LEVELS = (0, 1, 2)
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
DEFAULT_KEYWORD_WEIGHT = 1.5
MAX_KEYWORD_WEIGHT = 5.0
_TOPIC_KEYS = {"name", "team", "description", "examples", "keywords", "urgent", "negated_verbs",
               "services"}
_PRIORITY_KEYS = {"description", "examples"}


class TaxonomyError(ValueError):
    """The brand file's taxonomy cannot be used (the message says where and why)."""


@dataclass(frozen=True)
class Topic:
    name: str
    team: str
    description: str
    examples: tuple[str, ...]
    keywords: tuple[str, ...] = ()
    # Rules tier only (see stream_app.classify.rules): each keyword with its weight,
    # whether this topic's evidence makes a complaint urgent, the verbs that mean this
    # topic when negated, and the services whose loss ("plus de réseau") is an outage.
    keyword_weights: tuple[tuple[str, float], ...] = ()
    urgent: bool = False
    negated_verbs: tuple[str, ...] = ()
    services: tuple[str, ...] = ()


@dataclass(frozen=True)
class PriorityLevel:
    level: int
    description: str
    examples: tuple[str, ...]


@dataclass(frozen=True)
class Taxonomy:
    topics: tuple[Topic, ...]
    priorities: tuple[PriorityLevel, ...]   # levels 0, 1, 2 in order

    @property
    def topic_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.topics)

    @property
    def teams(self) -> dict[str, str]:
        """topic -> team."""
        return {t.name: t.team for t in self.topics}

    def topic(self, name: str) -> Topic:
        for topic in self.topics:
            if topic.name == name:
                return topic
        raise KeyError(name)

    @property
    def urgent_topics(self) -> tuple[str, ...]:
        """Topics flagged ``urgent: true``: their evidence makes a complaint priority 0."""
        return tuple(t.name for t in self.topics if t.urgent)

    def team_of(self, topic: str) -> str:
        teams = self.teams
        return teams.get(topic, teams[FALLBACK_TOPIC])

    def with_teams(self, teams: Mapping[str, str]) -> Taxonomy:
        """The same taxonomy routed by ``teams`` (topic -> team) where it names a topic."""
        return Taxonomy(tuple(replace(t, team=teams.get(t.name) or t.team) for t in self.topics),
                        self.priorities)


@lru_cache(maxsize=4)
def builtin_taxonomy(brand: str = "free") -> Taxonomy:
    """The taxonomy of a brand shipped in ``stream_app/clean/brands/`` (``free`` is the
    default vocabulary of code that is given none)."""
    import yaml  # the brand files are YAML; importing it here keeps this module light

    entry = resources.files("stream_app.clean").joinpath("brands", f"{brand}.yaml")
    data = yaml.safe_load(entry.read_text(encoding="utf-8"))
    return parse_taxonomy(data.get("taxonomy"), f"built-in brand {brand}")


def parse_taxonomy(data: Any, source: str) -> Taxonomy:
    """The ``taxonomy`` section of a brand file (already YAML-decoded)."""
    where = f"{source}: taxonomy"
    if not isinstance(data, Mapping):
        raise TaxonomyError(f"{where} must be a mapping with `topics` and `priorities`")
    _no_unknown(data, {"topics", "priorities"}, where)
    topics = _topics(data.get("topics"), where)
    priorities = _priorities(data.get("priorities"), where)
    return Taxonomy(topics, priorities)


def _no_unknown(data: Mapping, known: set[str], where: str) -> None:
    unknown = sorted(str(k) for k in set(data) - known)
    if unknown:
        raise TaxonomyError(f"{where}: unknown key(s) {', '.join(unknown)} "
                            f"(known: {', '.join(sorted(known))})")


def _texts(value: Any, where: str, minimum: int) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise TaxonomyError(f"{where}: examples must be a list of non-empty strings")
    texts = tuple(dict.fromkeys(v.strip() for v in value))
    if len(texts) < minimum:
        raise TaxonomyError(f"{where}: {len(texts)} distinct example(s); give at least {minimum}")
    return texts


def _topics(value: Any, where: str) -> tuple[Topic, ...]:
    if not isinstance(value, list) or not value:
        raise TaxonomyError(f"{where}: `topics` must be a non-empty list")
    topics, seen = [], set()
    for i, entry in enumerate(value):
        at = f"{where}.topics[{i}]"
        if not isinstance(entry, Mapping):
            raise TaxonomyError(f"{at} must be a mapping (name, team, description, examples)")
        _no_unknown(entry, _TOPIC_KEYS, at)
        name = entry.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise TaxonomyError(f"{at}: name must be lowercase letters, digits and _ "
                                f"(starting with a letter), got {name!r}")
        at = f"{where}.topics[{name}]"
        if name in seen:
            raise TaxonomyError(f"{at}: topic declared twice")
        seen.add(name)
        team = entry.get("team")
        if not isinstance(team, str) or not _NAME.match(team):
            raise TaxonomyError(f"{at}: team is missing or not a plain name (e.g. network_ops)")
        description = entry.get("description")
        if not isinstance(description, str) or not description.strip():
            raise TaxonomyError(f"{at}: description is missing")
        weighted = _keywords(entry.get("keywords"), at)
        urgent = entry.get("urgent", False)
        if not isinstance(urgent, bool):
            raise TaxonomyError(f"{at}: urgent must be true or false")
        topics.append(Topic(name, team, " ".join(description.split()),
                            _texts(entry.get("examples"), f"{at}", MIN_TOPIC_EXAMPLES),
                            tuple(dict.fromkeys(k for k, _ in weighted)), weighted, urgent,
                            _words(entry.get("negated_verbs"), f"{at}: negated_verbs"),
                            _words(entry.get("services"), f"{at}: services")))
    if FALLBACK_TOPIC not in seen:
        raise TaxonomyError(f"{where}: add a topic named `{FALLBACK_TOPIC}` (tweets about none of "
                            "the others), with its team, description and examples")
    return tuple(topics)


def _words(value: Any, where: str) -> tuple[str, ...]:
    """An optional list of words or phrases (numbers allowed: ``3244``, ``4g``)."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(
            isinstance(v, (str, int)) and not isinstance(v, bool) and str(v).strip() for v in value):
        raise TaxonomyError(f"{where} must be a list of words or phrases")
    return tuple(dict.fromkeys(str(v).strip() for v in value))


def _keywords(value: Any, where: str) -> tuple[tuple[str, float], ...]:
    """``keywords``: a list (each word DEFAULT_KEYWORD_WEIGHT) or ``{weight: [words]}``.
    A word listed under two weights keeps the first."""
    if value is None:
        return ()
    if isinstance(value, list):
        groups = [(DEFAULT_KEYWORD_WEIGHT, value)]
    elif isinstance(value, Mapping):
        groups = []
        for weight, words in value.items():
            if (isinstance(weight, bool) or not isinstance(weight, (int, float))
                    or not 0 < weight <= MAX_KEYWORD_WEIGHT):
                raise TaxonomyError(f"{where}: keyword weight {weight!r} must be a number in "
                                    f"(0, {MAX_KEYWORD_WEIGHT:g}]")
            groups.append((float(weight), words))
    else:
        raise TaxonomyError(f"{where}: keywords must be a list of words or phrases, or "
                            "{weight: [words]}")
    weighted: dict[str, float] = {}
    for weight, words in groups:
        for word in _words(words, f"{where}: keywords"):
            weighted.setdefault(word, weight)
    return tuple(weighted.items())


def _priorities(value: Any, where: str) -> tuple[PriorityLevel, ...]:
    if not isinstance(value, Mapping):
        raise TaxonomyError(f"{where}: `priorities` must map 0, 1 and 2 to "
                            "{description, examples}")
    levels = {}
    for key, entry in value.items():
        try:
            level = int(key)
        except (TypeError, ValueError):
            level = -1
        if level not in PRIORITY_LEVELS or str(key).strip() != str(level):
            raise TaxonomyError(f"{where}.priorities: unknown level {key!r} (levels are 0 = act now, "
                                "1, 2 = low)")
        at = f"{where}.priorities[{level}]"
        if not isinstance(entry, Mapping):
            raise TaxonomyError(f"{at} must be a mapping (description, examples)")
        _no_unknown(entry, _PRIORITY_KEYS, at)
        description = entry.get("description")
        if not isinstance(description, str) or not description.strip():
            raise TaxonomyError(f"{at}: description is missing")
        levels[level] = PriorityLevel(level, " ".join(description.split()),
                                      _texts(entry.get("examples"), at, MIN_PRIORITY_EXAMPLES))
    missing = [str(level) for level in PRIORITY_LEVELS if level not in levels]
    if missing:
        raise TaxonomyError(f"{where}.priorities: level(s) {', '.join(missing)} missing")
    return tuple(levels[level] for level in PRIORITY_LEVELS)
