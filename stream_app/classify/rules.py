"""The DEGRADED tier: a transparent lexicon-and-rules classifier that needs no model.

``classify_text(text, taxonomy=brand.taxonomy)`` (or ``compile_rules(taxonomy).classify``)
never raises and returns a :class:`RuleClassification` whose ``reason`` lists the
evidence it used. It is the cascade's last resort, so its
``confidence`` never exceeds 0.95.

How it reads a tweet
    Mentions and URLs are dropped, the text is lower-cased and accents are removed
    (``"Déçu"`` == ``"decu"``), then it is cut into word, emoji and punctuation tokens.
    Letters repeated three times or more are squeezed (``"nuuuul"`` -> ``"nul"``,
    ``"cooool"`` -> ``"cool"``). Lexicon phrases are matched longest first, then words.

Sentiment
    Each lexicon word or phrase has a weight (negative < 0 < positive); emojis and
    emoticons are words too (😡🤬👎💩 negative, 😍👍🙏😊❤️ positive, 😂🤣 ambiguous:
    reported but weightless). The weight is scaled by

    * an intensifier just before (``très trop vraiment super hyper so very really``),
      by a word written in CAPITALS (three letters or more) or elongated, and by
      ``!!`` or a shouted tweet (all of it);
    * negation: ``ne n' pas jamais aucun rien not no never n't nobody`` negate the
      next three tokens (up to punctuation). A negated positive turns negative
      (``"pas satisfait"``), a negated negative is cancelled (``"jamais de panne"``).
      "Does not work" verbs (``marche fonctionne capte passe charge works connect``)
      are negative only when negated, before them or just after in French
      (``"ça marche pas"``, ``"ne fonctionne plus"``, ``"not working"``);
    * contrast: after ``mais``/``but``/``par contre`` words count 1.5x, before it 0.6x;
    * sarcasm: in a complaint (some negative evidence, more than the sincere
      positives, no "it is fixed" word and no contrast) the sarcasm-prone praise
      (``merci bravo génial super thanks great 👏``) counts as negative
      (``"Bravo Free, encore une panne"``);
    * a duration (``"depuis 3 jours"``, ``"for two weeks"``) is a mild complaint.

    The sum decides: >= 0.5 positive, <= -0.5 negative, neutral otherwise.
    Confidence: no evidence -> 0.4; neutral -> 0.4; otherwise
    ``0.45 + 0.45 * margin * (1 - exp(-evidence / 2))`` where evidence is the summed
    absolute weight and margin ``|pos - neg| / evidence``, capped at 0.95.

Topic (the brand's: :class:`~stream_app.taxonomy.Taxonomy`)
    The topics and their words come from the brand file's taxonomy, never from code;
    :func:`compile_rules` merges them into the lexicon once per taxonomy. Per topic:

    * ``keywords`` (``{weight: [words or phrases]}``): weighted hits; a phrase also
      counts for its words' topics. The built-in ``free`` brand carries the French/
      English telecom lexicon this tier was tuned on.
    * ``negated_verbs``: a negated "does not work" verb counts 2.0 for that topic
      (``"ça capte plus"`` -> mobile, ``"nobody answers"`` -> customer service).
    * ``services``: losing one (``"plus de réseau"``, ``"sans box"``, ``"no signal"``)
      is negative (-1.5) and counts 2.5 for the urgent topics, 1.0 for that topic.
    * No keywords at all: the content words of the topic's name (x3), description and
      examples, accent-folded, stopwords and feeling words out, singular and plural,
      count 0.4 per mention (at most 3), shared out among the topics that use the word.

    The highest score of at least 0.4 wins; ties go to the topic declared first (the
    ``free`` brand lists ``outage`` first, so it wins any tie it is part of). Nothing ->
    the fallback ``"other"``.

Priority (0 = high; no topic name is special)
    0: negative and (evidence (>= 0.4) of a topic flagged ``urgent: true`` in the
    taxonomy -- ``outage`` for ``free``, ``delays_cancellations`` for ``airline`` --, or
    urgency: a duration, ``urgent``, ``toujours rien``, a threat to leave or sue, a
    vulnerable person or remote work, or strong anger: negative evidence >= 4).
    1: other negatives, and questions/requests (``?``, ``comment``, ``svp``, ``help``...)
    about a topic other than ``other``. 2: everything else.

Team
    ``teams[topic]`` when a ``teams`` mapping is given and names the topic, else the
    taxonomy's team for it.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
from typing import Iterator, Mapping

from stream_app.classify.types import SENTIMENTS
from stream_app.taxonomy import FALLBACK_TOPIC, Taxonomy, builtin_taxonomy

__all__ = ["SENTIMENTS", "TOPICS", "DEFAULT_TEAMS", "DEFAULT_TAXONOMY", "RuleClassification",
           "RuleSet", "classify_text", "compile_rules"]

# The vocabulary of code given no taxonomy: the built-in ``free`` brand's.
DEFAULT_TAXONOMY: Taxonomy = builtin_taxonomy("free")
TOPICS: tuple[str, ...] = DEFAULT_TAXONOMY.topic_names
DEFAULT_TEAMS: Mapping[str, str] = MappingProxyType(DEFAULT_TAXONOMY.teams)

MAX_CONFIDENCE = 0.95


@dataclass(frozen=True)
class RuleClassification:
    sentiment: str  # one of SENTIMENTS
    priority: int  # 0 = high, 1 = medium, 2 = low
    topic: str  # one of the taxonomy's topic names
    team: str
    confidence: float  # 0..1, at most MAX_CONFIDENCE
    reason: str  # short, human-readable evidence


# --------------------------------------------------------------------------------------
# Lexicons. Written as people write (accents, apostrophes); folded at import. Each line
# is "weight: entry, entry, ..." and an entry may be a phrase.

_NEGATIVE = """
-2.0: arnaque, arnaques, arnaqueur, arnaqueurs, escroc, escrocs, escroquerie, voleur,
      voleurs, scandale, scandaleux, scandaleuse, inadmissible, inacceptable, honteux,
      honteuse, honte, la honte, lamentable, pitoyable, minable, catastrophique,
      dégueulasse, dégoûtant, nul, nulle, nuls, nulles, nul à chier, pourri, pourrie,
      pourris, merde, merdique, bordel, insupportable, incompétent, incompétents,
      incompétence, foutage de gueule, se foutent de, vous foutez de, ras le bol,
      j'en ai marre, marre, furieux, furieuse, furax, remboursement refusé,
      scam, scammers, rip off, ripoff, disgrace, disgraceful, disgusting, pathetic,
      unacceptable, outrageous, shameful, worst, awful, useless, fed up, sick of, crap,
      shit, sucks, hate, 😡, 🤬, 💩, 🖕
