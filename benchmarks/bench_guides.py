"""Benchmark: ways to steer the model toward the asked digit, compared on the same samples.

    python -m benchmarks.bench_guides [--per-digit 100]

Writes benchmarks/results/guides.json and exits 1 if a bar is missed. Every setting draws the same
1,000 samples (100 of each digit, the same seed) with the app's default sampler and steps, on the
network server the app uses, and is judged by the trusted classifier (a different network from the
noise-aware classifier that classifier guidance and best-of-N use):

    classifier-free at w = 0 (no steering), at the app's w = 0.6, and at w = 2
    classifier guidance at its default scale (on top of w = 0, and of w = 0.6)
    best-of-4 reranking (w = 0.6)

It prints accuracy, worst digit, diversity (mean per-pixel standard deviation across samples of a digit)
and seconds per 1,000 samples. Bar: classifier guidance at its default reaches ≥ 99 % accuracy.
CLIP guidance is not measured here: CLIP's weights cannot be had offline.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import numpy as np

from devtools.bench import Report

BAR_ACCURACY = 0.99


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--per-digit", type=int, default=100)
    args = p.parse_args()

    import ui
    from diffusion.classifier import DEFAULT_CLASSIFIER
    from diffusion.digit_images import pixel_diversity
    from diffusion.pipeline import DEFAULT_UNET
    from diffusion.requests import BEST_OF, DEFAULT_CLASSIFIER_SCALE, DEFAULT_SAMPLER, DEFAULT_STEPS

    report = Report("guides")
    classroom = ui.load_classroom(str(DEFAULT_UNET), str(DEFAULT_CLASSIFIER), None, "/nonexistent")
    time.sleep(3)  # the server warms up its batch sizes
    settings = [("classifier-free, w = 0", 0.0, "classifier-free"), ("classifier-free, w = 0.6", 0.6, "classifier-free"),
                ("classifier-free, w = 2", 2.0, "classifier-free"),
                (f"classifier guidance (scale {DEFAULT_CLASSIFIER_SCALE:g}), w = 0", 0.0, "classifier"),
                (f"classifier guidance (scale {DEFAULT_CLASSIFIER_SCALE:g}), w = 0.6", 0.6, "classifier"),
                (f"best-of-{BEST_OF}, w = 0.6", 0.6, f"best-of-{BEST_OF}")]
    rows = []
    try:
        for name, w, guide in settings:
            request = classroom.sampling_request("all", args.per_digit, w, DEFAULT_SAMPLER, DEFAULT_STEPS, 0,
                                                 max_samples=10_000, max_work=None)
            started = time.perf_counter()
            # in chunks of 100 samples, as the app's requests are (the server batches them side by side)
            chunks = [dataclasses.replace(request, digits=request.digits[i:i + 100], seed=i)
                      for i in range(0, request.num_samples, 100)]
            images = np.concatenate([classroom.sample_with_guide(c, guide) for c in chunks])
            seconds = time.perf_counter() - started
            scores = classroom.classifier_scores(images, list(request.digits))
            correct = scores.predicted_digit == np.array(request.digits)
            per_digit = [correct[np.array(request.digits) == d].mean() for d in range(10)]
            row = {"setting": name, "accuracy": float(correct.mean()), "worst_digit": int(np.argmin(per_digit)),
                   "worst_digit_accuracy": float(min(per_digit)),
                   "diversity": pixel_diversity(images, args.per_digit),
                   "seconds_per_1000": seconds * 1000 / len(images)}
            rows.append(row)
            print(f"{name:45s} accuracy {row['accuracy']:.1%}  worst {row['worst_digit']}: "
                  f"{row['worst_digit_accuracy']:.0%}  diversity {row['diversity']:.4f}  "
                  f"{row['seconds_per_1000']:.1f} s/1000", flush=True)
    finally:
        classroom.close()
    report.figure("settings", rows)
    default = rows[3]
    report.bar("classifier_guidance_accuracy", default["accuracy"], BAR_ACCURACY, "",
               f"{default['setting']}: accuracy on {10 * args.per_digit} samples", at_least=True)
    return report.finish(partial=args.per_digit != 100)


if __name__ == "__main__":
    sys.exit(main())
