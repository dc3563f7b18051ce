"""The architecture ablations: what each part of the U-Net is for, measured on one budget.

Four networks trained alike (`scripts/train_ablations.sh`: 5 epochs, seed 0, the shipped network's size and
schedule, no guidance head), each with one part switched off (`model.UNetConfig`):

    reference             the full U-Net
    no_skip_connections   the decoder gets no encoder features
    no_time_embedding     the network is not told t
    no_attention          no self-attention at 7×7

Files in checkpoints/ablations/ (one convention for every variant):
    <name>.fp16.safetensors/.json   the EMA weights in float16 (about 2 MB): what the app and the evaluation load
    <name>.safetensors/.json        the float32 EMA weights  } what `train.py --resume` continues from
    <name>.train_state.*            raw weights, Adam's moments  }
    <name>_logs/                    loss.csv (training batches), fixed_loss.csv (the EMA network's loss on 2,000
                                    fixed training and 2,000 held-out digits after every epoch)

    python -m diffusion.ablations convert                               # the float16 copies
    python -m diffusion.ablations evaluate --data-dir ../shared/data    # checkpoints/ablations.md and .json

`evaluate` samples 200 of every digit from each variant at the app's defaults and scores them with the
trusted classifier exactly as `python -m diffusion.evaluate` does (`evaluate.score_samples`).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from . import evaluate
from .checkpoints import CHECKPOINT_DIR, checkpoint_paths, read_config, read_tensors, save_checkpoint
from .classifier import DEFAULT_CLASSIFIER, load_classifier
from .data import load_mnist, to_model_range
from .model import count_parameters
from .pipeline import DigitDiffusion, load_pipeline
from .loss_logs import read_loss_logs
from .training_history import evaluate_network  # samples at the app's defaults, then evaluate.score_samples

ABLATION_DIR = CHECKPOINT_DIR / "ablations"
REPORT = CHECKPOINT_DIR / "ablations"  # -> ablations.md, ablations.json
# name -> what is left out (the order is the table's and the page's)
VARIANTS = {"reference": "nothing (the full U-Net)",
            "no_skip_connections": "skip connections",
            "no_time_embedding": "the time embedding",
            "no_attention": "self-attention"}
FLOAT16_MAX = 65504.0


def variant_stem(name: str, folder: Path = ABLATION_DIR) -> Path:
    """The checkpoint stem the app loads: checkpoints/ablations/<name>.fp16 (.safetensors + .json)."""
    if name not in VARIANTS:
        raise ValueError(f"unknown ablation {name!r}; one of {', '.join(VARIANTS)}")
    return Path(folder) / f"{name}.fp16"


def load_variant(name: str, bf16: bool | None = None, folder: Path = ABLATION_DIR) -> DigitDiffusion:
    """A variant's float16 weights (widened to float32, or bfloat16 where that is fast) as a `DigitDiffusion`.
    It has no guidance head: guided sampling takes two network passes per step."""
    return load_pipeline(variant_stem(name, folder), bf16=bf16)


def convert(name: str, folder: Path = ABLATION_DIR) -> dict:
    """Write <name>.fp16.safetensors/.json from the float32 EMA weights <name>.safetensors (kept for --resume).
    Returns {"file", "bytes", "max_abs_error"}: the largest change rounding to float16 made to any weight."""
    source = Path(folder) / name
    tensors, config = read_tensors(source), read_config(source)
    largest = max(float(v.abs().max()) for v in tensors.values())
    if largest >= FLOAT16_MAX:
        raise ValueError(f"{source}: a weight of {largest:g} does not fit in float16")
    halves = {k: v.to(torch.float16) for k, v in tensors.items()}
    error = max(float((halves[k].float() - v.float()).abs().max()) for k, v in tensors.items())
    config = {**config, "weights": {"dtype": "float16", "from": checkpoint_paths(source)[0].name}}
    weights_path, _ = save_checkpoint(variant_stem(name, folder), halves, config)
    return {"file": str(weights_path), "bytes": weights_path.stat().st_size, "max_abs_error": error}


def final_losses(name: str, folder: Path = ABLATION_DIR) -> dict:
    """The last epoch's row of <name>_logs/fixed_loss.csv: {"epoch", "step", "train_loss", "heldout_loss"}
    (the EMA network's loss on 2,000 fixed training digits and on 2,000 held-out test digits)."""
    _, fixed = read_loss_logs(Path(folder) / f"{name}_logs")
    if not fixed:
        raise FileNotFoundError(f"no loss log: {Path(folder) / f'{name}_logs' / 'fixed_loss.csv'}")
    return {"epoch": int(fixed[-1]["epoch"]), "step": int(fixed[-1]["step"]), "train_loss": fixed[-1]["train_loss"],
            "heldout_loss": fixed[-1]["heldout_loss"]}


def read_report(path: Path = REPORT) -> dict:
    """ablations.json as written by `evaluate`, or {} if it is missing or unreadable."""
    try:
        return json.loads(Path(str(path) + ".json").read_text())
    except (OSError, ValueError):
        return {}


# --- the evaluation -------------------------------------------------------------------------------------

def evaluate_variants(data_dir: str, per_class: int = 200, seed: int = 1234, classifier_path=DEFAULT_CLASSIFIER,
                      folder: Path = ABLATION_DIR, bf16: bool | None = None) -> dict:
    """Every variant's parameters, final losses and sample quality at the app's defaults (per_class samples of
    each digit, scored by `evaluate.score_samples`), beside the real-vs-real Fréchet-distance floor."""
    classifier = load_classifier(classifier_path)
    (train_images, train_y), (test_images, _) = load_mnist(data_dir), load_mnist(data_dir, train=False)
    train_x, test_x = to_model_range(train_images), to_model_range(test_images)
    test_feats = evaluate.classifier_features(classifier, test_x)
    floor = [evaluate.frechet_distance(evaluate.classifier_features(
        classifier, train_x[evaluate.balanced_subset(train_y, per_class, s)]), test_feats)
        for s in range(seed, seed + evaluate.FLOOR_DRAWS)]
    report = {"per_class": per_class, "seed": seed, "floor": {"fd": float(np.mean(floor)), "fd_draws": floor},
              "variants": []}
    print(f"real-vs-real floor: FD {report['floor']['fd']:.3f}", flush=True)
    for name, removed in VARIANTS.items():
        pipe = load_variant(name, bf16=bf16, folder=folder)
        entry = {"name": name, "removed": removed, "parameters": count_parameters(pipe.model),
                 "architecture": pipe.config["architecture"], **final_losses(name, folder),
                 **evaluate_network(pipe, classifier, test_feats, train_x, per_class, seed)}
        entry["fd_over_floor"] = entry["fd"] / report["floor"]["fd"]
        report["variants"].append(entry)
        print(f"{name}: accuracy {entry['accuracy']:.2%} (worst {entry['worst_digit']}: "
              f"{entry['worst_digit_accuracy']:.1%}), FD {entry['fd']:.3f} ({entry['fd_over_floor']:.2f}× floor), "
              f"{entry['sampling_seconds']:.0f} s", flush=True)
    return report


def markdown(report: dict) -> str:
    """The report as a paragraph and a table, one row per variant."""
    v = report["variants"]
    s = v[0]["settings"]
    lines = [f"Architecture ablations: {len(v)} U-Nets trained alike ({v[0]['epoch']} epochs, {v[0]['step']:,} "
             f"optimiser steps, seed 0, `scripts/train_ablations.sh`), each without one part. Losses from the "
             f"training logs: the EMA network's loss on 2,000 fixed training digits and on 2,000 held-out test "
             f"digits after the last epoch. Samples: {10 * report['per_class']:,} per variant "
             f"({report['per_class']} of each digit) at the app's defaults ({s['sampler']}, {s['steps']} steps, "
             f"w = {s['guidance']:g}; {s['network_evals_per_sample']} network passes per sample: no guidance "
             f"head), seed {report['seed']}, {s['network_dtype']}, scored by the trusted classifier "
             f"(`diffusion/evaluate.py`). Fréchet distance of its features to the MNIST test set's; "
             f"real-vs-real floor {report['floor']['fd']:.3f} (as many real training digits, mean of "
             f"{len(report['floor']['fd_draws'])} draws).", "",
             "| variant | left out | parameters | training loss | held-out loss | accuracy | worst digit | FD | "
             "FD / floor |", "|---|---|---|---|---|---|---|---|---|"]
    for r in v:
        lines.append(f"| {r['name']} | {r['removed']} | {r['parameters']:,} | {r['train_loss']:.4f} | "
                     f"{r['heldout_loss']:.4f} | {r['accuracy']:.2%} | {r['worst_digit']}: "
                     f"{r['worst_digit_accuracy']:.1%} | {r['fd']:.3f} | {r['fd_over_floor']:.2f}× |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = p.add_subparsers(dest="command", required=True)
    convert_cmd = commands.add_parser("convert", help="write <name>.fp16.safetensors/.json for every variant")
    evaluate_cmd = commands.add_parser("evaluate", help="write checkpoints/ablations.md and .json")
    for cmd in (convert_cmd, evaluate_cmd):
        cmd.add_argument("--folder", default=str(ABLATION_DIR), help="where the variants are")
    evaluate_cmd.add_argument("--data-dir", default="data", help="MNIST root (here: ../shared/data)")
    evaluate_cmd.add_argument("--per-class", type=int, default=200, help="samples per digit (200 -> 2,000)")
    evaluate_cmd.add_argument("--seed", type=int, default=1234)
    evaluate_cmd.add_argument("--classifier", default=str(DEFAULT_CLASSIFIER))
    evaluate_cmd.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                              help="run the networks in bfloat16 (default: where this machine runs it faster)")
    evaluate_cmd.add_argument("--out", default=str(REPORT), help="writes <out>.md and <out>.json")
    args = p.parse_args(argv)
    if args.command == "convert":
        for name in VARIANTS:
            done = convert(name, Path(args.folder))
            print(f"{name}: {done['file']} ({done['bytes'] / 2**20:.1f} MB; largest rounding "
                  f"{done['max_abs_error']:.1e})")
        return
    report = evaluate_variants(args.data_dir, args.per_class, args.seed, args.classifier, Path(args.folder),
                               args.bf16)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    Path(args.out + ".md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