-1.5: catastrophe, horrible, terrible, inutile, inutilisable, décevant, décevante, déçu,
      déçue, déçus, déception, mécontent, mécontente, insatisfait, insatisfaite, énervé,
      énervée, énervant, exaspéré, exaspérée, abusé, abusif, abusive, n'importe quoi,
      c'est une blague, se moque, vous moquez, mépris, galère, galères, galérer,
      injoignable, toujours rien, toujours pas, toujours en panne, toujours en attente,
      sans réponse, aucune réponse, aucun retour, personne ne répond, pas normal,
      trop cher, hors de prix, ridicule, ridicules, dégoûté, dégoûtée, pire, pires,
      ridiculous, annoying, frustrating, frustrated, disappointed, disappointing, angry,
      furious, nightmare, unreliable, broken, worse, still not, still no,
      overcharged, 😤, 👎, 😠, 🤡
-1.0: panne, pannes, coupure, coupures, coupé, coupée, coupe, coupent, bug, bugs, buggé,
      beug, beugue, plante, plantent, planter, plantage, plantages, rame, rament, ramer,
      lent, lente, lents, lenteur, lenteurs, problème, problèmes, souci, soucis,
      impossible, erreur, erreurs, bloqué, bloquée, instable, instabilité, déconnexion,
      déconnexions, déconnecte, déconne, hs, hors service, en boucle, pénible, chiant,
      chiante, relou, saoulé, ça craint, pas terrible, pas top, blague, sans prévenir,
      pour rien, tourne en rond, tournent en rond, regrette, regret, s'éteint, éteinte,
      bad, poor, slow, issue, issues, problem, problems, error, fail, failed, failing,
      failure, lag, laggy, unstable, stuck, disconnecting, disconnected, disconnects,
      dropping, annoyed, unhappy, dissatisfied, complaint, plainte, expensive, grr,
      argh, pff,
      😞, 😢, 😭, 🙄, 😒, 💔, 😩, 😫, 🤦, ☹, 🙁, 😖, 😣, :(, :-(, :'(
-0.5: attente, attendre, j'attends, retard, retards, malheureusement, dommage, cher,
      chère, augmentation, hausse, augmenté, comme d'hab, encore une, encore un,
      sans arrêt, à mort, zéro, saute, sautent, deux fois, double, doubled, again,
      waiting, redémarre, chauffe,
      😑, 😕, :/
"""

_POSITIVE = """
2.0: génial, géniale, excellent, excellente, parfait, parfaite, impeccable, formidable,
     exceptionnel, au top, trop bien, ravi, ravie, ravis, je recommande, que du bonheur,
     amazing, awesome, perfect, fantastic, brilliant, outstanding, love it, 😍, 🥰
1.5: super, top, bravo, félicitations, chapeau, nickel, efficace, efficaces, réactif,
     réactive, réactivité, satisfait, satisfaite, satisfaits, content, contente,
     contents, heureux, heureuse, adore, j'adore, merveilleux, magnifique,
     rien à redire, rien à dire, aucun regret, meilleur, meilleure, fait plaisir,
     bonheur, recommande, merci beaucoup, great, love, happy, pleased, satisfied,
     helpful, best, kudos, smooth, recommend, well done, thank you, 👍, 😊, ❤, ♥, 🤩, 🥳
1.0: mieux, better, rapide, rapides, rapidement, sympa, cool, agréable, aimable, gentil,
     gentille, compétent, compétente, professionnel, fiable, stable, fluide, respect,
     plaisir, ai hâte, trop hâte, hâte de, good, nice, fast, reliable, 😀, 😃, 😁, 👌, 💪, 🎉,
     👏, 😘, 💯, 🚀, 💚, 💙, 💜, 🧡, 💛, :), :-), :d, =)
