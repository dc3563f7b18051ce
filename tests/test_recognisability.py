"""The engine behind the Lab tab: the noise-aware classifier, when a digit becomes recognisable, the
guidance components and negative w, and the difficulty table."""
import time

import numpy as np
import pytest
import torch

from diffusion.classifier import (DEFAULT_NOISE_CLASSIFIER, NoiseAwareClassifier, accuracy, load_noise_classifier,
                                  pure_noise_top_probability)
from diffusion.checkpoints import save_checkpoint
from diffusion.data import load_shipped_digits, to_model_range
from diffusion.evaluate import difficulty_by_digit
from diffusion.recognisability import (RECOGNISABLE_PROBABILITY, first_recognisable, measure_recognisability,
                                       percent_of_process)
from diffusion.sampling import SamplerStep, conditional_and_unconditional_eps, guidance_components, sample
from diffusion.schedules import NoiseSchedule


# --- the noise-aware classifier -------------------------------------------------------------------------------

def test_noise_classifier_round_trips_through_its_checkpoint(tmp_path):
    schedule = NoiseSchedule.create("cosine", 50)
    model = NoiseAwareClassifier(schedule).eval()
    config = {"kind": "noise-aware-digit-classifier", "architecture": {"width": 32, "feature_dim": 128},
              "schedule": schedule.to_config()}
    save_checkpoint(tmp_path / "nc", model.state_dict(), config)
    loaded = load_noise_classifier(tmp_path / "nc")
    x, t = torch.randn(6, 1, 28, 28), torch.tensor([0, 1, 10, 25, 49, 50])
    assert torch.equal(loaded.predict_proba(x, t), model.predict_proba(x, t))
    assert loaded.predict_proba(x, 50).shape == (6, 10)  # one t for the whole batch


def test_noise_classifier_sees_the_noise_level():
    """The same image at two time steps gets different answers: t is an input, not ignored."""
    torch.manual_seed(0)
    model = NoiseAwareClassifier(NoiseSchedule.create("cosine", 50)).eval()
    x = torch.randn(4, 1, 28, 28)
    assert not torch.allclose(model.predict_proba(x, 0), model.predict_proba(x, 50))


def test_shipped_noise_classifier_reads_real_digits_and_doubts_noise():
    """The shipped checkpoint: every shipped real test digit right when clean, and unsure on pure noise
    (the full bars, on 10,000 test digits, are measured by benchmarks/bench_lab.py)."""
    model = load_noise_classifier(DEFAULT_NOISE_CLASSIFIER)
    images, labels = load_shipped_digits()
    assert accuracy(model, to_model_range(images), torch.from_numpy(labels)) == 1.0
    assert pure_noise_top_probability(model, n=2000) <= 0.3
    # half-way through the forward process the digit is still there for the classifier to see
    x0 = to_model_range(images)
    xt = model.schedule.q_sample(x0, torch.full((len(x0),), 150), torch.randn(x0.shape, generator=torch.Generator().manual_seed(0)))
    assert (model.predict_proba(xt, 150).argmax(1).numpy() == labels).mean() >= 0.9


# --- when a digit becomes recognisable --------------------------------------------------------------------------

def fake_run(first_steps, total, T):
    """Steps of a fake run whose row r is recognisable from step first_steps[r] on; x carries (step, row)."""
    n = len(first_steps)
    for i in range(total + 1):
        x = torch.zeros(n, 1, 28, 28)
        x[:, 0, 0, 0], x[:, 0, 0, 1] = float(i), torch.arange(n).float()
        yield SamplerStep(i, total, 0 if i == total else T - i, x, None)


def fake_judge(first_steps, digits, calls):
    first, digits = torch.tensor(first_steps), torch.tensor(digits)

    def probabilities(x, t):
        calls.append(len(x))
        step, row = x[:, 0, 0, 0], x[:, 0, 0, 1].long()
        p = torch.full((len(x), 10), 0.05)
        p[torch.arange(len(x)), digits[row]] = torch.where(step >= first[row], 0.9, 0.1)
        return p
    return probabilities


