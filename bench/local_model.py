"""``dallosh bench local-model``: how fast the local tier classifies on this CPU, on
the path workers run and on torch, in the same run.

Tweets: the bundled sample's cleaned texts (French and English customer-care tweets,
the product's own traffic; :func:`bench.batching.load_tweets`), ``n`` of them. Each
runtime runs in its own fresh Python process, so that its load time, its peak RSS
and whether torch got imported are its own:

``onnx``   the path workers run when the artifact has an ONNX export
           (:func:`~stream_app.local_model.model.load_local_model`): onnxruntime and
           numpy heads; the child reports whether torch ended up imported (it must not).
``torch``  the same artifact through torch (:meth:`LocalModel.load`), where torch is
           installed.

Both children load the artifact (``load_s``: imports included, since a worker pays
them once too), warm up on one batch, then wait. The parent then alternates them
``rounds`` times, each round every tweet through :meth:`LocalModelTier.classify` (the
code the cascade runs: encoder, heads, calibration, rules for what has no head) in
batches of ``batch_size`` (the classify stage's window); alternating keeps the ratio
fair on a machine whose load changes. ``tweets_per_s`` is the median round of the path
workers run, ``torch_tweets_per_s`` torch's. Peak RSS: each child's high-water mark
(:func:`peak_rss_mb`).
The degraded rules tier is timed on the same tweets in the parent, for scale.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.batching import load_tweets
from stream_app.local_model.encoders import LocalModelError
from stream_app.local_model.model import (choose_runtime, has_onnx_export, onnxruntime_available,
                                         read_model_meta)

TARGET_TWEETS_PER_S, TARGET_SPEEDUP = 800, 3.0


def bench_local_model(artifact: Path, n: int = 2000, batch_size: int = 200, threads: int = 2,
                      rounds: int = 3, say=print, runtime: str = "auto") -> dict:
    """``runtime``: what workers are configured with (DALLOSH_LOCAL_MODEL_RUNTIME);
    ``tweets_per_s`` is that path's, ``onnx_tweets_per_s`` and ``torch_tweets_per_s``
    each runtime's in the same run."""
    artifact = Path(artifact)
    meta = read_model_meta(artifact)
    onnx = has_onnx_export(artifact, meta) and onnxruntime_available()
    workers_run = "onnx" if onnx and choose_runtime(runtime) == "onnx" else "torch"
    if not onnx:
        why = (meta.get("onnx") or {}).get("error") or "the artifact has no ONNX export"
        say(f"note: workers load this artifact through torch ({why})")
    children = {}
    try:
        for runtime in (["onnx", "torch"] if onnx else ["torch"]):
            say(f"loading the {runtime} runtime ...")
            children[runtime] = _Child(runtime, artifact, n, batch_size, threads)
        for child in children.values():
            child.ready()
        runs: dict[str, list[float]] = {runtime: [] for runtime in children}
        say(f"classifying {n:,} tweets in batches of {batch_size}, {rounds} round(s) per runtime, "
            "alternated ...")
        for _ in range(rounds):
            for runtime, child in children.items():
                runs[runtime].append(child.run())
        results = {runtime: child.finish() for runtime, child in children.items()}
    finally:
        for child in children.values():
            child.close()

    items = load_tweets(n)
    from stream_app.classify.cascade import degraded
    started = time.perf_counter()
    degraded(items, "bench")
    rules_s = time.perf_counter() - started

    def rate(runtime: str) -> float | None:
        return round(n / statistics.median(runs[runtime]), 1) if runtime in runs else None

    main, torch_rate = results[workers_run], rate("torch")
    out = {
        "bench": "local-model", "artifact": str(artifact), "model": meta.get("name"),
        "encoder": meta["encoder"], "encoder_layers": meta.get("encoder_layers"),
        "heads": list(meta.get("heads", {})), "runtime": workers_run,
        "onnx_precision": (meta.get("onnx") or {}).get("precision") if onnx else None,
        "n": n, "batch_size": batch_size, "threads": threads, "rounds": rounds,
        "tweets_per_s": rate(workers_run),
        "ms_per_tweet": round(1000 / rate(workers_run), 3),
        "load_s": main["load_s"], "peak_rss_mb": main["peak_rss_mb"],
        "torch_imported": main["torch_imported"],
        "torch_tweets_per_s": torch_rate, "onnx_tweets_per_s": rate("onnx"),
        "torch_load_s": results["torch"]["load_s"] if "torch" in results else None,
        "torch_peak_rss_mb": results["torch"]["peak_rss_mb"] if "torch" in results else None,
        "speedup_vs_torch": round(rate("onnx") / torch_rate, 2) if onnx and torch_rate else None,
        "rounds_tweets_per_s": {runtime: [round(n / s, 1) for s in times] for runtime, times in runs.items()},
        "rules_tweets_per_s": round(n / rules_s, 1),
        "check": (meta.get("onnx") or {}).get("check"),
        "targets": {"tweets_per_s": TARGET_TWEETS_PER_S, "speedup_vs_torch": TARGET_SPEEDUP},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average": [round(x, 2) for x in os.getloadavg()],
                    **{k: v for r in results.values() for k, v in r["versions"].items()}},
    }
    return out


