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
      labelled_examples: free_examples.csv  # optional, next to the brand file

``labelled_examples`` is a CSV (``text`` and any of ``sentiment``, ``priority``,
``topic``; an empty cell leaves that label out) of more tweets labelled by the brand's
team. The handful of examples per topic above is enough for the prompt and for a
usable local tier; a few hundred labelled tweets are what lifts the local tier above
the rules on tweets written by other people (docs/local-model.md has the measured
difference). The local tier trains on them (sentiment too); the prompt and
the rules do not read them.

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
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from stream_app.classify.types import SENTIMENTS

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
LABEL_COLUMNS = ("sentiment", "priority", "topic")


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
class LabelledExample:
    """One row of the brand's ``labelled_examples`` file; ``None``: label not given."""
    text: str
    sentiment: str | None
    priority: int | None
    topic: str | None


@dataclass(frozen=True)
class Taxonomy:
    topics: tuple[Topic, ...]
    priorities: tuple[PriorityLevel, ...]   # levels 0, 1, 2 in order
    # Only the local tier reads these (and :func:`fewshot.taxonomy_fingerprint` hashes
    # them): left out of equality and hashing, so the rules compiled per taxonomy are
    # not keyed on hundreds of rows.
    labelled: tuple[LabelledExample, ...] = field(default=(), compare=False, hash=False)

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
                        self.priorities, self.labelled)


@lru_cache(maxsize=4)
def builtin_taxonomy(brand: str = "free") -> Taxonomy:
    """The taxonomy of a brand shipped in ``stream_app/clean/brands/`` (``free`` is the
    default vocabulary of code that is given none)."""
    import yaml  # the brand files are YAML; importing it here keeps this module light

    folder = resources.files("stream_app.clean").joinpath("brands")
    data = yaml.safe_load(folder.joinpath(f"{brand}.yaml").read_text(encoding="utf-8"))
    return parse_taxonomy(data.get("taxonomy"), f"built-in brand {brand}", folder)


def parse_taxonomy(data: Any, source: str, folder: Any = None) -> Taxonomy:
    """The ``taxonomy`` section of a brand file (already YAML-decoded); ``folder`` (a
    path or an importlib resource) holds the files it names (``labelled_examples``)."""
    where = f"{source}: taxonomy"
    if not isinstance(data, Mapping):
        raise TaxonomyError(f"{where} must be a mapping with `topics` and `priorities`")
    _no_unknown(data, {"topics", "priorities", "labelled_examples"}, where)
    topics = _topics(data.get("topics"), where)
    priorities = _priorities(data.get("priorities"), where)
    taxonomy = Taxonomy(topics, priorities)
    if data.get("labelled_examples") is not None:
        taxonomy = replace(taxonomy, labelled=_labelled(data["labelled_examples"], folder, taxonomy, where))
    return taxonomy


def _labelled(name: Any, folder: Any, taxonomy: Taxonomy, where: str) -> tuple[LabelledExample, ...]:
    """The rows of the ``labelled_examples`` CSV; the first bad cell is one error."""
    import csv

    at = f"{where}.labelled_examples"
    if not isinstance(name, str) or not name.strip():
        raise TaxonomyError(f"{at} must be a CSV file name (relative to the brand file)")
    if folder is None:
        raise TaxonomyError(f"{at}: a brand given as text cannot name files; give the brand file's path")
    try:
        text = folder.joinpath(name).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TaxonomyError(f"{at}: {name} is not UTF-8 (byte {exc.start}); a spreadsheet saves it "
                            "as \"CSV UTF-8\"") from None
    except OSError as exc:
        raise TaxonomyError(f"{at}: cannot read {name} ({exc.strerror or exc})") from None
    reader = csv.DictReader(text.splitlines())
    columns = set(reader.fieldnames or ())
    present = [c for c in LABEL_COLUMNS if c in columns]
    if "text" not in columns or not present:
        hint = ("; it looks semicolon- or tab-separated: export it as CSV (comma-separated)"
                if any(d in "".join(columns) for d in ";\t") else "")
        raise TaxonomyError(f"{at}: {name} needs a `text` column and at least one of "
                            f"{', '.join(LABEL_COLUMNS)} (found {', '.join(sorted(columns)) or 'none'}){hint}")
    topics = set(taxonomy.topic_names)
    rows = []
    for line, record in enumerate(reader, start=2):
        tweet = (record.get("text") or "").strip()
        if not tweet:
            continue
        cells = {c: (record.get(c) or "").strip().lower() for c in present}
        for column, allowed in (("sentiment", SENTIMENTS), ("priority", ("0", "1", "2")),
                                ("topic", topics)):
            if cells.get(column) and cells[column] not in allowed:
                raise TaxonomyError(f"{at}: {name}, line {line}: {column} {cells[column]!r} is not one "
                                    f"of {', '.join(sorted(allowed))}")
        priority = cells.get("priority")
        rows.append(LabelledExample(tweet, cells.get("sentiment") or None,
                                    int(priority) if priority else None, cells.get("topic") or None))
    if not rows:
        raise TaxonomyError(f"{at}: {name} has no labelled row")
    return tuple(rows)


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


def taxonomy_to_dict(taxonomy: Taxonomy) -> dict:
    """The brand-file form of ``taxonomy`` without its labelled examples (JSON-ready):
    ``parse_taxonomy(taxonomy_to_dict(t), ...) == t``. A local-model artifact whose
    topic head reads the rules' answer keeps the rules it learned with this way."""
    topics = []
    for t in taxonomy.topics:
        entry: dict[str, Any] = {"name": t.name, "team": t.team, "description": t.description,
                                 "examples": list(t.examples)}
        if t.keyword_weights:
            by_weight: dict[float, list[str]] = {}
            for word, weight in t.keyword_weights:
                by_weight.setdefault(weight, []).append(word)
            entry["keywords"] = by_weight
        for key in ("urgent", "negated_verbs", "services"):
            value = getattr(t, key)
            if value:
                entry[key] = value if isinstance(value, bool) else list(value)
        topics.append(entry)
    return {"topics": topics,
            "priorities": {p.level: {"description": p.description, "examples": list(p.examples)}
                           for p in taxonomy.priorities}}


def taxonomy_from_json(data: dict, source: str) -> Taxonomy:
    """:func:`taxonomy_to_dict`'s output after a JSON round trip (whose keys are strings)."""
    topics = [dict(t, keywords={float(w): words for w, words in t["keywords"].items()})
              if "keywords" in t else t for t in data["topics"]]
    return parse_taxonomy(dict(data, topics=topics), source)