@pytest.mark.parametrize("total", [12, 100, 500])
def test_measure_finds_the_exact_first_step_with_few_judge_calls(total):
    first_steps = [0, 3, total // 2 + 1, total - 1, total, total + 1]  # the last one never
    digits = [1, 8, 8, 3, 0, 5]
    calls = []
    result = measure_recognisability(fake_run(first_steps, total, 500), digits, fake_judge(first_steps, digits, calls), 500)
    expected = np.array([s if s <= total else -1 for s in first_steps])
    assert result.first_step.tolist() == expected.tolist()
    assert result.first_t[0] == 500  # x_T is judged at t = T
    assert result.first_t[4] == 0 and result.first_t[5] == -1
    assert np.isnan(result.percent[5]) and result.percent[2] == pytest.approx(percent_of_process(total // 2 + 1, total))
    assert sum(calls) <= len(digits) * 2 * 51 + len(digits) * 10  # about 50 frames per run, not every frame
    rows = {r["digit"]: r for r in result.per_digit()}
    assert rows[8]["runs"] == 2 and rows[8]["recognised"] == 2
    assert rows[8]["median_percent"] == pytest.approx(np.mean([100 * 3 / total, 100 * (total // 2 + 1) / total]))
    assert rows[5]["recognised"] == 0 and "median_percent" not in rows[5]


def test_first_recognisable_uses_the_threshold():
    assert first_recognisable([None, 0.1, RECOGNISABLE_PROBABILITY, 0.9]) == 2
    assert first_recognisable([0.2, None, 0.49]) is None


# --- guidance: its parts, and w below 0 -------------------------------------------------------------------------

def test_guidance_components_add_up(tiny_random_pipe):
    model = tiny_random_pipe.model
    x, t, labels = torch.randn(3, 1, 28, 28), torch.tensor([5, 20, 40]), torch.tensor([1, 2, 3])
    eps_c, eps_u, direction = guidance_components(model, x, t, labels)
    with torch.inference_mode():
        ref_c, ref_u = conditional_and_unconditional_eps(model, x, t, labels)
    assert torch.allclose(eps_c, ref_c) and torch.allclose(eps_u, ref_u)
    assert torch.allclose(direction, eps_c - eps_u)


def test_w_minus_one_is_the_unconditional_model(tiny_random_pipe):
    """ε = (1+w)·ε(x,c) − w·ε(x,∅) at w = -1 is ε(x,∅): the label no longer matters."""
    pipe = tiny_random_pipe
    settings = dict(guidance=-1.0, sampler="ddim", num_inference_steps=8, generator=None)
    x_T = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    as_three = sample(pipe.model, pipe.schedule, torch.tensor([3, 3]), x_T=x_T, **settings)
    as_seven = sample(pipe.model, pipe.schedule, torch.tensor([7, 7]), x_T=x_T, **settings)
    assert torch.allclose(as_three, as_seven, atol=1e-5)
    guided = sample(pipe.model, pipe.schedule, torch.tensor([3, 3]), x_T=x_T, **{**settings, "guidance": 1.0})
    assert not torch.allclose(as_three, guided, atol=1e-3)


def test_requests_accept_the_courses_negative_guidance(tiny_random_pipe):
    assert tiny_random_pipe.check_request([3], guidance=-2).guidance == -2.0
    with pytest.raises(ValueError, match="from -2 to 8"):
        tiny_random_pipe.check_request([3], guidance=-2.01)


# --- difficulty per digit -----------------------------------------------------------------------------------

def test_difficulty_by_digit_counts_confusions():
    probs = np.eye(10)[[1, 1, 7, 3, 3]] * 0.8 + 0.02
    stats = difficulty_by_digit(probs, np.array([1, 7, 7, 3, 3]))
    assert stats["confusion"][7, 1] == 1 and stats["confusion"][7, 7] == 1 and stats["confusion"].sum() == 5
    assert stats["accuracy"][7] == 0.5 and stats["accuracy"][3] == 1.0 and np.isnan(stats["accuracy"][0])
    assert stats["confidence"][7] == pytest.approx((0.02 + 0.82) / 2)


def test_measuring_stops_following_a_run_once_every_sample_is_recognised():
    seen = []

    def run():
        for step in fake_run([3, 10], 100, 500):
            seen.append(step.index)
            yield step

    result = measure_recognisability(run(), [1, 2], fake_judge([3, 10], [1, 2], []), 500)
    assert result.first_step.tolist() == [3, 10]
    assert max(seen) == 10  # the rest of the run could not change the answer


def test_run_experiment_measures_runs_side_by_side_and_frees_the_server(tiny_random_pipe):
    from diffusion.recognisability import run_experiment
    from diffusion.server import NetworkServer

    server = NetworkServer(tiny_random_pipe.model, tiny_random_pipe.schedule)
    try:
        requests = [tiny_random_pipe.check_request([d] * 3, sampler="ddpm", num_inference_steps=40, seed=1)
                    for d in (2, 7)]
        def at_once(x, t):  # every digit recognisable from x_T on
            return torch.full((len(x), 10), 0.9)

        result = run_experiment(server, requests, at_once, tiny_random_pipe.num_train_steps)
        assert result.digits.tolist() == [2, 2, 2, 7, 7, 7] and (result.first_step == 0).all()
        assert result.num_inference_steps == 40
        deadline = time.monotonic() + 10
        while server.requests_in_progress() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.requests_in_progress() == 0  # both runs stopped long before their 40 steps
        assert len(server.tick_sizes) < 40
    finally:
        server.close()


def test_the_most_common_mistake_is_the_largest_off_diagonal_count():
    """A digit with one kind of mistake names it (the table showed '–' there), and one with several names the
    commonest (the table named the second commonest)."""
    from diffusion.evaluate import most_common_mistakes
    confusion = np.zeros((10, 10), dtype=np.int64)
    np.fill_diagonal(confusion, 18)
    confusion[7, 1] = 2                       # 7: only ever mistaken for a 1
    confusion[4, 9], confusion[4, 1] = 5, 1   # 4: mostly for a 9, once for a 1
    confusion[3, 5] = confusion[3, 8] = 2     # 3: a tie, the smaller digit
    mistakes = most_common_mistakes(confusion)
    assert mistakes[7] == (1, 2) and mistakes[4] == (9, 5) and mistakes[3] == (5, 2)
    assert mistakes[0] is None and mistakes.count(None) == 7
    probs = np.eye(10)[[1, 1, 7, 9]]
    assert difficulty_by_digit(probs, np.array([7, 7, 7, 4]))["mistaken_for"][7] == (1, 2)
