"""Benchmark for the Lab tab's engine: the noise-aware classifier and the recognisability experiment.

    python -m benchmarks.bench_lab --data-dir ../shared/data

Writes benchmarks/results/lab.json and exits 1 if a bar is missed.

1. The shipped noise-aware classifier (checkpoints/noise_classifier): mean top probability on 10,000
   pure-noise images x_T at t = T (bar: ≤ 0.3; uniform is 0.1), and accuracy on the 10,000 clean MNIST
   test digits at t = 0 (bar: ≥ 99.5 %, at least the trusted classifier's). Needs MNIST (--data-dir);
   without it this part is skipped and the report is partial.
2. The recognisability table the Lab shows for the course's setting: ddpm over all 500 steps, 20 runs of
   every digit (200 runs; at most 100,000 network evaluations: each digit's run stops once all its runs are
   recognisable), through the Lab's own handler on the classroom's network server and classifier thread,
   without HTTP (bar: ≤ 60 s on 2 cores).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from devtools.bench import Report

NOISE_TOP_BAR, CLEAN_ACCURACY_BAR, RECOGNISABILITY_BAR_S = 0.3, 0.995, 60.0


def bench_noise_classifier(data_dir: str, report: Report) -> None:
    import torch

    from diffusion.classifier import accuracy, load_classifier, load_noise_classifier, pure_noise_top_probability
    from diffusion.data import load_mnist, to_model_range

    model = load_noise_classifier()
    top = pure_noise_top_probability(model, n=10_000)
    report.bar("pure_noise_top_probability", top, NOISE_TOP_BAR, "",
               "noise-aware classifier: mean top probability on pure noise at t = T")
    images, labels = load_mnist(data_dir, train=False)
    x = to_model_range(images)
    clean = accuracy(model, x, labels)
    trusted = accuracy(load_classifier(), x, labels)
    report.figure("trusted_classifier_accuracy", trusted, f"the trusted clean-image classifier: {trusted:.4%}")
    report.bar("clean_test_accuracy", clean, CLEAN_ACCURACY_BAR, "", "noise-aware classifier: MNIST test accuracy "
               "at t = 0", at_least=True)
    report.bar("clean_vs_trusted", clean, trusted, "", "noise-aware classifier at least as accurate as the "
               "trusted one", at_least=True)
    by_t = {}
    generator = torch.Generator().manual_seed(0)
    for t in (50, 150, 250, 350, 450):
        xt = model.schedule.q_sample(x, torch.full((len(x),), t), torch.randn(x.shape, generator=generator))
        by_t[t] = (model.predict_proba(xt, t).argmax(1) == labels).float().mean().item()
    report.figure("accuracy_by_t", by_t, "accuracy on forward-noised test digits: "
                  + ", ".join(f"t = {t}: {a:.1%}" for t, a in by_t.items()))


def bench_recognisability(report: Report) -> None:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import ui
    from diffusion.classifier import DEFAULT_CLASSIFIER
    from diffusion.pipeline import DEFAULT_UNET
    from ui.lab import LabTab
    from ui.settings import RECOGNISABILITY_DEFAULTS as course

    classroom = ui.load_classroom(str(DEFAULT_UNET), str(DEFAULT_CLASSIFIER), None, "/nonexistent")
    try:
        time.sleep(3)  # the network server warms up its batch sizes first, as it does before a class arrives
        lab = LabTab(classroom)
        started = time.perf_counter()
        lab.recognisability()  # its defaults are the course's setting
        seconds = time.perf_counter() - started
        key = next(iter(lab.results._items))
        result = lab.results._items[key]
        work = classroom.server.tick_sizes
        report.figure("network_evaluations", sum(work), f"network evaluations: {sum(work):,} in {len(work)} ticks")
    finally:
        classroom.close()
    rows = result.per_digit()
    report.figure("per_digit", rows, "\n".join(
        f"  digit {r['digit']}: median {r.get('median_percent', float('nan')):.1f} % "
        f"(step {r.get('median_step', float('nan')):.0f} of {result.num_inference_steps}), "
        f"{r.get('min_percent', float('nan')):.0f}–{r.get('max_percent', float('nan')):.0f} %, "
        f"recognised {r['recognised']} of {r['runs']}" for r in rows))
    report.figure("runs", len(result.digits))
    report.bar("recognisability_seconds", seconds, RECOGNISABILITY_BAR_S, "s",
               f"recognisability table, {course['sampler']}-{course['steps']}, {len(result.digits)} runs")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default="../shared/data", help="MNIST root (for the clean test accuracy)")
    args = p.parse_args()
    report = Report("lab")
    has_mnist = (Path(args.data_dir) / "MNIST" / "raw").is_dir()
    if has_mnist:
        bench_noise_classifier(args.data_dir, report)
    else:
        print(f"no MNIST under {args.data_dir}: the classifier's bars are skipped", flush=True)
    bench_recognisability(report)
    return report.finish(partial=not has_mnist)


if __name__ == "__main__":
    sys.exit(main())
