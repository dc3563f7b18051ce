"""Shared test set-up: no network, few threads, small helpers."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # must precede any huggingface_hub import
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def tiny_unet_config() -> dict:
    """A checkpoint config for a very small U-Net (fast enough for sampling-loop tests)."""
    return {
        "kind": "diffusion-unet",
        "architecture": {"channels": [8, 16, 16], "attention_heads": 2, "embedding_dim": 32, "groups": 4},
        "schedule": {"name": "linear", "num_steps": 50, "beta_start": 1e-4, "beta_end": 0.02},
    }
