"""Measure sample quality:  python -m diffusion.evaluate --data-dir ../shared/data

For each setting in a grid (guidance w × sampler/steps) it draws `--per-class` samples of every
digit and reports, using the trusted classifier (`classifier.py`):
    accuracy        fraction classified as the requested digit (overall and the worst digit)
    confidence      mean classifier probability of the requested digit
    FD              Fréchet distance between classifier penultimate-layer features of the samples
                    and of the 10,000 MNIST test images (lower = closer to real digits);
                    the *floor* is the same figure for real training images drawn like the samples
                    (`--per-class` of every digit), averaged over 5 draws
    NN distance     mean pixel distance from each sample to its nearest training image, beside the
                    same figure for real test images (much smaller = memorised training digits)
Writes JSON and a markdown table, and names the cheapest setting that passes the quality bar.

    python -m diffusion.evaluate --data-dir ../shared/data --cas 10000      (checkpoints/cas.md / .json)
instead measures the Classification Accuracy Score (Ravuri & Vinyals 2019): N digits generated at the app's
defaults (N/10 of each) train a fresh digit classifier (the trusted classifier's architecture and recipe),
which is then tested on the 10,000 real MNIST test digits, beside the same classifier trained on N real
training digits and on both (2N).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .checkpoints import CHECKPOINT_DIR
from .cli import add_model_options
from .classifier import DEFAULT_CLASSIFIER, DigitClassifier, accuracy, load_classifier, train_classifier
from .data import load_mnist, to_model_range
from .pipeline import DEFAULT_UNET, load_pipeline
from .requests import DEFAULT_GUIDANCE, DEFAULT_GUIDANCE_INTERVAL, DEFAULT_SAMPLER, DEFAULT_STEPS
from .sampling import EVERY_STEP

# The quality bar the shipped model was chosen by: ≥ 99.5% overall, every digit ≥ 99%, FD ≤ 1.5 × the real-vs-real floor.
BAR_ACCURACY, BAR_WORST_DIGIT, BAR_FD_RATIO = 0.995, 0.99, 1.5
# The CAS bar: a classifier trained on generated digits alone reaches ≥ 97% on the MNIST test set.
BAR_CAS = 0.97


@torch.inference_mode()
def classifier_features(classifier: DigitClassifier, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Penultimate-layer features [N,128] (float64) of images x: [N,1,28,28] in [-1,1]."""
    classifier.eval()
    return torch.cat([classifier.features(chunk) for chunk in x.split(batch_size)]).double()