0.8: merci, thanks, thx, quick, pas mal, not bad, aucun problème, aucun souci,
     sans problème, sans souci, 🙏, 🙂, 😎
0.5: pas de problème, pas de souci, correct, patient, patiente, pro, bonne, ✨, ✅
0.4: bien
"""

# Praise that reads as sarcasm inside a complaint ("Merci Free pour cette panne 👏").
_SARCASTIC = """merci, merci beaucoup, bravo, génial, géniale, super, top, chapeau,
    félicitations, thanks, thank you, thx, great, nice, love, 👏, 🙏"""

# "It is fixed": thanks after a repair are sincere.
_RESOLUTION = """
1.0: réglé, réglée, résolu, résolue, rétabli, rétablie, revenu, revenue, corrigé,
     corrigée, réparé, réparée, remarche, refonctionne, fonctionne à nouveau,
     marche à nouveau, fixed, resolved, solved, repaired, works again, back up, is back
"""

_AMBIGUOUS_EMOJIS = "😂, 🤣, 😅, 🙃, 😏"

# Verbs that are negative only when negated ("ça marche pas"), whatever the brand; the
# taxonomy's ``negated_verbs`` say which topic such a phrase is about, and add verbs.
_BROKEN_VERBS = """marche, marchent, marcher, fonctionne, fonctionnent, fonctionner,
    charge, chargent, charger, connecte, connectent, connecter, synchronise, accroche,
    work, works, working, worked, load, loads, loading, connect, connects, connecting,
    capte, captent, capter, passe, passent, répond, répondent, répondre, repond, aide, aident,
    aider, respond, responds, responding, reply, replies, answer, answers, answering,
    help, helps"""

_NEGATORS = """ne, n, pas, jamais, aucun, aucune, rien, ni, not, no, never, t, cannot,
    cant, dont, doesnt, didnt, isnt, wasnt, wont, aint, nobody, no one, nothing"""
_AFTER_VERB_NEGATORS = frozenset({"pas", "plus", "jamais", "rien"})
# "ne fait que planter" is an intensifier, not a negation.
_NOT_NEGATIONS = """ne fait que, ne font que, n'arrête pas de, n'arrête pas, arrête pas de,
    ne cesse de"""

_INTENSIFIERS = """
1.6: extrêmement, extremely, à mort
1.5: très, trop, tellement, hyper, ultra, complètement, totalement, absolument,
     vraiment trop, totally, completely, absolutely, incredibly, ne fait que,
     ne font que, n'arrête pas de, n'arrête pas, arrête pas de, ne cesse de
1.4: vraiment, super, carrément, vachement, really, very
1.3: grave, si, so
"""

_CONTRASTS = "mais, but, par contre, cependant, however, sauf que, pourtant"

_QUESTIONS = """comment, pourquoi, quand, combien, est ce que, quelqu'un sait, savez vous,
    pouvez vous, how, why, when, can you, could you, does anyone, anyone know, svp,
    s'il vous plaît, stp, please, pls, plz, aidez moi, help"""

# Urgency markers (priority 0 when the tweet is negative). Threats also count as negative
# words with the weight given.
_URGENCY = """urgent, urgence, au plus vite, asap, emergency, toujours rien,
    télétravail, télétravailler, bosser, travailler, mon travail, mon boulot,
    work from home, wfh, remote work, mon entreprise, mon activité, âgé, âgée, âgés, âgées,
    personne âgée, personnes âgées, handicap, handicapé, handicapée, malade, hôpital,
    hospitalisé, téléassistance, oxygène, dialyse, médical, médicale, elderly,
    disabled, disability, medical, hospital"""