class _Child:
    """One runtime in its own interpreter, driven line by line over its stdin/stdout."""

    def __init__(self, runtime: str, artifact: Path, n: int, batch_size: int, threads: int) -> None:
        self.runtime = runtime
        self.stderr = tempfile.TemporaryFile("w+")  # a file, not a pipe: a chatty child cannot block
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.local_model", "--runtime", runtime, "--model", str(artifact),
             "--tweets", str(n), "--batch-size", str(batch_size), "--threads", str(threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True,
            cwd=Path(__file__).resolve().parent.parent)

    def _reply(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            self.process.wait()
            self.stderr.seek(0)
            error = self.stderr.read().strip().splitlines()
            raise LocalModelError(f"the {self.runtime} runtime failed: "
                                  f"{error[-1] if error else 'no output'}")
        reply = json.loads(line)
        if "error" in reply:
            raise LocalModelError(f"the {self.runtime} runtime failed: {reply['error']}")
        return reply

    def ready(self) -> dict:
        return self._reply()

    def run(self) -> float:
        self.process.stdin.write("run\n")
        self.process.stdin.flush()
        return self._reply()["seconds"]

    def finish(self) -> dict:
        self.process.stdin.write("quit\n")
        self.process.stdin.flush()
        return self._reply()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.stderr.close()


def _child(runtime: str, artifact: Path, n: int, batch_size: int, threads: int) -> None:
    """The child's side: load, warm up, say ready; then one timed pass per ``run``."""
    def say(payload: dict) -> None:
        print(json.dumps(payload), flush=True)

    items = load_tweets(n)
    started = time.perf_counter()
    try:
        from stream_app.classify.local_tier import LocalModelTier
        from stream_app.local_model.model import LocalModel, load_local_model
        model = load_local_model(artifact, threads, runtime="onnx") if runtime == "onnx" else \
            LocalModel.load(artifact, threads=threads)
    except (ImportError, LocalModelError) as exc:
        say({"error": str(exc)})
        return
    load_s = time.perf_counter() - started
    if runtime == "onnx" and getattr(model, "runtime", None) != "onnx":
        say({"error": "the artifact did not load through onnxruntime"})
        return
    tier = LocalModelTier(model)
    tier.classify(items[:batch_size])  # warm-up (first-call allocations)
    say({"ready": True})
    for line in sys.stdin:
        if line.strip() != "run":
            break
        started = time.perf_counter()
        for start in range(0, len(items), batch_size):
            tier.classify(items[start:start + batch_size])
        say({"seconds": time.perf_counter() - started})
    versions = {}
    for name in ("onnxruntime", "torch"):
        if name in sys.modules:
            versions[name] = sys.modules[name].__version__
    say({"load_s": round(load_s, 3), "torch_imported": "torch" in sys.modules,
         "peak_rss_mb": peak_rss_mb(), "versions": versions})


def peak_rss_mb() -> float:
    """This process's peak resident set. Linux carries ``ru_maxrss`` across ``execve``,
    so a child forked from a big parent (pytest, a worker) would report the parent's
    size: the memory map's own high-water mark (``VmHWM``) is read instead where there
    is one."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="one runtime of `dallosh bench local-model` (internal)")
    parser.add_argument("--runtime", choices=("onnx", "torch"), required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--tweets", type=int, required=True)
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    args = parser.parse_args()
    _child(args.runtime, args.model, args.tweets, args.batch_size, args.threads)
