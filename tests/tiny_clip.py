"""A tiny random open_clip model for tests: built from a config JSON, weights saved as safetensors.

64×64 images (so the upscaling must follow the model's size, not a fixed 224), CLIP's real
tokenizer and context length. Builds in about 0.1 s; no download.
"""
import json
from pathlib import Path

import open_clip
import torch
from safetensors.torch import save_file

TINY_CLIP = "tiny-clip-test"
TINY_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def save_tiny_clip_weights(folder: Path) -> str:
    """Register TINY_CLIP with open_clip (in this process) and save random weights; returns the file's path."""
    (folder / f"{TINY_CLIP}.json").write_text(json.dumps(TINY_CLIP_CONFIG))
    open_clip.add_model_config(folder / f"{TINY_CLIP}.json")
    torch.manual_seed(0)
    model = open_clip.create_model(TINY_CLIP, pretrained=None)
    path = folder / "tiny_clip.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return str(path)
