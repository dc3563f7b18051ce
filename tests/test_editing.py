"""Editing: MNIST-style framing of a drawing, SDEdit and inpainting through the pipeline and the network
server, and bad edit requests refused with a clear message."""
import numpy as np
import pytest
import torch

from diffusion.data import load_shipped_digits, to_model_range
from diffusion.digit_images import NotADigitImage, mnist_normalise
from diffusion.editing import DEFAULT_EDIT_CLASSIFIER_SCALE, DEFAULT_EDIT_GUIDANCE, INPAINT_RESAMPLE, INPAINT_SAMPLER, INPAINT_STEPS
from diffusion.server import NetworkServer


def edit(pipe, digits, image, *, seed=0, sampler="dpm++2m-sde", steps=12, guidance=0.6, **edit_options):
    """A checked edit request (through the pipeline's check)."""
    return pipe.check_edit(digits, image, seed=seed, sampler=sampler, num_inference_steps=steps, guidance=guidance,
                           **edit_options)


def shipped(digit: int) -> np.ndarray:
    images, labels = load_shipped_digits()
    return images[list(labels).index(digit)]


def half_mask(side: str) -> np.ndarray:
    """1 = keep, 0 = regenerate the named half."""
    keep = np.ones((28, 28), np.uint8)
    keep[{"top": np.s_[:14], "bottom": np.s_[14:]}[side]] = 0
    return keep


# --- framing a digit as MNIST did -------------------------------------------------------------------------------

def test_real_mnist_digits_are_already_framed():
    images, _ = load_shipped_digits()
    for image in images:
        assert np.abs(mnist_normalise(image).astype(int) - image.astype(int)).mean() < 1


def test_a_drawing_that_fills_the_frame_is_shrunk_into_a_20_pixel_box_and_centred():
    drawing = np.zeros((280, 280), np.uint8)
    drawing[10:270, 120:160] = 255  # a tall "1" across the whole canvas
    framed = mnist_normalise(drawing)
    rows, cols = np.nonzero(framed > 32)
    assert rows.max() - rows.min() + 1 == 20
    weights = framed.astype(float)
    centre = ((weights.sum(1) * np.arange(28)).sum() / weights.sum(), (weights.sum(0) * np.arange(28)).sum() / weights.sum())
    assert abs(centre[0] - 14) <= 0.6 and abs(centre[1] - 14) <= 0.6


def test_a_blank_image_is_refused():
    with pytest.raises(NotADigitImage, match="blank"):
        mnist_normalise(np.zeros((28, 28), np.uint8))


# --- bad edit requests ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("image, options, message", [
    (np.zeros((20, 20), np.uint8), dict(strength=0.5), "28×28 uint8"),
    (np.zeros((28, 28), np.float32), dict(strength=0.5), "28×28 uint8"),
    (None, dict(strength=1.5), "strength s must be a finite number from 0 to 1"),
    (None, dict(strength=-0.1), "strength s must be a finite number from 0 to 1"),
    (None, dict(strength=float("nan")), "strength s"),
    (None, dict(strength=1, keep_mask=np.ones((28, 28), np.uint8)), "the mask is empty"),
    (None, dict(strength=1, keep_mask=np.ones((27, 28), np.uint8)), "the mask must be 28×28"),
    (None, dict(strength=1, keep_mask=np.full((28, 28), 7)), "0 \\(regenerate\\) or 1 \\(keep\\)"),
    (None, dict(strength=1, keep_mask=half_mask("top"), resample=0), "resamplings per step"),
])
def test_bad_edits_are_refused(tiny_random_pipe, image, options, message):
    image = shipped(3) if image is None else image
    with pytest.raises(ValueError, match=message):
        edit(tiny_random_pipe, [3], image, sampler="ddpm", **options)


def test_inpainting_needs_a_one_step_sampler(tiny_random_pipe):
    with pytest.raises(ValueError, match="one-step sampler \\(ddpm or ddim\\)"):
        edit(tiny_random_pipe, [3], shipped(3), sampler="dpm++2m", strength=1, keep_mask=half_mask("top"))


def test_a_weak_edit_takes_no_more_steps_than_its_start(tiny_random_pipe):
    request = edit(tiny_random_pipe, [3], shipped(3), sampler="ddim", steps=12, strength=0.1)  # t = 5 of 50
    assert request.num_inference_steps == 5
    steps = list(tiny_random_pipe.run(request))
    assert len(steps) == 5 and steps[0].index == 1


# --- inpainting keeps what it should, and is the same alone or in a crowd ----------------------------------------

