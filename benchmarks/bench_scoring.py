"""Benchmark for diffusion/scoring.py: CLIP scoring time and how fast loading fails offline.

    python -m benchmarks.bench_scoring [--repeats 5]

Writes benchmarks/results/scoring.json and exits 1 if a bar is missed.

1. Scoring 10 samples with ViT-B-32 (bar: ≤ 1.5 s on a 2-core CPU), on torch's default number of
   threads and on 1 thread. The compute does not depend on the weights, so the model has random
   weights (pretrained=None) and needs no download. Text features are cached per prompt set when
   the scorer is made, as in the app, so a request encodes only the images; the first call with new
   quality prompts also encodes those (timed separately).
2. load_clip() failing with the weights not on disk and no hub (bar: ≤ 2 s), in a fresh Python
   process, with the first import of open_clip timed separately (the app's first load pays it, in
   LazyClip's background thread); with HF_HUB_OFFLINE=1, and without it (then a quick HTTP probe
   of the hub decides).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from devtools.bench import Report

ROOT = Path(__file__).resolve().parent.parent
SCORING_BAR_S, OFFLINE_FAILURE_BAR_S = 1.5, 2.0

FAIL_SNIPPET = """
import sys, time
import torch  # the app has torch loaded already
from diffusion.scoring import ClipUnavailable, load_clip
t0 = time.perf_counter()
import open_clip
t1 = time.perf_counter()
try:
    load_clip(cache_dir=sys.argv[1])
    sys.exit("loaded CLIP: not offline?")
except ClipUnavailable as e:
    print(f"{t1 - t0:.3f} {time.perf_counter() - t1:.3f}")
"""


def bench_scoring(repeats: int, report: Report) -> None:
    import open_clip
    import torch

    from diffusion.data import load_shipped_digits
    from diffusion.scoring import DEFAULT_CLIP_MODEL, ClipScorer

    images, digits = load_shipped_digits()
    images, digits = images[::3], digits[::3]  # one real digit of each class: 10 samples
    t0 = time.perf_counter()
    model = open_clip.create_model(DEFAULT_CLIP_MODEL, pretrained=None)
    scorer = ClipScorer(model, open_clip.get_tokenizer(DEFAULT_CLIP_MODEL), DEFAULT_CLIP_MODEL, "random")
    print(f"build {DEFAULT_CLIP_MODEL} (random weights) + encode the default prompts: "
          f"{time.perf_counter() - t0:.2f} s   ({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f})")
    # Also on 1 thread: with other processes busy on the cores, 2 threads can be much slower than 1,
    # as every small op waits for the descheduled second thread. On idle cores 2 threads should win.
    threads = torch.get_num_threads()
    for n in sorted({threads, 1}, reverse=True):
        torch.set_num_threads(n)
        scorer.score(images, digits)  # warm-up
        times, cpu_times = [], []
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            scores = scorer.score(images, digits)
            times.append(time.perf_counter() - t0)
            cpu_times.append(time.process_time() - c0)
        assert scores.clip_score.shape == (10,)
        report.figure(f"score_10_seconds_{n}_threads", statistics.median(times),
                      f"score 10 samples, {n} torch thread(s): median {statistics.median(times):.3f} s, "
                      f"min {min(times):.3f} s, max {max(times):.3f} s over {repeats} runs "
                      f"(CPU time {statistics.median(cpu_times):.3f} s)")
        if n == threads:
            report.bar("score_10_seconds", statistics.median(times), SCORING_BAR_S, "s",
                       f"CLIP scores of 10 samples, {n} thread(s) (median)")
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    scorer.score(images, digits, quality_prompts=("a neat digit", "a smudged digit", "noise"))
    print(f"score 10 samples with 3 new quality prompts (first time, encodes them): {time.perf_counter() - t0:.3f} s")


def bench_offline_failure(repeats: int, report: Report) -> None:
    with tempfile.TemporaryDirectory() as empty_cache:  # so weights cached on this machine don't count
        for label, offline in (("HF_HUB_OFFLINE=1", "1"), ("HF_HUB_OFFLINE unset (HTTP probe of the hub)", None)):
            env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
            if offline:
                env["HF_HUB_OFFLINE"] = offline
            runs = [[float(t) for t in subprocess.run(
                        [sys.executable, "-c", FAIL_SNIPPET, empty_cache], cwd=ROOT, env=env,
                        capture_output=True, text=True, check=True).stdout.split()] for _ in range(repeats)]
            imports, fails = zip(*runs)
            totals = [a + b for a, b in runs]
            print(f"offline failure, {label}, fresh process: load_clip {statistics.median(fails):.3f} s "
                  f"(max {max(fails):.3f}) after importing open_clip {statistics.median(imports):.2f} s; "
                  f"together median {statistics.median(totals):.2f} s, max {max(totals):.2f} s over {repeats} runs")
            report.bar(f"offline_failure_seconds_{'offline' if offline else 'probe'}", max(totals),
                       OFFLINE_FAILURE_BAR_S, "s", f"CLIP gives up offline, {label} (slowest run)")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    report = Report("scoring")
    bench_scoring(args.repeats, report)
    bench_offline_failure(min(args.repeats, 3), report)
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
