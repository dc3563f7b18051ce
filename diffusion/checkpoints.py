"""Checkpoints: safetensors weights + a JSON config beside them. No pickle anywhere.

A checkpoint named `checkpoints/unet` is two files:
    checkpoints/unet.safetensors   the tensors
    checkpoints/unet.json          {"kind": ..., "architecture": {...}, ...} everything else
Loading checks the config against the weights and names the file when something is wrong.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

CHECKPOINT_DIR = Path(__file__).resolve().parent.parent / "checkpoints"
DEFAULT_UNET = CHECKPOINT_DIR / "unet"                          # the shipped (distilled) diffusion model
DEFAULT_CLASSIFIER = CHECKPOINT_DIR / "classifier"              # the trusted clean-digit classifier
DEFAULT_NOISE_CLASSIFIER = CHECKPOINT_DIR / "noise_classifier"  # reads x_t at its t (learned DEFAULT_UNET's schedule)


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable, or does not match its config."""


def checkpoint_paths(stem: str | Path) -> tuple[Path, Path]:
    """'checkpoints/unet' (or '…/unet.json' / '…/unet.safetensors') -> (weights path, config path)."""
    stem = Path(stem)
    if stem.suffix in (".json", ".safetensors"):
        stem = stem.with_suffix("")
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def save_checkpoint(stem: str | Path, tensors: dict[str, torch.Tensor], config: dict) -> tuple[Path, Path]:
    """Write tensors (contiguous CPU copies) and config; returns the two paths.

    Files are written to a temporary name first and renamed, so an interrupted save never leaves
    a truncated checkpoint behind.
    """
    weights_path, config_path = checkpoint_paths(stem)
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    tmp_w, tmp_c = weights_path.with_suffix(".tmp-w"), config_path.with_suffix(".tmp-c")
    save_file(tensors, str(tmp_w))
    tmp_c.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    tmp_w.replace(weights_path)
    tmp_c.replace(config_path)
    return weights_path, config_path


def read_config(stem: str | Path) -> dict:
    """The JSON config of a checkpoint, with a clear error if it is missing or not JSON."""
    _, config_path = checkpoint_paths(stem)
    if not config_path.is_file():
        raise CheckpointError(f"checkpoint config not found: {config_path}")
    try:
        return json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"checkpoint config {config_path} is not valid JSON: {e}") from None


def read_tensors(stem: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint, with a clear error if the file is missing or truncated."""
    weights_path, _ = checkpoint_paths(stem)
    if not weights_path.is_file():
        raise CheckpointError(f"checkpoint weights not found: {weights_path}")
    try:
        return load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint weights {weights_path} are unreadable "
                              f"(truncated or not a safetensors file): {e}") from None


def load_module(stem: str | Path, build: Callable[[dict], torch.nn.Module], kind: str,
                prefix: str = "") -> tuple[torch.nn.Module, dict]:
    """Build a module from a checkpoint's config and load its weights, checking they agree.

    build: config dict -> freshly initialised module; kind: the expected config["kind"];
    prefix: only tensors whose names start with it are loaded (e.g. "ema." from a training state).
    Returns (module in eval mode, config).
    """
    weights_path, config_path = checkpoint_paths(stem)
    config = read_config(stem)
    if config.get("kind") != kind:
        raise CheckpointError(f"{config_path} describes a {config.get('kind')!r} checkpoint, expected {kind!r}")
    try:
        module = build(config)
    except (TypeError, ValueError, KeyError) as e:
        raise CheckpointError(f"{config_path} has an invalid architecture: {e}") from None
    tensors = {k[len(prefix):]: v for k, v in read_tensors(stem).items() if k.startswith(prefix)}
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong_shape = sorted(k for k in set(expected) & set(tensors) if expected[k].shape != tensors[k].shape)
    if missing or unexpected or wrong_shape:
        detail = "; ".join(f"{name}: {', '.join(keys[:3])}{' …' if len(keys) > 3 else ''}"
                           for name, keys in (("missing", missing), ("unexpected", unexpected),
                                              ("wrong shape", wrong_shape)) if keys)
        raise CheckpointError(f"weights {weights_path} do not match the architecture in {config_path} ({detail})")
    module.load_state_dict(tensors)
    return module.eval(), config