_THREATS = """
-1.0: je résilie, je vais résilier, je veux résilier, je me casse, je me barre,
      je quitte free, je pars chez, changer d'opérateur, aller voir ailleurs, cancel my,
      cancelling, canceling, switching to, leaving free, porter plainte, avocat,
      ufc que choisir, que choisir, 60 millions, médiateur, arcep, dgccrf, tribunal,
      lawyer, class action, signalconso
-0.5: chez orange, chez sfr, chez bouygues, chez sosh, chez red
"""

# A lost service: "plus de réseau", "pas d'internet", "sans box", "no signal" (the
# nouns are the taxonomy topics' ``services``).
_LOSS_WORDS = ("plus de", "plus d", "plus", "pas de", "pas d", "sans", "aucun", "aucune",
               "zéro", "0", "no", "without", "lost", "perdu")

# Durations that make a complaint persistent (and urgent).
_NUMBER = (r"(?:\d+|un|une|deux|trois|quatre|cinq|six|sept|huit|neuf|dix|quinze|"
           r"plusieurs|des|a|one|two|three|four|five|six|several|few|a few)")
_UNIT = r"(?:jours?|semaines?|mois|days?|weeks?|months?)"
_DURATION = re.compile(
    rf"\b(?:(?:depuis|ca fait|cela fait|for|since|over)\s+{_NUMBER}\s+{_UNIT}"
    rf"|{_NUMBER}\s+{_UNIT}\s+(?:sans|without|que|qu)"
    rf"|for\s+{_UNIT})\b")
_ELDERLY = re.compile(r"\b[7-9]\d (?:ans|years? old)\b")

# --------------------------------------------------------------------------------------
# Text handling.

_COMBINING = re.compile("[\u0300-\u036f]+")
_STRIP = re.compile(r"@\w+|<url:[^>]*>|https?://\S+")
_EMOJI = "[\U0001F300-\U0001FAFF\u2600-\u27BF\u2B50]"
_TOKEN = re.compile(rf"[:;=]'?-?[()/dp](?![a-z])|[a-z0-9]+|€|[!?]+|[.,;:]|{_EMOJI}")
_ELONGATED = re.compile(r"([a-z])\1{2,}")
_CAPS_WORD = re.compile(r"\b[A-ZÀ-Ý]{3,}\b")
_UPPER = re.compile(r"[A-ZÀ-Ý]")
_LOWER = re.compile(r"[a-zà-ÿ]")
_PUNCTUATION = frozenset(".,;:")
_DURATION_HINT = re.compile("jour|semaine|mois|day|week|month")


def _normalise(text: str) -> str:
    """Mentions and URLs out, lower case, accents off: what the lexicon is written in."""
    if "@" in text or "<url:" in text or "http" in text:
        text = _STRIP.sub(" ", text)
    text = text.lower()
    if not text.isascii():
        text = _COMBINING.sub("", unicodedata.normalize("NFKD", text))
        if "œ" in text or "æ" in text:
            text = text.replace("œ", "oe").replace("æ", "ae")
    return text


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(_normalise(text))


@dataclass(frozen=True, slots=True)
class _Term:
    label: str  # as written in the lexicon, for reasons
    length: int  # tokens
    sentiment: float = 0.0
    topics: tuple[tuple[str, float], ...] = ()
    negator: bool = False
    self_negated: bool = False  # a phrase that carries its own negation ("pas top")
    intensifier: float = 0.0
    broken: bool = False  # a "does not work" verb: negative when negated
    broken_topic: str = ""  # ... and then about this topic, if the taxonomy says so
    sarcastic: bool = False
    resolution: bool = False
    urgency: str = ""  # "urgency" or "threat"
    question: bool = False
    contrast: bool = False
    ambiguous: bool = False


def _entries(spec: str) -> Iterator[tuple[float, str]]:
    """(weight, entry) from "weight: a, b, c" lines; a line without weight is 1.0."""
    weight = 1.0
    for line in spec.strip().splitlines():
        head, sep, rest = line.partition(":")
        if sep and re.fullmatch(r"\s*-?\d+(?:\.\d+)?", head):
            weight, line = float(head), rest
        for entry in line.split(","):
            if entry.strip():
                yield weight, entry.strip()


_Lexicon = dict[str, tuple[tuple[tuple[list[str], _Term], ...], _Term | None]]

