"""Steering toward the asked digit: classifier guidance by the noise-aware classifier's gradient, and
best-of-N reranking, in the engine, the network server and the Generate tab."""
import numpy as np
import pytest
import torch

from diffusion.classifier import NoiseAwareClassifier
from diffusion.requests import BEST_OF, DEFAULT_CLASSIFIER_SCALE
from diffusion.sampling import classifier_guided_eps
from diffusion.scoring import best_of_n
from diffusion.server import NetworkServer


@pytest.fixture(scope="module")
def tiny_judge(tiny_random_pipe):
    torch.manual_seed(1)
    return NoiseAwareClassifier(tiny_random_pipe.schedule).eval()


def test_classifier_guidance_follows_the_judges_gradient(tiny_random_pipe, tiny_judge):
    schedule = tiny_random_pipe.schedule
    x, t, labels = torch.randn(3, 1, 28, 28), torch.tensor([10, 25, 40]), torch.tensor([1, 5, 9])
    eps = torch.randn(3, 1, 28, 28)
    x_in = x.clone().requires_grad_(True)
    log_p = torch.log_softmax(tiny_judge(x_in, t), 1)[torch.arange(3), labels].sum()
    (gradient,) = torch.autograd.grad(log_p, x_in)
    sigma = (1 - schedule.alpha_bar[t]).sqrt().float().reshape(-1, 1, 1, 1)
    with torch.inference_mode():  # the server's worker runs in inference mode
        steered = classifier_guided_eps(eps, x, t, labels, tiny_judge, 2.0, schedule)
    assert torch.allclose(steered, eps - 2.0 * sigma * gradient, atol=1e-5)
    assert torch.equal(classifier_guided_eps(eps, x, t, labels, tiny_judge, 0.0, schedule), eps)


def test_classifier_guidance_is_the_same_from_the_pipeline_and_the_server(tiny_random_pipe, tiny_judge):
    tiny_random_pipe.judge = tiny_judge
    try:
        request = tiny_random_pipe.check_request([2, 7], sampler="ddim", num_inference_steps=6, seed=3,
                                                 classifier_scale=5.0)
        [*_, last] = tiny_random_pipe.run(request)
        plain = tiny_random_pipe.generate([2, 7], sampler="ddim", num_inference_steps=6, seed=3)
    finally:
        tiny_random_pipe.judge = None
    expected = ((last.x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()[:, 0]
    assert not np.array_equal(expected, plain)  # the gradient changed the samples
    server = NetworkServer(tiny_random_pipe.model, tiny_random_pipe.schedule, judge=tiny_judge)
    try:
        other = tiny_random_pipe.check_request([4, 4, 4], num_inference_steps=5, seed=8)
        crowd = server.run([other, request])
        assert np.abs(crowd[1].astype(int) - expected.astype(int)).max() <= 1
    finally:
        server.close()
    no_judge = NetworkServer(tiny_random_pipe.model, tiny_random_pipe.schedule)
    try:
        with pytest.raises(ValueError, match="classifier guidance needs a noise-aware classifier"):
            no_judge.submit(request)
    finally:
        no_judge.close()


def test_best_of_n_keeps_each_samples_surest_candidate():
    candidates = np.arange(6 * 28 * 28, dtype=np.int64).reshape(6, 28, 28).astype(np.uint8)
    chosen = best_of_n(candidates, np.array([0.1, 0.9, 0.3, 0.8, 0.2, 0.7]), 3)
    assert np.array_equal(chosen, candidates[[1, 3]])


def test_generate_with_each_guide(client, classroom):
    from test_app import generate  # (images uint8 [N,28,28], cards, table, ...)

    plain, *_ = generate(client, digit="all", seed=5)
    default, *_ = generate(client, digit="all", seed=5, guide="classifier-free")
    assert np.array_equal(plain, default)  # the default keeps today's behaviour
    steered, *_ = generate(client, digit="all", seed=5, guide="classifier")
    checked = classroom.sampling_request("all", 1, 0.6, "dpm++2m-sde", 12, 5)
    [expected] = classroom.server.run([checked.__class__(**{**checked.__dict__,
                                                            "classifier_scale": DEFAULT_CLASSIFIER_SCALE})])
    assert np.abs(steered.astype(int) - expected.astype(int)).max() <= 1
    best, *_ = generate(client, digit="all", seed=5, guide=f"best-of-{BEST_OF}")
    candidates = classroom.server.run([checked.__class__(**{**checked.__dict__, "digits": tuple(
        d for d in checked.digits for _ in range(BEST_OF))})])[0].reshape(10, BEST_OF, 28, 28)
    for sample, options in zip(best, candidates):
        assert any(np.abs(sample.astype(int) - o.astype(int)).max() <= 1 for o in options)
    with pytest.raises(Exception, match="guide must be one of classifier-free, classifier, best-of-4, clip"):
        client.predict(guide="magic", api_name="/generate")
    with pytest.raises(Exception, match="CLIP guidance needs CLIP, which is not available"):
        client.predict(guide="clip", api_name="/generate")  # this app's CLIP points at a missing file


def test_clip_guidance_pulls_x0_toward_the_prompt(tiny_random_pipe, tiny_clip_weights):
    """With the tiny random CLIP: each guided step raises CLIP's similarity of x̂_0 to the prompt."""
    from diffusion.sampling import x0_guided_eps
    from diffusion.scoring import DIGIT_PROMPTS, load_clip
    from tiny_clip import TINY_CLIP

    scorer = load_clip(TINY_CLIP, tiny_clip_weights)
    similarity = scorer.prompt_similarity([DIGIT_PROMPTS[3], DIGIT_PROMPTS[8]])
    schedule = tiny_random_pipe.schedule
    x, t = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0)), torch.tensor([25, 25])
    eps = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(1))

    def x0_of(e):
        ab = schedule.alpha_bar[25].float()
        return ((x - (1 - ab).sqrt() * e) / ab.sqrt()).clamp(-1, 1)

    with torch.inference_mode():
        steered = x0_guided_eps(eps, x, t, similarity, 50.0, schedule)
    with torch.no_grad():
        before, after = similarity(x0_of(eps)), similarity(x0_of(steered))
    assert (after > before).all()