def frechet_distance(feats_a: torch.Tensor, feats_b: torch.Tensor) -> float:
    """‖μ_a − μ_b‖² + tr(Σ_a + Σ_b − 2(Σ_a^½ Σ_b Σ_a^½)^½) between Gaussians fitted to [N,D] features."""
    mu_a, mu_b = feats_a.mean(0), feats_b.mean(0)
    cov_a, cov_b = torch.cov(feats_a.T), torch.cov(feats_b.T)
    evals, evecs = torch.linalg.eigh(cov_a)
    sqrt_a = evecs @ torch.diag(evals.clamp(min=0).sqrt()) @ evecs.T
    cross = torch.linalg.eigvalsh(sqrt_a @ cov_b @ sqrt_a).clamp(min=0).sqrt().sum()
    return float((mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * cross)


def nearest_neighbour_distance(x: torch.Tensor, reference: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """For each image in x [N,1,28,28], the L2 distance (pixels in [0,1]) to the closest image in reference [M,1,28,28]."""
    ref = ((reference.reshape(len(reference), -1) + 1) / 2).float()
    out = [torch.cdist(((chunk.reshape(len(chunk), -1) + 1) / 2).float(), ref).min(1).values
           for chunk in x.split(batch_size)]
    return torch.cat(out)


def score_samples(samples: torch.Tensor, labels: torch.Tensor, classifier: DigitClassifier,
                  test_feats: torch.Tensor, train_x: torch.Tensor) -> dict:
    """All quality figures for samples [N,1,28,28] in [-1,1] of the requested labels [N]."""
    probs = classifier.predict_proba(samples)
    correct = probs.argmax(1) == labels
    per_digit = [correct[labels == d].float().mean().item() for d in range(10)]
    return {
        "accuracy": correct.float().mean().item(),
        "per_digit_accuracy": per_digit,
        "worst_digit": int(np.argmin(per_digit)),
        "worst_digit_accuracy": min(per_digit),
        "mean_confidence": probs[torch.arange(len(labels)), labels].mean().item(),
        "fd": frechet_distance(classifier_features(classifier, samples), test_feats),
        "nn_distance": nearest_neighbour_distance(samples, train_x).mean().item(),
    }


def difficulty_by_digit(probs: np.ndarray, asked: np.ndarray) -> dict:
    """Which digits are hardest, and what they are mistaken for. probs: [N,10] a judge's probabilities for
    N samples; asked: [N] the digits asked for. Returns per-digit accuracy and mean p(asked digit) (lists of
    10; NaN where a digit was not asked), the confusion matrix: int [10,10], row = asked, column = judged, and
    "mistaken_for": each digit's most common mistake (`most_common_mistakes`)."""
    probs, asked = np.asarray(probs), np.asarray(asked)
    judged = probs.argmax(1)
    confusion = np.zeros((10, 10), dtype=np.int64)
    np.add.at(confusion, (asked, judged), 1)
    mine = [asked == d for d in range(10)]
    return {"accuracy": [float((judged[m] == d).mean()) if m.any() else float("nan") for d, m in enumerate(mine)],
            "confidence": [float(probs[m, d].mean()) if m.any() else float("nan") for d, m in enumerate(mine)],
            "confusion": confusion, "mistaken_for": most_common_mistakes(confusion)}


def most_common_mistakes(confusion: np.ndarray) -> list[tuple[int, int] | None]:
    """For each asked digit (row of a [10,10] confusion matrix), the digit it was most often judged to be
    instead, with how often: (digit, count), the smaller digit on a tie; None where it was never mistaken."""
    mistakes = np.where(np.eye(len(confusion), dtype=bool), 0, confusion)
    return [(int(row.argmax()), int(row.max())) if row.max() else None for row in mistakes]


FLOOR_DRAWS = 5  # the real-vs-real FD varies by ±5% between draws of 2,000 images; average a few


def balanced_subset(labels: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    """Indices of `per_class` random images of each digit, like the samples (200 of every digit).
    A class-balanced draw matters: the test set's own class mix is not balanced, and the samples
    are compared with it, so the floor must face the same mismatch."""
    gen = torch.Generator().manual_seed(seed)
    picks = []
    for d in range(10):
        of_d = torch.nonzero(labels == d).flatten()
        picks.append(of_d[torch.randperm(len(of_d), generator=gen)[:per_class]])
    return torch.cat(picks)


def passes_bar(result: dict, fd_floor: float) -> bool:
    return (result["accuracy"] >= BAR_ACCURACY and result["worst_digit_accuracy"] >= BAR_WORST_DIGIT
            and result["fd"] <= BAR_FD_RATIO * fd_floor)


def parse_setting(text: str) -> tuple[str, int, tuple[float, float]]:
    """'dpm++2m:10' -> ('dpm++2m', 10, (0.0, 1.0)); 'dpm++2m-sde:10:0.4-1' guides only while 0.4 ≤ t/T ≤ 1."""
    sampler, steps, *interval = text.split(":")
    lo, hi = map(float, interval[0].split("-")) if interval else EVERY_STEP
    return sampler, int(steps), (lo, hi)


def markdown_table(results: list[dict], floor: dict) -> str:
    lines = [f"Real-vs-real floor: FD {floor['fd']:.3f} (training images, as many of each digit as the samples, "
             f"vs the test set; mean of {len(floor['fd_draws'])} draws, "
             f"{min(floor['fd_draws']):.3f}–{max(floor['fd_draws']):.3f}); "
             f"NN distance of real test images to the training set {floor['nn_distance']:.3f}. "
             f"Bar: accuracy ≥ {BAR_ACCURACY:.1%}, every digit ≥ {BAR_WORST_DIGIT:.0%}, FD ≤ {BAR_FD_RATIO}× floor "
             f"= {BAR_FD_RATIO * floor['fd']:.3f}.", "",
             "| sampler | steps | w | guided t/T | net evals/sample | accuracy | worst digit | confidence | FD | FD/floor | NN dist | s/1000 | bar |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lo, hi = r["guidance_interval"]
        lines.append(f"| {r['sampler']} | {r['steps']} | {r['guidance']:g} | {lo:g}–{hi:g} | {r['network_evals_per_sample']} | "
                     f"{r['accuracy']:.2%} | {r['worst_digit']}: {r['worst_digit_accuracy']:.1%} | "
                     f"{r['mean_confidence']:.4f} | {r['fd']:.3f} | {r['fd'] / floor['fd']:.2f} | "
                     f"{r['nn_distance']:.3f} | {r['seconds_per_1000']:.1f} | {'pass' if r['passes_bar'] else '—'} |")
    return "\n".join(lines) + "\n"


def classification_accuracy_score(generate: Callable[[Sequence[int]], np.ndarray], real_x: torch.Tensor,
                                  real_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor, n: int = 10_000,
                                  epochs: int = 6, seed: int = 0, **train_options) -> dict:
    """CAS: train the digit classifier (`classifier.train_classifier`) on generated digits, on real ones and on
    both, and test each on real digits. generate(labels) -> uint8 [len(labels),28,28], a sample of each label;
    real_x: uint8 [M,28,28] real training digits, real_y: int64 [M] (n/10 of each digit are drawn at random);
    test_x: uint8 [K,28,28], test_y: int64 [K], the real test set. n: a multiple of 10. train_options: batch_size,
    lr (as `train_classifier`; its defaults are the trusted classifier's).
    Returns {"n", "epochs", "seed", "generation_seconds", "results": [{"data", "images", "test_accuracy" in
    [0,1], "seconds"}, ...] for "generated", "real" and "real+generated"}."""
    labels = torch.arange(10).repeat_interleave(n // 10)
    t0 = time.perf_counter()
    fake_x = to_model_range(generate(labels.tolist()))
    generation_seconds = time.perf_counter() - t0
    pick = balanced_subset(real_y, n // 10, seed)
    real = (to_model_range(real_x[pick]), real_y[pick])
    train_sets = {"generated": (fake_x, labels), "real": real,
                  "real+generated": (torch.cat([real[0], fake_x]), torch.cat([real[1], labels]))}
    test_x = to_model_range(test_x)
    results = []
    for name, (x, y) in train_sets.items():
        t0 = time.perf_counter()
        model, _ = train_classifier(x, y, epochs=epochs, seed=seed, **train_options)
        results.append({"data": name, "images": len(x), "test_accuracy": accuracy(model, test_x, test_y),
                        "seconds": time.perf_counter() - t0})
        print(f"trained on {name} ({len(x):,} images): {results[-1]['test_accuracy']:.2%} on the "
              f"{len(test_x):,} test digits ({results[-1]['seconds']:.0f} s)", flush=True)
    return {"n": n, "epochs": epochs, "seed": seed, "generation_seconds": generation_seconds, "results": results}


def cas_markdown(report: dict) -> str:
    """The CAS report (`classification_accuracy_score`'s, plus "generation": the sampling settings) as Markdown."""
    g, acc = report["generation"], {r["data"]: r["test_accuracy"] for r in report["results"]}
    lines = [f"Classification Accuracy Score: a fresh digit classifier (the trusted classifier's architecture and "
             f"recipe, {report['epochs']} epochs, seed {report['seed']}) trained on each set below, tested on the "
             f"real MNIST test set. Generated: {report['n']:,} digits ({report['n'] // 10:,} of each) from "
             f"`{g['checkpoint']}`, {g['sampler']}, {g['steps']} steps, w = {g['guidance']:g}, seed {g['seed']} "
             f"({report['generation_seconds']:.0f} s). Real: a balanced random draw of as many MNIST training digits.",
             "", "| trained on | images | MNIST test accuracy | seconds |", "|---|---|---|---|"]
    lines += [f"| {r['data']} | {r['images']:,} | {r['test_accuracy']:.2%} | {r['seconds']:.0f} |"
              for r in report["results"]]
    met = "met" if acc["generated"] >= BAR_CAS else "**missed**"
    lines += ["", f"Bar: generated only ≥ {BAR_CAS:.0%}: {met} ({acc['generated']:.2%}; real "
                  f"{acc['real']:.2%}, a gap of {100 * (acc['real'] - acc['generated']):.2f} points)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="data", help="MNIST root (here: ../shared/data)")
    add_model_options(p, str(DEFAULT_UNET))
    p.add_argument("--classifier", default=str(DEFAULT_CLASSIFIER))
    p.add_argument("--per-class", type=int, default=200, help="samples per digit (200 -> 2,000 in all)")
    p.add_argument("--guidance", type=float, nargs="+", default=[0.0, 0.5, 1.0, 2.0])
    p.add_argument("--settings", nargs="+", default=["dpm++2m:10", "dpm++2m-sde:15", "dpm++2m-sde:20"],
                   help="sampler:steps, or sampler:steps:lo-hi to guide only while lo ≤ t/T ≤ hi")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--cas", type=int, nargs="?", const=10_000, default=None, metavar="N",
                   help="instead measure the Classification Accuracy Score with N generated digits (default 10000)")
    p.add_argument("--cas-epochs", type=int, default=6, help="classifier training epochs for --cas")
    p.add_argument("--out", default=None, help="writes <out>.json and <out>.md (default: checkpoints/evaluation, "
                                               "or checkpoints/cas with --cas)")
    args = p.parse_args(argv)
    if args.cas is not None:
        if args.cas < 10 or args.cas % 10:
            p.error("--cas N: N must be a positive multiple of 10 (N/10 of each digit)")
        return cas_main(args)
    args.out = args.out or str(CHECKPOINT_DIR / "evaluation")

    pipe, classifier = load_pipeline(args.checkpoint, bf16=args.bf16, device=args.device), load_classifier(args.classifier)
    test_images, test_y = load_mnist(args.data_dir, train=False)
    train_images, train_y = load_mnist(args.data_dir, train=True)
    test_x, train_x = to_model_range(test_images), to_model_range(train_images)
    test_feats = classifier_features(classifier, test_x)
    floor_fds = [frechet_distance(classifier_features(classifier, train_x[balanced_subset(train_y, args.per_class, seed)]),
                                  test_feats) for seed in range(args.seed, args.seed + FLOOR_DRAWS)]
    floor = {"fd": float(np.mean(floor_fds)), "fd_draws": floor_fds,
             "nn_distance": nearest_neighbour_distance(test_x[:10 * args.per_class], train_x).mean().item(),
             "test_accuracy_of_classifier": (classifier.predict_proba(test_x).argmax(1) == test_y).float().mean().item()}
    print(f"floor: FD {floor['fd']:.3f}, NN distance {floor['nn_distance']:.3f}; "
          f"classifier test accuracy {floor['test_accuracy_of_classifier']:.4%}", flush=True)

    labels = torch.arange(10).repeat_interleave(args.per_class)
    results = []
    for setting in args.settings:
        sampler, steps, interval = parse_setting(setting)
        for w in args.guidance:
            t0 = time.perf_counter()
            x = to_model_range(pipe.generate_many(labels.tolist(), guidance=w, sampler=sampler, num_inference_steps=steps,
                                                  seed=args.seed, batch_size=50, guidance_interval=interval))
            seconds = time.perf_counter() - t0
            r = {"sampler": sampler, "steps": steps, "guidance": w, "guidance_interval": list(interval),
                 "network_evals_per_sample": pipe.network_evaluations(steps, w, interval),
                 "num_samples": len(labels), "seconds_per_1000": seconds / len(labels) * 1000,
                 **score_samples(x, labels, classifier, test_feats, train_x)}
            r["passes_bar"] = passes_bar(r, floor["fd"])
            results.append(r)
            print(f"{setting} w={w:g}: accuracy {r['accuracy']:.2%} (worst {r['worst_digit']}: "
                  f"{r['worst_digit_accuracy']:.1%}), FD {r['fd']:.3f} ({r['fd'] / floor['fd']:.2f}× floor), "
                  f"NN {r['nn_distance']:.3f}, {'PASS' if r['passes_bar'] else 'fail'}", flush=True)

    passing = [r for r in results if r["passes_bar"]]
    best = min(passing, key=lambda r: (r["network_evals_per_sample"], r["fd"])) if passing else None
    report = {"checkpoint": args.checkpoint, "per_class": args.per_class, "seed": args.seed, "floor": floor,
              "results": results, "recommended": best}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps(report, indent=2) + "\n")
    table = markdown_table(results, floor)
    if best:
        table += (f"\nRecommended (passes the bar with the fewest network evaluations): {best['sampler']}, "
                  f"{best['steps']} steps, w = {best['guidance']:g}.\n")
    Path(args.out + ".md").write_text(table)
    print(table)


def cas_main(args: argparse.Namespace) -> None:
    """--cas: generate at the app's defaults, train and test (see `classification_accuracy_score`), write and print."""
    pipe = load_pipeline(args.checkpoint, bf16=args.bf16, device=args.device)
    settings = {"checkpoint": Path(args.checkpoint).name, "sampler": DEFAULT_SAMPLER, "steps": DEFAULT_STEPS,
                "guidance": DEFAULT_GUIDANCE, "guidance_interval": list(DEFAULT_GUIDANCE_INTERVAL), "seed": args.seed}

    def generate(labels):
        return pipe.generate_many(labels, guidance=DEFAULT_GUIDANCE, sampler=DEFAULT_SAMPLER,
                                  num_inference_steps=DEFAULT_STEPS, guidance_interval=DEFAULT_GUIDANCE_INTERVAL,
                                  seed=args.seed, batch_size=500, progress=True)

    report = classification_accuracy_score(generate, *load_mnist(args.data_dir, train=True),
                                           *load_mnist(args.data_dir, train=False), n=args.cas,
                                           epochs=args.cas_epochs, seed=args.seed)
    report["generation"] = settings
    out = args.out or str(CHECKPOINT_DIR / "cas")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out + ".json").write_text(json.dumps(report, indent=2) + "\n")
    table = cas_markdown(report)
    Path(out + ".md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