# Words too common to say what a tweet is about, for topics that have no keywords.
_STOPWORDS = frozenset(_normalise(w) for w in """
    a à ai au aux avec avez avoir c ça ce ces cet cette chez comme d dans de des du elle en
    est et été être eu fait faire il ils j je l la le les leur lui m ma mais me même mes moi
    mon n ne ni nos notre nous on ont ou où par pas peu plus pour qu que qui s sa sans se
    ses si son sont sur t ta te tes toi ton tous tout toute toutes très tu un une vos votre
    vous y déjà encore depuis aussi alors donc bien quand quoi comment pourquoi ici rien
    the and or of to in on at for with from by is are was were be been being it its this
    that these those i me my we our you your he she they them their his her an as not no
    but if so do does did have has had can could will would just get got any all some
    about into over than then there what when which who why how also still too very one
    etc e g eg ie such like other others none above brand customer customers tweet tweets
    """.split())
_DERIVED_WEIGHT = 0.4   # per mention, for a topic without keywords (capped at 3 mentions)
_MIN_TOPIC_SCORE = 0.4  # below it the tweet is about no topic in particular


def _derived_words(taxonomy: Taxonomy, feeling: set[tuple[str, ...]]) -> dict[str, dict[str, float]]:
    """word -> {topic: weight} for the topics without keywords (except the fallback): the
    content words of the topic's name (3 mentions), description and examples (1 each),
    singular and plural, shared out among all the topics whose texts use the word (the
    fallback's too), none used by more than half the topics (the brand's name), and none
    of the feeling words (sentiment, negation, questions) that every topic's tweets use."""
    mentions: dict[str, dict[str, int]] = {}
    for topic in taxonomy.topics:
        texts = [(topic.name.replace("_", " "), 3), (topic.description, 1)]
        texts += [(example, 1) for example in topic.examples]
        for text, count in texts:
            for word in set(_tokens(text)):
                if (len(word) < 3 or word.isdigit() or word in _STOPWORDS
                        or (word,) in feeling or not word[0].isalpha()):
                    continue
                forms = {word, word[:-1] if word.endswith("s") and len(word) > 3 else word + "s"}
                for form in forms:
                    counts = mentions.setdefault(form, {})
                    counts[topic.name] = counts.get(topic.name, 0) + count
    learnt = {t.name for t in taxonomy.topics if not t.keywords and t.name != FALLBACK_TOPIC}
    derived = {}
    for word, counts in mentions.items():
        if len(counts) > len(taxonomy.topics) / 2:
            continue
        weights = {topic: _DERIVED_WEIGHT * min(n, 3) / len(counts)
                   for topic, n in counts.items() if topic in learnt}
        if weights:
            derived[word] = weights
    return derived


