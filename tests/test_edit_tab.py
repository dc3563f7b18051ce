"""The Edit tab through gradio_client: /edit (SDEdit) and /inpaint with their defaults and with uploads,
results checked against the engine, and bad input refused with a clear message."""
import re

import numpy as np
import pytest
from gradio_client import handle_file
from PIL import Image

from ui import settings
from ui.edit import mask_from_painting, preset_mask


def read_image(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"))


def shrink(image: np.ndarray, scale: int = settings.LAB_IMAGE_SCALE) -> np.ndarray:
    return image[::scale, ::scale]


def test_edit_endpoints_are_named_and_every_parameter_has_a_default(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    for name in ("/edit", "/inpaint"):
        assert all(p["parameter_has_default"] for p in endpoints[name]["parameters"]), name


def test_edit_defaults_re_imagine_a_real_three_as_an_eight(client, classroom):
    source, result, strip, verdict = client.predict(api_name="/edit")
    three = classroom.shipped_images[settings.DEFAULT_EDIT_SOURCE]
    np.testing.assert_array_equal(shrink(read_image(source)), three)
    expected = classroom.pipe.edit([8], three, strength=0.6, guidance=4.0, seed=0, classifier_scale=15.0)
    assert np.abs(shrink(read_image(result)).astype(int) - expected[0].astype(int)).max() <= 1
    assert "s = 0.6" in verdict and "t = 300 of 500" in verdict and strip is not None


def test_edit_of_an_upload_frames_it_as_mnist(client, tmp_path):
    drawing = np.zeros((300, 300), np.uint8)
    drawing[20:280, 130:170] = 255  # a "1" filling the canvas
    Image.fromarray(255 - drawing).save(tmp_path / "one.png")  # dark ink on white: inverted by the app
    source, result, strip, verdict = client.predict(image=handle_file(str(tmp_path / "one.png")), digit=1,
                                                    strength=0.2, api_name="/edit")
    framed = shrink(read_image(source))
    rows = np.nonzero(framed.max(1) > 32)[0]
    assert rows.max() - rows.min() + 1 == 20  # a 20-pixel box, as MNIST's
    assert "sees a **1**" in verdict


@pytest.mark.parametrize("kwargs, message", [
    (dict(strength=1.5), "strength s must be a finite number from 0 to 1"),
    (dict(strength=-0.2), "strength s must be a finite number from 0 to 1"),
    (dict(digit=12), "digit"),
    (dict(image=99), "shipped digit index must be a whole number from 0 to 29"),
    (dict(image={"path": "/etc/passwd"}), "only files uploaded to this app can be read"),
])
def test_edit_refuses_bad_input(client, kwargs, message):
    with pytest.raises(Exception, match=message):
        client.predict(api_name="/edit", **kwargs)


def test_a_blank_upload_is_refused(client, tmp_path):
    Image.fromarray(np.full((50, 50), 255, np.uint8)).save(tmp_path / "blank.png")
    with pytest.raises(Exception, match="blank"):
        client.predict(image=handle_file(str(tmp_path / "blank.png")), api_name="/edit")


def test_inpaint_defaults_regenerate_the_bottom_of_a_real_seven(client, classroom):
    masked, results, note = client.predict(api_name="/inpaint")
    seven = classroom.shipped_images[settings.DEFAULT_INPAINT_SOURCE]
    grid = shrink(read_image(results))  # 4 samples in a row, 1-pixel gaps
    samples = [grid[1:29, 1 + 29 * i: 29 + 29 * i] for i in range(4)]
    keep = preset_mask("bottom")
    for sample in samples:
        assert np.abs(sample[keep == 1].astype(int) - seven[keep == 1].astype(int)).max() <= 1
    assert re.search(r"(\d) of 4 results are seen as a 7", note) and "at most 0/255" in note
    assert "46 network evaluations" in note  # 16 ddpm steps, all but the last taken 3 times
    assert int(re.search(r"(\d) of 4", note).group(1)) >= 3


@pytest.mark.parametrize("kwargs, message", [
    (dict(mask="middle"), "mask must be one of top, bottom, left, right"),
    (dict(samples=9), "samples must be a whole number from 1 to 8"),
    (dict(digit="all"), "digit"),
])
def test_inpaint_refuses_bad_input(client, kwargs, message):
    with pytest.raises(Exception, match=message):
        client.predict(api_name="/inpaint", **kwargs)


def test_an_uploaded_mask_that_marks_nothing_is_refused(client, tmp_path):
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "nothing.png")
    with pytest.raises(Exception, match="blank|the mask is empty"):
        client.predict(mask=handle_file(str(tmp_path / "nothing.png")), api_name="/inpaint")


def test_a_painted_layer_becomes_a_mask_of_whole_cells():
    layer = np.zeros((280, 280, 4), np.uint8)
    layer[150:170, 30:60, 3] = 255  # painted in rows 15-16, columns 3-5 of the 28×28 grid
    keep = mask_from_painting(layer)
    assert keep.shape == (28, 28) and (keep == 0).sum() == 2 * 3
    assert keep[15, 3] == 0 and keep[14, 3] == 1


def test_a_fresh_page_can_sample_at_once(url, classroom):
    """Opening the page draws the Training and Architecture views by itself; those must not use up the
    session's sampling slots, or a student's first click is refused ("you already have 2 … running")."""
    from gradio_client import Client

    client = Client(url, verbose=False)
    views = [client.submit(api_name="/training_snapshots"), client.submit(api_name="/compare_architectures")]
    source, result, strip, verdict = client.predict(api_name="/edit")  # while both views are being drawn
    assert "s = 0.6" in verdict
    for job in views:
        job.result()


@pytest.mark.parametrize("strength, said", [(0.6, "noised to t = 300 of 500"), (0.0005, "noised to t = 1 of 500"),
                                            (1.0, "started from pure noise")])
def test_the_verdict_names_the_step_the_edit_really_starts_from(client, strength, said):
    """The engine's start step (requests.edit_start_t: at least 1, none at s = 1), not a second computation."""
    *_, verdict = client.predict(strength=strength, api_name="/edit")
    assert said in verdict
