"""Training over time (diffusion/training_history.py): the reference run's snapshots and loss logs, one
example's loss checked against train.py's, the loss at every t, and the committed evaluation.json."""
import numpy as np
import pytest
import torch

from diffusion import train
from diffusion.data import load_shipped_digits, to_model_range
from diffusion.pipeline import load_pipeline
from diffusion.training_history import (EVALUATION, image_to_uint8, list_snapshots, load_snapshot, loss_by_t,
                                        loss_history, noise_draw, noise_prediction, noise_to_uint8, read_evaluation)

STEPS = [25, 100, 235, 469, 938, 1407, 2345]


@pytest.fixture(scope="module")
def snapshots():
    return list_snapshots()


@pytest.fixture(scope="module")
def digits():
    images, labels = load_shipped_digits()
    return to_model_range(images), torch.as_tensor(labels)


@pytest.fixture(scope="module")
def last(snapshots):
    return load_snapshot(snapshots[-1], bf16=False)  # float32: the exact comparisons below


def test_snapshots_are_listed_in_training_order(snapshots):
    assert [s.step for s in snapshots] == STEPS
    epochs = [s.epoch for s in snapshots]
    assert epochs == sorted(epochs) and epochs[3] == 1.0 and epochs[-1] == 5.0  # 469 steps = 1 epoch
    assert all(s.path.with_suffix(".safetensors").is_file() for s in snapshots)


def test_a_snapshot_loads_as_a_float32_network_without_a_guidance_head(last):
    assert next(last.model.parameters()).dtype == torch.float32
    assert not last.model.config.guidance_head
    assert last.num_train_steps == 500


def test_the_held_out_loss_falls_over_training():
    h = loss_history()
    assert list(h.heldout_steps) == sorted(set(STEPS) | {1876})  # the snapshots and every epoch's end
    assert np.all(np.diff(h.heldout) < 0)
    assert h.heldout[0] > 0.9 and h.heldout[-1] < 0.04  # from guessing (≈ 1) to a trained network
    assert len(h.steps) == len(h.training) == len(h.smoothed) and h.smoothed[-1] < h.smoothed[0] / 10


def test_noise_prediction_loss_is_the_mean_squared_error_of_the_noise(last, digits):
    x0s, labels = digits
    r = noise_prediction(last.model, last.schedule, x0s[4], int(labels[4]), t=120, seed=3)
    np.testing.assert_allclose(r.error, r.eps_hat - r.eps, atol=1e-6)
    assert r.mse == pytest.approx(float(np.mean((r.eps_hat - r.eps) ** 2)), rel=1e-5)
    assert r.baseline == pytest.approx(float(np.mean(r.eps ** 2)), rel=1e-5)
    np.testing.assert_allclose(r.eps, noise_draw(3)[0, 0].numpy())
    np.testing.assert_allclose(r.x_t, r.signal * r.x0 + r.noise_scale * r.eps, atol=1e-5)
    assert 0 < r.mse < 0.5 * r.baseline  # the trained network knows much of the noise


def test_noise_prediction_matches_the_training_loss_for_the_same_draw(last, digits):
    """train.diffusion_loss with labels kept (as its fixed_loss logs) draws t and ε from a generator; the
    same draw given to noise_prediction gives the same number."""
    x0s, labels = digits
    x0, y = x0s[7:8], labels[7:8]
    _, t, noise, _ = train.noisy_batch(last.schedule, x0, 0.0, torch.Generator().manual_seed(11))
    with torch.inference_mode():
        expected = train.diffusion_loss(last.model, last.schedule, x0, y, 0.0, torch.Generator().manual_seed(11))
    r = noise_prediction(last.model, last.schedule, x0, int(y), int(t), noise=noise)
    assert r.mse == pytest.approx(expected.item(), rel=1e-5)


def test_the_shipped_network_with_its_guidance_head_predicts_the_noise(digits):
    pipe = load_pipeline(bf16=False)
    x0s, labels = digits
    r = noise_prediction(pipe.model, pipe.schedule, x0s[0], int(labels[0]), t=250, seed=0)
    assert 0 < r.mse < 0.1


def test_loss_by_t_is_the_mean_of_each_examples_loss(last, digits):
    x0s, labels = digits
    ts = [5, 300]
    losses = loss_by_t(last.model, last.schedule, x0s[:3], labels[:3], ts, seed=2, batch_size=4)
    assert losses.shape == (2,) and np.all(np.isfinite(losses))
    noise = noise_draw(2, (6, 1, 28, 28))  # row i·3 + j: digit j at ts[i]
    by_hand = [np.mean([noise_prediction(last.model, last.schedule, x0s[j], int(labels[j]), t,
                                         noise=noise[i * 3 + j]).mse for j in range(3)]) for i, t in enumerate(ts)]
    np.testing.assert_allclose(losses, by_hand, rtol=1e-4)


def test_the_loss_falls_at_every_t_and_small_t_is_hardest(snapshots, last, digits):
    x0s, labels = digits
    ts = [1, 100, 250, 400, 500]
    first = load_snapshot(snapshots[0], bf16=False)
    early = loss_by_t(first.model, first.schedule, x0s, labels, ts)
    late = loss_by_t(last.model, last.schedule, x0s, labels, ts)
    assert np.all(early > 0.9)                       # 25 steps in: about the loss of guessing ε̂ = 0
    assert np.all(late < early / 3)
    assert late[0] == late.max() and late[-1] < 0.01  # t = 1 is hardest; at t = T, x_t is almost ε itself


def test_noise_and_images_map_to_uint8_on_fixed_scales():
    assert list(noise_to_uint8(np.array([-5.0, -3.0, 0.0, 3.0, 5.0]))) == [0, 0, 128, 255, 255]
    assert list(image_to_uint8(np.array([-2.0, -1.0, 0.0, 1.0]))) == [0, 0, 128, 255]


def test_evaluation_json_scores_every_snapshot(snapshots, tmp_path):
    assert read_evaluation(tmp_path / "missing.json") == {}
    report = read_evaluation(EVALUATION)  # committed: python -m diffusion.training_history
    assert sorted(report["snapshots"]) == STEPS
    first, last = report["snapshots"][STEPS[0]], report["snapshots"][STEPS[-1]]
    assert all(0 <= e["accuracy"] <= 1 and e["fd"] > 0 and e["samples"] == 500 for e in report["snapshots"].values())
    assert first["accuracy"] < 0.3 < 0.9 < last["accuracy"]
    assert last["fd"] < first["fd"] / 10 and report["floor"]["fd"] < last["fd"]
    assert last["settings"]["network_evals_per_sample"] == 2 * report["final"]["settings"]["network_evals_per_sample"]