@lru_cache(maxsize=16)
def _build_lexicon(taxonomy: Taxonomy) -> _Lexicon:
    fields: dict[tuple[str, ...], dict] = {}

    def term(entry: str) -> dict:
        key = tuple(_tokens(entry))
        if not key:
            raise ValueError(f"lexicon entry {entry!r} has no token")
        return fields.setdefault(key, {"label": entry, "topics": {}})

    for spec in (_NEGATIVE, _POSITIVE, _RESOLUTION):
        for weight, entry in _entries(spec):
            term(entry)["sentiment"] = weight
    for _, entry in _entries(_RESOLUTION):
        term(entry)["resolution"] = True
    for _, entry in _entries(_SARCASTIC):
        term(entry)["sarcastic"] = True
    for _, entry in _entries(_AMBIGUOUS_EMOJIS):
        term(entry)["ambiguous"] = True
    for _, entry in _entries(_BROKEN_VERBS):
        term(entry)["broken"] = True
    for _, entry in _entries(_NEGATORS):
        term(entry)["negator"] = True
    for weight, entry in _entries(_INTENSIFIERS):
        term(entry)["intensifier"] = weight
    for _, entry in _entries(_CONTRASTS):
        term(entry)["contrast"] = True
    for _, entry in _entries(_QUESTIONS):
        term(entry)["question"] = True
    for _, entry in _entries(_URGENCY):
        term(entry)["urgency"] = "urgency"
    for weight, entry in _entries(_THREATS):
        fields_ = term(entry)
        fields_.update(urgency="threat", sentiment=min(fields_.get("sentiment", 0), weight))
    feeling = set(fields)

    # The brand's vocabulary (the taxonomy): keywords, negated verbs, lost services.
    def brand_term(entry: str) -> dict | None:
        return term(entry) if _tokens(entry) else None  # "$" alone: nothing to match

    for topic in taxonomy.topics:
        for entry, weight in topic.keyword_weights:
            if (fields_ := brand_term(entry)) is not None:
                fields_["topics"][topic.name] = weight
        for entry in topic.negated_verbs:
            if (fields_ := brand_term(entry)) is not None:
                fields_.update(broken=True, broken_topic=topic.name)
    for word, weights in _derived_words(taxonomy, feeling).items():
        for name, weight in weights.items():
            term(word)["topics"].setdefault(name, weight)
    for topic in taxonomy.topics:
        for noun in topic.services:
            for loss in _LOSS_WORDS:
                if (fields_ := brand_term(f"{loss} {noun}")) is None:
                    continue
                fields_.setdefault("sentiment", -1.5)
                for urgent in taxonomy.urgent_topics:
                    fields_["topics"].setdefault(urgent, 2.5)
                fields_["topics"].setdefault(topic.name, 1.0)
    for _, entry in _entries(_NOT_NEGATIONS):
        term(entry)  # a phrase, so its "ne"/"n'" is not read as a negator
    # A phrase also counts for the topics of its words ("remboursement refusé": billing).
    for key, f in fields.items():
        for word in key if len(key) > 1 else ():
            for topic_name, weight in fields.get((word,), {}).get("topics", {}).items():
                f["topics"].setdefault(topic_name, weight)

    # A phrase holding a negation ("pas top", "personne ne répond") and any negative
    # phrase ("plus de réseau" in "je n'ai plus de réseau") is immune to an outer
    # negation; one that ends with a negation ("toujours pas") negates what follows.
    negator_words = {_tokens(e)[0] for _, e in _entries(_NEGATORS)}
    not_negations = {tuple(_tokens(e)) for _, e in _entries(_NOT_NEGATIONS)}
    words: dict[str, _Term] = {}
    phrases: dict[str, list[tuple[list[str], _Term]]] = {}
    for key, f in fields.items():
        topics = f.pop("topics")
        if len(key) > 1 and key not in not_negations:
            f["negator"] = f.get("negator", False) or key[-1] in negator_words
        immune = len(key) > 1 and (f.get("sentiment", 0) < 0
                                   or not negator_words.isdisjoint(key))
        frozen = _Term(length=len(key), topics=tuple(topics.items()), self_negated=immune,
                       **f)
        if len(key) == 1:
            words[key[0]] = frozen
        else:
            phrases.setdefault(key[0], []).append((list(key), frozen))
    # One entry per first token: (phrases starting with it, longest first; the word).
    lexicon = {}
    for first in words.keys() | phrases.keys():
        candidates = sorted(phrases.get(first, ()), key=lambda c: -len(c[0]))
        lexicon[first] = (tuple(candidates), words.get(first))
    return lexicon


class RuleSet:
    """The rules compiled for one taxonomy (its keywords merged into the lexicon): build
    it once per brand (:func:`compile_rules`) and classify many tweets with it."""

    def __init__(self, taxonomy: Taxonomy) -> None:
        self.taxonomy = taxonomy
        self.lexicon = _build_lexicon(taxonomy)
        self.topic_order = taxonomy.topic_names   # ties go to the earlier topic
        self.teams = taxonomy.teams
        self.urgent = taxonomy.urgent_topics

    def classify(self, text: str, teams: Mapping[str, str] | None = None,
                 sentiment: str | None = None) -> RuleClassification:
        return _classify(self, text, teams, sentiment)


@lru_cache(maxsize=16)
def compile_rules(taxonomy: Taxonomy) -> RuleSet:
    return RuleSet(taxonomy)


def _lookup(tokens: list[str], i: int, lexicon: _Lexicon) -> _Term | None:
    """The longest lexicon phrase or word starting at token ``i``."""
    entry = lexicon.get(tokens[i])
    if entry is None:
        return None
    for key, term in entry[0]:
        if tokens[i:i + len(key)] == key:
            return term
    return entry[1]


def _squeeze(token: str, lexicon: _Lexicon) -> str:
    """An elongated word back to the lexicon: "nuuuul" -> "nul", "cooool" -> "cool"."""
    double = _ELONGATED.sub(r"\1\1", token)
    if double in lexicon:
        return double
    single = _ELONGATED.sub(r"\1", token)
    return single if single in lexicon else double


# --------------------------------------------------------------------------------------
# Classification.

