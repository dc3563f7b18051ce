"""Benchmark for editing (diffusion/editing.py and the Edit tab): quality on real digits, and speed.

    python -m benchmarks.bench_editing

Writes benchmarks/results/editing.json and exits 1 if a bar is missed. Quality is measured on every
shipped real digit of the kind the bar names (three 3s, three 7s: MNIST test images), 20 seeds each,
judged by the trusted classifier, through the engine at the Edit tab's defaults:

1. SDEdit: a real 3 toward 8 at s = 0.6: share classified as 8 (bar: ≥ 90 %, for each 3);
   at s = 0.2: mean absolute pixel difference from the input, pixels in [0,1] (bar: ≤ 0.1).
2. Inpainting the bottom half of a real 7, asked for a 7: the unmasked pixels' largest change (bar:
   ≤ 1/255) and the share classified as 7 (bar: ≥ 95 %, for each 7).
3. Speed: /edit and /inpaint at their defaults, alone, through HTTP against `python app.py` (median of
   5 after a warm-up; bar: ≤ 0.5 s each).

With --data-dir (MNIST) it also prints how the classifier scale of /edit's default was chosen, on digits the
bars do not use: the first 60 MNIST *training* 3s, 5 seeds each, toward 8 at s = 0.6, at scales 10, 15 and 20.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

from devtools.bench import Report

SDEDIT_BAR, SDEDIT_KEEP_BAR, INPAINT_KEEP_BAR, INPAINT_BAR, SPEED_BAR_S = 0.90, 0.10, 1 / 255, 0.95, 0.5
SEEDS = 20
HELD_OUT_THREES, HELD_OUT_SEEDS, HELD_OUT_SCALES = 60, 5, (10.0, 15.0, 20.0)


def load_models():
    """(the pipeline, with the noise-aware classifier for classifier guidance; the trusted classifier, the judge)"""
    from diffusion.classifier import load_classifier, load_noise_classifier
    from diffusion.pipeline import load_pipeline

    return load_pipeline(judge=load_noise_classifier()), load_classifier()


def share_classified_as(judge, results: np.ndarray, digit: int) -> float:
    """The share of results (uint8 [N,28,28]) that the judge classifies as digit."""
    from diffusion.data import to_model_range

    return int((judge.predict_proba(to_model_range(results)).argmax(1) == digit).sum()) / len(results)


def bench_quality(report: Report, pipe, judge) -> None:
    from diffusion.data import load_shipped_digits
    from diffusion.editing import (DEFAULT_EDIT_CLASSIFIER_SCALE, DEFAULT_EDIT_GUIDANCE, INPAINT_RESAMPLE,
                                   INPAINT_SAMPLER, INPAINT_STEPS)
    from ui.edit import preset_mask

    images, labels = load_shipped_digits()
    sdedit = dict(guidance=DEFAULT_EDIT_GUIDANCE, classifier_scale=DEFAULT_EDIT_CLASSIFIER_SCALE)  # /edit's defaults

    as_eight, kept = [], []
    for i in np.flatnonzero(labels == 3):
        strong = pipe.edit([8] * SEEDS, images[i], strength=0.6, **sdedit)
        weak = pipe.edit([8] * SEEDS, images[i], strength=0.2, **sdedit)
        as_eight.append(share_classified_as(judge, strong, 8))
        kept.append(float(np.abs(weak.astype(float) - images[i]).mean() / 255))
        print(f"  shipped 3 #{i}: s = 0.6 -> {as_eight[-1]:.0%} eights; s = 0.2 -> mean change {kept[-1]:.3f}")
    report.figure("sdedit_share_of_eights", as_eight)
    report.bar("sdedit_worst_three", min(as_eight), SDEDIT_BAR, "", "SDEdit 3 -> 8 at s = 0.6: share of 8s "
               "(the hardest of the shipped 3s)", at_least=True)
    report.bar("sdedit_best_three", max(as_eight), SDEDIT_BAR, "", "SDEdit 3 -> 8 at s = 0.6: share of 8s "
               "(the easiest of the shipped 3s)", at_least=True)
    report.bar("sdedit_change_at_0_2", max(kept), SDEDIT_KEEP_BAR, "", "SDEdit at s = 0.2: mean |change| "
               "(largest over the shipped 3s)")

    keep = preset_mask("bottom")
    as_seven, changed = [], []
    for i in np.flatnonzero(labels == 7):
        results = pipe.edit([7] * SEEDS, images[i], strength=1.0, keep_mask=keep, resample=INPAINT_RESAMPLE,
                            sampler=INPAINT_SAMPLER, num_inference_steps=INPAINT_STEPS,
                            guidance=DEFAULT_EDIT_GUIDANCE)
        as_seven.append(share_classified_as(judge, results, 7))
        changed.append(max(int(np.abs(r[keep == 1].astype(int) - images[i][keep == 1]).max()) for r in results))
        print(f"  shipped 7 #{i}: {as_seven[-1]:.0%} sevens; kept pixels changed by at most {changed[-1]}/255")
    report.bar("inpaint_kept_pixels", max(changed) / 255, INPAINT_KEEP_BAR, "", "inpainting: the unmasked "
               "pixels' largest change")
    report.bar("inpaint_sevens", min(as_seven), INPAINT_BAR, "", "inpainting the bottom of a real 7: share of "
               "7s (the hardest of the shipped 7s)", at_least=True)


def bench_held_out(report: Report, pipe, judge, data_dir: str) -> None:
    """SDEdit 3 -> 8 at s = 0.6 on MNIST training 3s, at several classifier scales (figures, no bar)."""
    from diffusion.data import load_mnist
    from diffusion.editing import DEFAULT_EDIT_GUIDANCE

    x, y = load_mnist(data_dir, train=True)
    threes = x[y == 3][:HELD_OUT_THREES].numpy()
    for scale in HELD_OUT_SCALES:
        shares = []
        for image in threes:
            edited = pipe.edit([8] * HELD_OUT_SEEDS, image, strength=0.6, guidance=DEFAULT_EDIT_GUIDANCE,
                               classifier_scale=scale)
            shares.append(share_classified_as(judge, edited, 8))
        mean = sum(shares) / len(shares)
        report.figure(f"held_out_share_of_eights_scale_{scale:g}", mean,
                      f"held out: {HELD_OUT_THREES} training 3s x {HELD_OUT_SEEDS} seeds -> 8 at s = 0.6, classifier "
                      f"scale {scale:g}: {mean:.1%} eights, worst 3 {min(shares):.0%}")


def bench_speed(report: Report) -> None:
    from gradio_client import Client

    from devtools.servers import free_port, start_app, stop

    port = free_port()
    process, _ = start_app(port)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        for endpoint in ("/edit", "/inpaint"):
            client.predict(api_name=endpoint)  # warm-up
            times = []
            for seed in range(1, 6):  # a new seed each time: no cached result
                started = time.perf_counter()
                client.predict(seed=seed, api_name=endpoint)
                times.append(time.perf_counter() - started)
            report.bar(f"{endpoint[1:]}_seconds", statistics.median(times), SPEED_BAR_S, "s",
                       f"{endpoint} at its defaults, alone, over HTTP (median)")
    finally:
        stop(process)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", help="MNIST, for the held-out figures that chose /edit's classifier scale")
    args = p.parse_args(argv)
    report = Report("editing")
    pipe, judge = load_models()
    bench_quality(report, pipe, judge)
    if args.data_dir:
        bench_held_out(report, pipe, judge, args.data_dir)
    bench_speed(report)
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
