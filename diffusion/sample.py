"""Generate digits from the shipped model:  python -m diffusion.sample --digit 3 --per-class 16 --png grid.png

Every option defaults to the app's default setting. Writes an .npz with
    x: uint8 [N,28,28]  (MNIST's convention: 0 = background, 255 = ink)
    y: int64 [N]        the requested digits
and optionally a PNG grid (one row per requested digit when --all is given).
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from .cli import add_model_options
from .data import save_grid
from .pipeline import DEFAULT_UNET, load_pipeline
from .requests import DEFAULT_GUIDANCE, DEFAULT_SAMPLER, DEFAULT_STEPS
from .sampling import SAMPLERS


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--digit", type=int, default=None, help="the digit to draw, 0-9")
    which.add_argument("--all", action="store_true", help="all ten digits (the default when --digit is not given)")
    p.add_argument("--per-class", type=int, default=1, help="samples per requested digit")
    p.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE, help="classifier-free guidance scale w")
    p.add_argument("--sampler", choices=SAMPLERS, default=DEFAULT_SAMPLER)
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="network evaluations (ddpm: up to T)")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM noise (0 = deterministic)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="samples.npz", help="output .npz file")
    p.add_argument("--png", default=None, help="also save a PNG grid here")
    add_model_options(p, str(DEFAULT_UNET))
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.per_class < 1:
        print("error: --per-class must be at least 1", file=sys.stderr)
        return 2
    digits = [args.digit] if args.digit is not None else list(range(10))
    labels = [d for d in digits for _ in range(args.per_class)]
    pipe = load_pipeline(args.checkpoint, bf16=args.bf16, device=args.device)
    t0 = time.perf_counter()
    try:
        x = pipe.generate_many(labels, guidance=args.guidance, sampler=args.sampler, num_inference_steps=args.steps,
                               seed=args.seed, eta=args.eta, progress=len(labels) > 500)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - t0
    np.savez_compressed(args.out, x=x, y=np.asarray(labels, dtype=np.int64))
    print(f"wrote {len(x)} samples to {args.out} ({seconds:.2f} s; {args.sampler}, {args.steps} steps, w={args.guidance:g})")
    if args.png:
        save_grid(x, args.png, nrow=args.per_class if args.digit is None and args.per_class > 1 else 10)
        print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
