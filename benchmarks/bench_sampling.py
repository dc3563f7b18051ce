"""Speed of the shipped model on this CPU:  python -m benchmarks.bench_sampling

Prints, and writes to benchmarks/results/sampling.json (imports and loading excluded):
  * one 10-digit grid (one sample per digit) at the app's defaults: median and best of --repeats
    (bar: median ≤ 1.0 s on 2 cores)
  * ms per guided network evaluation at batch 20 (10 images × {conditional, unconditional})
  * the same grid with the course's full-T ancestral DDPM, and the speed-up ratio
Exits 1 if a bar is missed.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from devtools.bench import Report
from diffusion import load_pipeline
from diffusion.requests import DEFAULT_GUIDANCE, DEFAULT_GUIDANCE_INTERVAL, DEFAULT_SAMPLER, DEFAULT_STEPS
from diffusion.sampling import EVERY_STEP, guided_eps

GRID_BAR_S = 1.0


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--skip-ddpm", action="store_true", help="skip the slow full-T DDPM grid")
    args = p.parse_args()

    report = Report("sampling")
    pipe = load_pipeline()
    digits = list(range(10))
    grid = lambda: pipe.generate(digits, seed=0)  # noqa: E731  (the app's defaults)
    grid()  # warm-up
    grid_s = timed(grid, args.repeats)
    x, t, y = torch.randn(10, 1, 28, 28), torch.full((10,), 250), torch.arange(10)
    with torch.inference_mode():
        guided_eps(pipe.model, x, t, y, 1.0)
        eval_s = timed(lambda: guided_eps(pipe.model, x, t, y, 1.0), args.repeats * 5)

    evals = pipe.network_evaluations(DEFAULT_STEPS, DEFAULT_GUIDANCE)
    report.figure("network_dtype", str(next(pipe.model.parameters()).dtype))
    report.figure("defaults", {"sampler": DEFAULT_SAMPLER, "steps": DEFAULT_STEPS, "guidance": DEFAULT_GUIDANCE,
                               "guidance_interval": list(DEFAULT_GUIDANCE_INTERVAL), "network_evals_per_sample": evals},
                  f"network in {report.figures['network_dtype']}; defaults: {DEFAULT_SAMPLER}, {DEFAULT_STEPS} "
                  f"steps, w = {DEFAULT_GUIDANCE:g} ({evals} network evaluations per sample)")
    report.figure("grid_seconds_median", statistics.median(grid_s))
    report.figure("grid_seconds_best", min(grid_s), f"10-digit grid at the app's defaults: median "
                  f"{statistics.median(grid_s):.3f} s, best {min(grid_s):.3f} s over {args.repeats} runs")
    report.figure("ms_per_guided_eval_batch20", 1000 * statistics.median(eval_s),
                  f"one guided network evaluation (batch 20): {1000 * statistics.median(eval_s):.1f} ms")
    report.bar("grid_seconds_median", statistics.median(grid_s), GRID_BAR_S, "s",
               "10-digit grid at the app's defaults (median)")
    if not args.skip_ddpm:
        T = pipe.num_train_steps
        t0 = time.perf_counter()
        pipe.generate(digits, sampler="ddpm", num_inference_steps=T, guidance=DEFAULT_GUIDANCE or 1.0, seed=0,
                      guidance_interval=EVERY_STEP)  # the course's loop: guided at every step
        ddpm = report.figure("ddpm_full_T_seconds", time.perf_counter() - t0)
        report.figure("speedup_vs_full_ddpm", ddpm / statistics.median(grid_s),
                      f"same grid with full DDPM ({T} guided steps): {ddpm:.1f} s -> the default is "
                      f"{ddpm / statistics.median(grid_s):.0f}x faster")
    return report.finish(partial=args.skip_ddpm)


if __name__ == "__main__":
    sys.exit(main())