def test_inpainting_keeps_the_unmasked_pixels_exactly(tiny_random_pipe):
    image, keep = shipped(7), half_mask("bottom")
    request = edit(tiny_random_pipe, [7, 7, 7], image, sampler="ddpm", steps=10, strength=1, keep_mask=keep, resample=3)
    [*_, last] = tiny_random_pipe.run(request)
    assert len(list(tiny_random_pipe.run(request))) == 9 * 3 + 1  # each step but the last resampled 3 times
    result = ((last.x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()[:, 0]
    for sample in result:
        assert np.abs(sample[keep == 1].astype(int) - image[keep == 1].astype(int)).max() <= 1
    assert not np.array_equal(result[0][keep == 0], image[keep == 0])  # the masked half was regenerated


@pytest.mark.parametrize("options", [dict(strength=0.4), dict(strength=1, keep_mask=half_mask("top"), resample=2)])
def test_an_edit_is_the_same_from_the_server_alone_or_in_a_crowd(tiny_random_pipe, options):
    request = edit(tiny_random_pipe, [3, 5], shipped(3), sampler="ddpm", steps=8, seed=4, **options)
    [*_, last] = tiny_random_pipe.run(request)
    expected = ((last.x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()[:, 0]
    server = NetworkServer(tiny_random_pipe.model, tiny_random_pipe.schedule)
    try:
        other = tiny_random_pipe.check_request([1, 2, 3], num_inference_steps=6, sampler="ddim", seed=9)
        alone = server.submit(request).result()
        crowd = server.run([other, request.with_guidance(request.guidance + 0.0), other])  # shares the ticks
        assert np.abs(alone.astype(int) - expected.astype(int)).max() <= 1
        assert np.abs(crowd[1].astype(int) - expected.astype(int)).max() <= 1
    finally:
        server.close()


# --- the shipped model: the bars on its real digits (quality, not speed) ---------------------------------

@pytest.fixture(scope="module")
def shipped_pipe():
    from diffusion.classifier import load_noise_classifier
    from diffusion.pipeline import load_pipeline

    return load_pipeline(judge=load_noise_classifier())


@pytest.fixture(scope="module")
def trusted():
    from diffusion.classifier import load_classifier

    return load_classifier()


def test_sdedit_turns_a_real_three_into_an_eight_at_s_0_6_and_keeps_it_at_0_2(shipped_pipe, trusted):
    """(The bar over every shipped 3 is measured by benchmarks/bench_editing.py.)"""
    three = shipped(3)
    steer = dict(guidance=DEFAULT_EDIT_GUIDANCE, classifier_scale=DEFAULT_EDIT_CLASSIFIER_SCALE)
    strong = shipped_pipe.edit([8] * 20, three, strength=0.6, **steer)
    assert (trusted.predict_proba(to_model_range(strong)).argmax(1) == 8).float().mean() >= 0.5
    weak = shipped_pipe.edit([8] * 20, three, strength=0.2, **steer)
    assert (trusted.predict_proba(to_model_range(weak)).argmax(1) == 3).float().mean() >= 0.75  # mostly still a 3
    assert np.abs(weak.astype(float) - three.astype(float)).mean() / 255 <= 0.1


def test_inpainting_the_bottom_of_a_real_seven(shipped_pipe, trusted):
    seven, keep = shipped(7), half_mask("bottom")
    request = edit(shipped_pipe, [7] * 20, seven, sampler=INPAINT_SAMPLER, steps=INPAINT_STEPS, strength=1,
                   keep_mask=keep, resample=INPAINT_RESAMPLE)
    [*_, last] = shipped_pipe.run(request)
    images = ((last.x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()[:, 0]
    assert max(np.abs(im[keep == 1].astype(int) - seven[keep == 1].astype(int)).max() for im in images) <= 1
    assert (trusted.predict_proba(to_model_range(images)).argmax(1) == 7).float().mean() >= 0.95


def test_edits_that_differ_only_in_strength_or_mask_are_different_runs(tiny_random_pipe):
    """The server computes identical requests once; an edit's image, strength and mask are part of what makes
    two requests identical."""
    server = NetworkServer(tiny_random_pipe.model, tiny_random_pipe.schedule)
    try:
        requests = [edit(tiny_random_pipe, [3], shipped(3), sampler="ddim", steps=6, strength=s) for s in (0.2, 0.9)]
        requests.append(edit(tiny_random_pipe, [3], shipped(3), sampler="ddim", steps=6, strength=1,
                             keep_mask=half_mask("top")))
        requests.append(tiny_random_pipe.check_request([3], sampler="ddim", num_inference_steps=6))
        results = server.run(requests)
        for i in range(len(results)):
            for j in range(i):
                assert not np.array_equal(results[i], results[j]), (i, j)
    finally:
        server.close()