class _Evidence:
    """What one pass over the tokens found."""

    __slots__ = ("hits", "topics", "labels", "urgency", "question", "contrast_at",
                 "resolution", "intensity_notes")

    def __init__(self) -> None:
        # (token position, weight, term, label as reported)
        self.hits: list[tuple[int, float, _Term, str]] = []
        self.topics: dict[str, float] = {}
        self.labels: dict[str, list[str]] = {}
        self.urgency: list[str] = []
        self.question = False
        self.contrast_at = -1
        self.resolution = False
        self.intensity_notes: list[str] = []

    def note(self, kind: str, label: str) -> None:
        labels = self.labels.setdefault(kind, [])
        if label not in labels:
            labels.append(label)


def _read(text: str, lexicon: _Lexicon) -> _Evidence:
    evidence = _Evidence()
    normalised = _normalise(text)
    tokens = _TOKEN.findall(normalised)
    elongated: set[int] = set()
    if _ELONGATED.search(normalised):
        for index, token in enumerate(tokens):
            if _ELONGATED.search(token):
                tokens[index] = _squeeze(token, lexicon)
                elongated.add(index)
    caps = {_normalise(word) for word in _CAPS_WORD.findall(text)}

    negated_until = -1
    boost, boost_until = 1.0, -1
    i, n = 0, len(tokens)
    while i < n:
        token = tokens[i]
        entry = lexicon.get(token)
        if entry is None:
            if token in _PUNCTUATION or token[0] in "!?":  # a clause ends
                negated_until, boost_until = -1, -1
                if "?" in token:
                    evidence.question = True
                if len(token) > 1 and "!" in token:
                    evidence.intensity_notes.append(token)
            i += 1
            continue
        term = entry[1]
        for key, phrase in entry[0]:
            if tokens[i:i + len(key)] == key:
                term = phrase
                break
        if term is None:
            i += 1
            continue
        end = i + term.length
        for topic, weight in term.topics:
            evidence.topics[topic] = evidence.topics.get(topic, 0.0) + weight
            evidence.note("topic", term.label)
        if term.urgency:
            evidence.urgency.append(term.label)
        evidence.question |= term.question
        if term.contrast:
            evidence.contrast_at = i
        if term.negator:
            negated_until = end + 2
        if term.ambiguous:
            evidence.note("ambiguous emoji", term.label)

        if term.broken:
            after = tokens[end:end + 2]
            if i <= negated_until or any(t in _AFTER_VERB_NEGATORS for t in after):
                if term.broken_topic:
                    evidence.topics[term.broken_topic] = (
                        evidence.topics.get(term.broken_topic, 0.0) + 2.0)
                evidence.hits.append((i, -1.5, term, f"{term.label} (negated)"))
        elif term.intensifier and _starts_sentiment(tokens, end, lexicon):
            boost, boost_until = term.intensifier, end + 1
        elif term.sentiment:
            weight = term.sentiment
            if i <= boost_until:
                weight *= boost
            if tokens[i] in caps and len(tokens[i]) >= 3:
                weight *= 1.5
                evidence.intensity_notes.append("CAPS")
            if i in elongated:
                weight *= 1.3
                evidence.intensity_notes.append("elongation")
            label = term.label
            if i <= negated_until and not term.self_negated:
                weight = -0.8 * weight if weight > 0 else 0.0
                label = f"{term.label} (negated)"
            evidence.resolution |= term.resolution and weight > 0
            if weight:
                evidence.hits.append((i, weight, term, label))
        i = end

    duration = _DURATION_HINT.search(normalised) and _DURATION.search(normalised)
    if duration:
        evidence.urgency.append(duration.group())
        position = len(_TOKEN.findall(normalised, 0, duration.start()))  # a token index
        evidence.hits.append((position, -0.5, _DURATION_TERM, duration.group()))
    if (" ans" in normalised or "year" in normalised) and _ELDERLY.search(normalised):
        evidence.urgency.append("personne âgée")
    if caps:
        upper, lower = len(_UPPER.findall(text)), len(_LOWER.findall(text))
        if upper >= 10 and upper > 2 * lower:
            evidence.intensity_notes.append("shouting")
    return evidence


_DURATION_TERM = _Term(label="duration", length=1)


def _starts_sentiment(tokens: list[str], i: int, lexicon: _Lexicon) -> bool:
    """Whether the token at ``i`` is a sentiment word (so the one before intensifies)."""
    if i >= len(tokens):
        return False
    term = _lookup(tokens, i, lexicon)
    return term is not None and bool(term.sentiment or term.intensifier or term.broken)


