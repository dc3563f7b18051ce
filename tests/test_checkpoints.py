"""Checkpoints: round trip, and a clear error naming the file for each way loading can fail."""
import json

import pytest
import torch

from diffusion.checkpoints import CheckpointError, save_checkpoint
from diffusion.model import build_unet
from diffusion.pipeline import load_pipeline


@pytest.fixture
def saved(tmp_path, tiny_unet_config):
    model = build_unet(tiny_unet_config)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    save_checkpoint(tmp_path / "unet", model.state_dict(), tiny_unet_config)
    return tmp_path / "unet", model


def test_round_trip(saved):
    stem, model = saved
    pipe = load_pipeline(stem, bf16=False)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(pipe.model.state_dict()[k], v, atol=0, rtol=0)
    assert pipe.num_train_steps == 50 and pipe.schedule.name == "linear"
    assert not list(stem.parent.glob("*.tmp-*"))


def test_a_bf16_pipeline_draws_nearly_the_same_digits(saved):
    """bfloat16 only speeds up the network: the sampler's math stays float32 and images barely move."""
    stem, _ = saved
    full, half = load_pipeline(stem, bf16=False), load_pipeline(stem, bf16=True)
    assert next(half.model.parameters()).dtype == torch.bfloat16
    a, b = (p.generate([0, 5, 9], guidance=1.0, num_inference_steps=5, seed=2).astype(int) for p in (full, half))
    assert a.std() > 10  # real images, not blank
    assert abs(a - b).mean() < 2.0 and abs(a - b).max() < 64


def test_missing_weights(saved):
    stem, _ = saved
    stem.with_suffix(".safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"weights not found: .*unet\.safetensors"):
        load_pipeline(stem)


def test_missing_config(saved):
    stem, _ = saved
    stem.with_suffix(".json").unlink()
    with pytest.raises(CheckpointError, match=r"config not found: .*unet\.json"):
        load_pipeline(stem)


def test_truncated_weights(saved):
    stem, _ = saved
    path = stem.with_suffix(".safetensors")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"unet\.safetensors are unreadable \(truncated"):
        load_pipeline(stem)


def test_config_that_does_not_match_the_weights(saved):
    stem, _ = saved
    cfg = json.loads(stem.with_suffix(".json").read_text())
    cfg["architecture"]["channels"] = [8, 16, 32]
    stem.with_suffix(".json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"do not match the architecture in .*unet\.json \(.*wrong shape"):
        load_pipeline(stem)


def test_invalid_json_and_wrong_kind(saved):
    stem, _ = saved
    path = stem.with_suffix(".json")
    cfg = json.loads(path.read_text())
    path.write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_pipeline(stem)
    path.write_text(json.dumps({**cfg, "kind": "digit-classifier"}))
    with pytest.raises(CheckpointError, match="expected 'diffusion-unet'"):
        load_pipeline(stem)


def test_shipped_files_are_safetensors_and_small():
    from diffusion.checkpoints import CHECKPOINT_DIR

    files = list(CHECKPOINT_DIR.glob("*.safetensors"))
    assert files, "no shipped checkpoint"
    for f in files:
        assert f.stat().st_size <= 15 * 1024 * 1024, f
    assert not list(CHECKPOINT_DIR.glob("**/*.pt")) and not list(CHECKPOINT_DIR.glob("**/*.pkl"))
