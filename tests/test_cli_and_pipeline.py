"""The sampling CLI, the Python API and the shipped checkpoints."""
import numpy as np
import pytest
import torch

from diffusion import DEFAULT_GUIDANCE, DEFAULT_SAMPLER, DEFAULT_STEPS, load_pipeline
from diffusion.checkpoints import save_checkpoint
from diffusion.classifier import load_classifier
from diffusion.data import load_shipped_digits, to_model_range
from diffusion.model import build_unet
from diffusion.sample import main as sample_main


@pytest.fixture
def tiny_checkpoint(tmp_path, tiny_unet_config):
    model = build_unet(tiny_unet_config)
    save_checkpoint(tmp_path / "unet", model.state_dict(), tiny_unet_config)
    return tmp_path / "unet"


def test_sample_cli_writes_a_valid_npz(tmp_path, tiny_checkpoint):
    out = tmp_path / "s.npz"
    assert sample_main(["--all", "--per-class", "2", "--steps", "3", "--seed", "5", "--out", str(out),
                        "--png", str(tmp_path / "g.png"), "--checkpoint", str(tiny_checkpoint)]) == 0
    with np.load(out) as f:
        x, y = f["x"], f["y"]
    assert x.dtype == np.uint8 and x.shape == (20, 28, 28)
    assert y.tolist() == [d for d in range(10) for _ in range(2)]
    assert (tmp_path / "g.png").stat().st_size > 0
    # same seed, same digits
    sample_main(["--all", "--per-class", "2", "--steps", "3", "--seed", "5", "--out", str(tmp_path / "t.npz"),
                 "--checkpoint", str(tiny_checkpoint)])
    with np.load(tmp_path / "t.npz") as f:
        assert np.array_equal(f["x"], x)


def test_sample_cli_single_digit_and_bad_input(tmp_path, tiny_checkpoint, capsys):
    out = tmp_path / "s.npz"
    assert sample_main(["--digit", "7", "--per-class", "3", "--steps", "2", "--out", str(out),
                        "--checkpoint", str(tiny_checkpoint)]) == 0
    with np.load(out) as f:
        assert f["y"].tolist() == [7, 7, 7]
    assert sample_main(["--digit", "12", "--steps", "2", "--out", str(tmp_path / "bad.npz"),
                        "--checkpoint", str(tiny_checkpoint)]) == 2
    assert "each digit must be a whole number from 0 to 9" in capsys.readouterr().err
    assert not (tmp_path / "bad.npz").exists()


def test_cli_defaults_are_the_app_defaults():
    from diffusion.sample import parse_args

    a = parse_args([])
    assert (a.guidance, a.sampler, a.steps) == (DEFAULT_GUIDANCE, DEFAULT_SAMPLER, DEFAULT_STEPS)


@pytest.mark.parametrize("bad, message", [
    (dict(digits=[10]), "from 0 to 9"), (dict(digits=[]), "non-empty"), (dict(digits=["x"]), "each digit must be a whole number"),
    (dict(guidance=float("nan")), "finite"), (dict(guidance=float("inf")), "finite"), (dict(guidance=-2.5), "from -2 to 8"),
    (dict(num_inference_steps=0), "steps"), (dict(num_inference_steps=10**6), "steps"),
    (dict(num_inference_steps=2.5), "steps"), (dict(sampler="euler"), "sampler"),
    (dict(guidance_interval=(0.7, 0.2)), "guidance_interval"), (dict(guidance_interval=(-0.1, 1.0)), "guidance_interval"),
])
def test_pipeline_rejects_bad_requests(tiny_checkpoint, bad, message):
    pipe = load_pipeline(tiny_checkpoint)
    kwargs = {"digits": [1], "guidance": 1.0, "sampler": "ddim", "num_inference_steps": 2, **bad}
    digits = kwargs.pop("digits")
    with pytest.raises(ValueError, match=message):
        pipe.generate(digits, **kwargs)


def test_generate_many_matches_generate_within_a_batch(tiny_checkpoint):
    pipe = load_pipeline(tiny_checkpoint)
    a = pipe.generate([1, 2, 3], num_inference_steps=3, seed=4)
    b = pipe.generate_many([1, 2, 3], num_inference_steps=3, seed=4, batch_size=10)
    assert np.array_equal(a, b)


def test_shipped_model_draws_recognisable_digits():
    """The shipped checkpoint at the app's defaults: the trusted classifier reads what was asked for."""
    pipe, clf = load_pipeline(), load_classifier()
    digits = list(range(10)) * 2
    x = pipe.generate(digits, seed=0)
    pred = clf.predict_proba(to_model_range(x)).argmax(1)
    assert (pred == torch.tensor(digits)).float().mean() >= 0.9


def test_shipped_classifier_reads_the_shipped_real_digits():
    x, y = load_shipped_digits()
    assert len(x) == 30 and sorted(set(y.tolist())) == list(range(10))
    probs = load_classifier().predict_proba(to_model_range(x))
    assert probs.argmax(1).tolist() == y.tolist()