def _score(evidence: _Evidence) -> tuple[float, float, list[str]]:
    """(positive, negative) magnitudes after contrast, sarcasm and intensity, and the
    labels of the praise read as sarcasm."""
    weighted = []
    for position, weight, term, label in evidence.hits:
        if evidence.contrast_at >= 0 and position != evidence.contrast_at:
            weight *= 1.5 if position > evidence.contrast_at else 0.6
        weighted.append((position, weight, term, label))
    negative = -sum(w for _, w, _, _ in weighted if w < 0)
    sincere = sum(w for _, w, t, _ in weighted if w > 0 and not t.sarcastic)
    complaint = (negative > 0 and negative >= sincere and not evidence.resolution
                 and evidence.contrast_at < 0)  # "top mais ça plante" is no sarcasm
    positive = 0.0
    sarcasm = []
    for position, weight, term, label in weighted:
        if weight <= 0:
            continue
        if term.sarcastic and complaint:
            negative += 0.5 * weight
            sarcasm.append(label)
        else:
            positive += weight
    factor = 1.0
    if any(note.count("!") >= 2 for note in evidence.intensity_notes):
        factor *= 1.2
    if "shouting" in evidence.intensity_notes:
        factor *= 1.3
    return positive * factor, negative * factor, sarcasm


def classify_text(text: str, teams: Mapping[str, str] | None = None,
                  sentiment: str | None = None, *,
                  taxonomy: Taxonomy | RuleSet | None = None) -> RuleClassification:
    """Classify one tweet with the lexicon and rules of the module docstring, into the
    topics of ``taxonomy`` (a brand's, or its compiled :class:`RuleSet`; the built-in
    ``free`` one when none is given). ``teams`` overrides the taxonomy's routing where it
    names a topic. A ``sentiment`` given by a better classifier (the local model)
    replaces the lexicon's, and priority follows from it."""
    if isinstance(taxonomy, RuleSet):
        rules = taxonomy
    else:
        rules = compile_rules(taxonomy if taxonomy is not None else DEFAULT_TAXONOMY)
    return _classify(rules, text, teams, sentiment)


def _classify(rules: RuleSet, text: str, teams: Mapping[str, str] | None,
              sentiment: str | None) -> RuleClassification:
    evidence = _read(text or "", rules.lexicon)
    positive, negative, sarcasm = _score(evidence)
    total = positive + negative
    balance = positive - negative
    if sentiment is None:
        sentiment = "positive" if balance >= 0.5 else "negative" if balance <= -0.5 else "neutral"

    if sentiment == "neutral" or total == 0:
        confidence = 0.4
    else:
        margin = abs(balance) / total
        confidence = 0.45 + 0.45 * margin * (1.0 - math.exp(-total / 2.0))
    confidence = round(min(confidence, MAX_CONFIDENCE), 3)

    topic = FALLBACK_TOPIC
    best = _MIN_TOPIC_SCORE - 1e-9
    for candidate in rules.topic_order:  # the taxonomy's order: the earlier wins a tie
        score = evidence.topics.get(candidate, 0.0)
        if score > best:
            topic, best = candidate, score

    urgent_evidence = any(evidence.topics.get(name, 0.0) >= _MIN_TOPIC_SCORE
                          for name in rules.urgent)
    if sentiment == "negative" and (urgent_evidence or evidence.urgency or negative >= 4.0):
        priority = 0
    elif sentiment == "negative" or (evidence.question and topic != FALLBACK_TOPIC):
        priority = 1
    else:
        priority = 2

    team = (teams or {}).get(topic) or rules.teams[topic]
    return RuleClassification(sentiment=sentiment, priority=priority, topic=topic,
                              team=team, confidence=confidence,
                              reason=_reason(evidence, sarcasm))


def _reason(evidence: _Evidence, sarcasm: list[str]) -> str:
    parts = []
    negatives = [label for _, w, _, label in evidence.hits if w < 0]
    positives = [label for _, w, _, label in evidence.hits
                 if w > 0 and label not in sarcasm]
    for kind, labels in (("negative words", negatives), ("positive words", positives),
                         ("sarcasm", sarcasm)):
        if labels:
            parts.append(f"{kind}: {', '.join(list(dict.fromkeys(labels))[:4])}")
    if evidence.resolution:
        parts.append("resolved")
    if "ambiguous emoji" in evidence.labels:
        parts.append("ambiguous emoji: " + " ".join(evidence.labels["ambiguous emoji"]))
    notes = dict.fromkeys(n if "!" not in n else "!!" for n in evidence.intensity_notes)
    if notes:
        parts.append("intensity: " + ", ".join(notes))
    if "topic" in evidence.labels:
        parts.append("topic words: " + ", ".join(evidence.labels["topic"][:4]))
    if evidence.urgency:
        parts.append("urgency: " + ", ".join(dict.fromkeys(evidence.urgency[:3])))
    if evidence.question:
        parts.append("question")
    return "; ".join(parts) or "no sentiment or topic words"
