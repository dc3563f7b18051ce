"""Speed of the shipped model on this CPU:  python benchmarks/bench_sampling.py

Prints (imports and loading excluded):
  * one 10-digit grid (one sample per digit) at the app's defaults: median and best of --repeats
  * ms per guided network evaluation at batch 20 (10 images × {conditional, unconditional})
  * the same grid with the course's full-T ancestral DDPM, and the speed-up ratio
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from diffusion import DEFAULT_GUIDANCE, DEFAULT_SAMPLER, DEFAULT_STEPS, load_pipeline  # noqa: E402
from diffusion.pipeline import DEFAULT_GUIDANCE_INTERVAL  # noqa: E402
from diffusion.sampling import EVERY_STEP, guided_eps  # noqa: E402


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--skip-ddpm", action="store_true", help="skip the slow full-T DDPM grid")
    p.add_argument("--json", default=None, help="also write the figures here")
    args = p.parse_args()

    pipe = load_pipeline()
    digits = list(range(10))
    grid = lambda: pipe.generate(digits, seed=0)  # noqa: E731  (the app's defaults)
    grid()  # warm-up
    grid_s = timed(grid, args.repeats)

    x, t, y = torch.randn(10, 1, 28, 28), torch.full((10,), 250), torch.arange(10)
    with torch.inference_mode():
        guided_eps(pipe.model, x, t, y, 1.0)
        eval_s = timed(lambda: guided_eps(pipe.model, x, t, y, 1.0), args.repeats * 5)

    figures = {
        "threads": torch.get_num_threads(),
        "network_dtype": str(next(pipe.model.parameters()).dtype),
        "defaults": {"sampler": DEFAULT_SAMPLER, "steps": DEFAULT_STEPS, "guidance": DEFAULT_GUIDANCE,
                     "guidance_interval": list(DEFAULT_GUIDANCE_INTERVAL),
                     "network_evals_per_sample": pipe.network_evaluations(DEFAULT_STEPS, DEFAULT_GUIDANCE)},
        "grid_seconds_median": statistics.median(grid_s), "grid_seconds_best": min(grid_s),
        "ms_per_guided_eval_batch20": 1000 * statistics.median(eval_s),
    }
    print(f"torch threads: {figures['threads']}; network in {figures['network_dtype']}; defaults: {DEFAULT_SAMPLER}, "
          f"{DEFAULT_STEPS} steps, w = {DEFAULT_GUIDANCE:g} while {DEFAULT_GUIDANCE_INTERVAL[0]:g} ≤ t/T ≤ "
          f"{DEFAULT_GUIDANCE_INTERVAL[1]:g} ({figures['defaults']['network_evals_per_sample']} network evaluations per sample)")
    print(f"10-digit grid at the app's defaults: median {figures['grid_seconds_median']:.3f} s, "
          f"best {figures['grid_seconds_best']:.3f} s over {args.repeats} runs (bar: <= 1.0 s)")
    print(f"one guided network evaluation (batch 20): {figures['ms_per_guided_eval_batch20']:.1f} ms")
    if not args.skip_ddpm:
        T = pipe.num_train_steps
        t0 = time.perf_counter()
        pipe.generate(digits, sampler="ddpm", steps=T, guidance=DEFAULT_GUIDANCE or 1.0, seed=0,
                      guidance_interval=EVERY_STEP)  # the course's loop: guided at every step
        figures["ddpm_full_T_seconds"] = time.perf_counter() - t0
        figures["speedup_vs_full_ddpm"] = figures["ddpm_full_T_seconds"] / figures["grid_seconds_median"]
        print(f"same grid with full DDPM ({T} guided steps): {figures['ddpm_full_T_seconds']:.1f} s "
              f"-> the default is {figures['speedup_vs_full_ddpm']:.0f}x faster")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
