"""The drift watch: where the free tier (local model, else rules) and the LLM disagree.

The cloud and on-prem providers classify while they are up; the local tier takes over
when they are not (or when they cost too much). Whether that fallback is any good is
measured here on the product's own traffic: the tweets of ``dallosh.tweets`` that a
provider classified (tier ``cloud`` or ``onprem``, cached answers included) are
classified again by the local tier, and each label's agreement is reported with a
confusion (rows = the LLM's label, columns = the local tier's) and a handful of
disagreements to read. The LLM is not ground truth: agreement is what the local tier
would change if it took over, and the disagreements show whether it would be for the
worse. Distillation (``dallosh train --from-store``) learns from the same rows.

Privacy: the examples carry ``text_scrubbed`` (what the providers saw, PII replaced),
never the original text; the local tier reads ``text_clean``, as it does in the
pipeline, on this machine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Sequence

from stream_app.classify.provider_config import PROVIDER_TIERS
from stream_app.local_model.evaluate import SENTIMENTS, PRIORITIES, EvalTaxonomy, score

__all__ = ["DRIFT_LABELS", "DriftError", "StoredAnswer", "parse_since", "load_llm_answers",
           "drift_report", "format_drift"]

DRIFT_LABELS = ("sentiment", "priority", "topic")
DEFAULT_LIMIT = 5000
_DURATION = re.compile(r"^(\d+)\s*([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class DriftError(ValueError):
    """Nothing to compare (no LLM-classified tweet matches), or a bad filter."""


@dataclass(frozen=True)
class StoredAnswer:
    """One tweet as a provider classified it."""
    id: str
    text_clean: str
    text_scrubbed: str
    sentiment: str
    priority: str
    topic: str
    tier: str
    provider: str


def parse_since(value: str, now: datetime | None = None) -> datetime:
    """``"24h"``, ``"7d"``, ``"30m"``, ``"2w"`` ago, or an ISO 8601 time (UTC when it has
    no offset)."""
    value = value.strip()
    match = _DURATION.match(value.lower())
    if match:
        return (now or datetime.now(timezone.utc)) - timedelta(**{_UNITS[match[2]]: int(match[1])})
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise DriftError(f"--since {value!r}: give a duration (30m, 24h, 7d, 2w) or an ISO time "
                         "(2026-03-12T10:00:00Z)") from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def load_llm_answers(client: Any, brand: str, run_id: str | None = None,
                     since: datetime | None = None, limit: int = DEFAULT_LIMIT) -> list[StoredAnswer]:
    """The latest ``limit`` tweets of ``brand`` that a provider classified, newest first
    (``FINAL``: a re-classified tweet counts once, with its last labels)."""
    where = ["tier IN {tiers:Array(String)}", "brand = {brand:String}"]
    params: dict[str, Any] = {"tiers": list(PROVIDER_TIERS), "brand": brand, "limit": int(limit)}
    if run_id:
        where.append("run_id = {run:String}")
        params["run"] = run_id
    if since is not None:
        where.append("classified_at >= {since:DateTime64(3, 'UTC')}")
        params["since"] = since.astimezone(timezone.utc).replace(tzinfo=None)
    rows = client.query(
        "SELECT id, text_clean, text_scrubbed, sentiment, priority, topic, tier, provider "
        f"FROM dallosh.tweets FINAL WHERE {' AND '.join(where)} "
        "ORDER BY classified_at DESC, id LIMIT {limit:UInt32}", parameters=params).result_rows
    answers = [StoredAnswer(str(r[0]), r[1], r[2], r[3], str(r[4]), r[5], r[6], r[7]) for r in rows]
    if not answers:
        counts = client.query("SELECT brand, tier, count() FROM dallosh.tweets FINAL "
                              "GROUP BY brand, tier ORDER BY brand, tier").result_rows
        have = ", ".join(f"{b or '?'}/{t}: {n}" for b, t, n in counts) or "no tweets at all"
        filters = "".join([f", run {run_id}" if run_id else "",
                           f", since {since.isoformat()}" if since else ""])
        raise DriftError(f"no tweet of brand {brand} classified by a cloud or on-prem provider "
                         f"(tiers {', '.join(PROVIDER_TIERS)}){filters} in ClickHouse "
                         f"(stored, by brand/tier: {have})")
    return answers


def drift_report(answers: Sequence[StoredAnswer], predictor: Any, taxonomy: EvalTaxonomy,
                 examples: int = 5, batch_size: int = 256) -> dict:
    """Run ``predictor`` (a :mod:`~stream_app.local_model.evaluate` label predictor) on
    the stored tweets and compare with the providers' labels.

    ``per_label.<label>``: ``agreement`` (share of equal labels), ``macro_f1`` and
    ``per_class`` with the LLM as reference, ``confusion`` (rows = LLM, columns = local
    tier, in ``labels`` order), ``disagreements`` (up to ``examples``, the local tier's
    most confident first: those are the ones it would get wrong without hesitating)."""
    texts = [a.text_clean or a.text_scrubbed for a in answers]
    predicted: list[dict] = []
    for start in range(0, len(texts), batch_size):
        predicted.extend(predictor(texts[start:start + batch_size]))
    by_tier: dict[str, int] = {}
    for a in answers:
        key = f"{a.tier}/{a.provider}"
        by_tier[key] = by_tier.get(key, 0) + 1
    per_label = {}
    for label in DRIFT_LABELS:
        llm = [getattr(a, label) for a in answers]
        local = [p[label][0] for p in predicted]
        confidences = [p[label][1] for p in predicted]
        known = {"sentiment": SENTIMENTS, "priority": PRIORITIES, "topic": taxonomy.topics}[label]
        labels = list(known) + sorted(set(llm) - set(known))   # an LLM label off the taxonomy
        result = score(llm, local, labels, extend=True)
        wrong = [i for i in range(len(answers)) if llm[i] != local[i]]
        wrong.sort(key=lambda i: -(confidences[i] if confidences[i] is not None else 0.0))
        per_label[label] = {
            "n": result["n"], "agreement": result["accuracy"], "macro_f1": result["macro_f1"],
            "labels": result["labels"], "confusion": result["confusion"],
            "per_class": result["per_class"],
            "source": getattr(predictor, "sources", {}).get(label, ""),
            "disagreements": [{"id": answers[i].id, "text_scrubbed": answers[i].text_scrubbed,
                               "llm": llm[i], "local": local[i],
                               "local_confidence": confidences[i], "tier": answers[i].tier,
                               "provider": answers[i].provider} for i in wrong[:examples]],
        }
    return {"n": len(answers), "brand": taxonomy.brand, "local": getattr(predictor, "name", "local"),
            "by_provider": by_tier, "per_label": per_label,
            "conventions": ("confusion rows = the provider's (LLM) label, columns = the local "
                            "tier's; macro_f1 and per_class take the LLM as reference; examples "
                            "show text_scrubbed only")}


def format_drift(report: dict) -> list[str]:
    """Human lines: one agreement line per label, its most frequent disagreement pairs
    and the examples."""
    providers = ", ".join(f"{k} {v}" for k, v in report["by_provider"].items())
    lines = [f"drift watch: {report['n']} tweets of brand {report['brand']} classified by "
             f"{providers}; local tier: {report['local']}"]
    for label, m in report["per_label"].items():
        lines.append(f"{label:<10} agreement={m['agreement']:.4f}  macro-F1 (LLM as reference)="
                     f"{m['macro_f1']:.4f}  ({m['source']})")
        pairs = [(m["confusion"][i][j], a, b) for i, a in enumerate(m["labels"])
                 for j, b in enumerate(m["labels"]) if i != j and m["confusion"][i][j]]
        if pairs:
            lines.append("  most frequent: " + "; ".join(
                f"LLM {a} -> local {b} x{n}" for n, a, b in sorted(pairs, reverse=True)[:3]))
        for ex in m["disagreements"]:
            text = " ".join(ex["text_scrubbed"].split())
            lines.append(f"  - LLM {ex['llm']} / local {ex['local']}: {text[:100]}")
    return lines
