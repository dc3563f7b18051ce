"""Options every command line that loads the diffusion model shares (one definition, not four)."""
from __future__ import annotations

import argparse


def add_model_options(parser: argparse.ArgumentParser, default_checkpoint: str) -> None:
    """--checkpoint, --device and --bf16/--no-bf16 (default: bfloat16 where it is fast, see `bf16_is_fast`)."""
    parser.add_argument("--checkpoint", default=default_checkpoint, help="diffusion checkpoint stem")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps, or auto (cuda, then mps, then cpu)")
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                        help="run the network in bfloat16 (default: where this machine runs it faster)")
