"""The Lab tab through gradio_client: each experiment with its defaults or small settings, its numbers
checked against the engine, and bad input refused with a message naming the value."""
import re

import numpy as np
import pytest
from PIL import Image

from diffusion.recognisability import measure_recognisability
from ui import settings

LAB_ENDPOINTS = {"/recognisability", "/conditioning", "/why_gradual", "/difficulty"}


def read_image(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"))


def shrink(image: np.ndarray) -> np.ndarray:
    return image[::settings.LAB_IMAGE_SCALE, ::settings.LAB_IMAGE_SCALE]


def close_images(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to one grey level (float rounding differs between batch sizes)."""
    return a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_lab_endpoints_are_named_and_every_parameter_has_a_default(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert LAB_ENDPOINTS <= set(endpoints)
    for name in LAB_ENDPOINTS:
        assert all(p["parameter_has_default"] for p in endpoints[name]["parameters"]), name


def test_recognisability_table_matches_the_engine(client, classroom):
    figure, table, summary = client.predict(digit="3", seeds_per_digit=4, sampler="dpm++2m-sde", steps=12,
                                            api_name="/recognisability")
    assert figure is not None
    request = classroom.sampling_request("3", 4, 0.6, "dpm++2m-sde", 12, 0)
    steps = classroom.server.submit(request, stream=True, keep_history=False).steps()
    engine = measure_recognisability(steps, request.digits,
                                     classroom.noisy_probabilities, classroom.pipe.num_train_steps)
    [row] = engine.per_digit()
    [shown] = [dict(zip(table["headers"], r)) for r in table["data"]]
    assert shown["recognised"] == f"{row['recognised']} of 4"
    assert shown["median step"] == f"{row['median_step']:.0f} of 12"
    assert row["recognised"] >= 3  # the shipped model draws threes that become recognisable
    assert 0 < row["median_percent"] < 100  # neither at pure noise nor only at the very end
    assert f"{row['recognised']} of 4 runs" in summary


def test_recognisability_of_all_ten_digits(client):
    figure, table, summary = client.predict(seeds_per_digit=2, sampler="ddim", steps=10, api_name="/recognisability")
    assert [r[0] for r in table["data"]] == list(range(10))
    assert re.search(r"Earliest: the \d .* latest: the \d", summary)


@pytest.mark.parametrize("kwargs, message", [
    (dict(seeds_per_digit=21), "seeds per digit must be a whole number from 1 to 20"),
    (dict(seeds_per_digit=1, sampler="ddpm", steps=501), "steps for ddpm must be a whole number from 1 to 500"),
    (dict(seeds_per_digit=1, steps=10, sampler="ddim", guidance=-2.5), "guidance w must be a finite number from -2 to 8"),
    (dict(digit="twelve", seeds_per_digit=1), "digit"),
])
def test_recognisability_refuses_bad_input(client, kwargs, message):
    with pytest.raises(Exception, match=message):
        client.predict(api_name="/recognisability", **kwargs)


def test_conditioning_shows_the_same_seed_with_and_without_its_label(client, classroom):
    with_label, without_label, x_t, eps_c, eps_u, direction, caption = client.predict(api_name="/conditioning")
    labelled = classroom.sampling_request("3", 1, 2.0, "dpm++2m-sde", 12, 0)
    [expected_with] = classroom.server.run([labelled])
    [expected_without] = classroom.server.run([labelled.with_guidance(-1.0)])
    assert close_images(shrink(read_image(with_label)), expected_with[0])
    assert close_images(shrink(read_image(without_label)), expected_without[0])
    assert not close_images(expected_with[0], expected_without[0])  # the label changed the digit
    assert "At step 6 of 12" in caption and "p(3)" in caption
    for image in (eps_c, eps_u, direction):
        assert read_image(image).shape == (280, 280) and read_image(image).std() > 5  # a real picture of noise


def test_conditioning_at_negative_w_and_a_chosen_step(client):
    *_, caption = client.predict(digit=7, guidance=-2, shown_step=0, api_name="/conditioning")
    assert "With the label (w = -2)" in caption and "At step 0 of 12" in caption
    with pytest.raises(Exception, match="shown step must be a whole number from 0 to 11"):
        client.predict(shown_step=12, api_name="/conditioning")
    with pytest.raises(Exception, match="digit"):
        client.predict(digit="all", api_name="/conditioning")


def test_why_gradual_lists_every_step_count_with_a_verdict(client):
    figure, table = client.predict(digit=5, api_name="/why_gradual")
    rows = re.findall(r"^\| (\d+) \| (\d) \| ([\d.]+)% \|$", table, flags=re.M)
    assert [int(r[0]) for r in rows] == list(settings.WHY_GRADUAL_STEPS)
    assert rows[-1][1] == "5" and float(rows[-1][2]) > 50  # 500 ddpm steps: a clear five
    with pytest.raises(Exception, match="guidance w"):
        client.predict(guidance=9, api_name="/why_gradual")


def test_difficulty_judges_every_digit(client):
    figure, table, note = client.predict(samples_per_digit=3, api_name="/difficulty")
    assert [r[0] for r in table["data"]] == list(range(10))
    accuracies = [int(r[1].rstrip("%")) for r in table["data"]]
    assert sum(accuracies) / 10 >= 80  # the shipped model's digits are mostly right
    assert re.search(r"Hardest here: the \*\*\d\*\*", note) and "shipped evaluation" in note
    assert "CLIP" in note  # says why CLIP's verdicts are missing
    with pytest.raises(Exception, match="samples per digit must be a whole number from 1 to 20"):
        client.predict(samples_per_digit=0, api_name="/difficulty")


def test_limitations_state_measured_numbers(classroom):
    from ui.lab import LabTab

    text = LabTab(classroom).limitations_text()
    assert "784" in text and "60,000" in text
    top = re.search(r"mean top probability is ([01]\.\d\d).* gives ([01]\.\d\d)", text)
    assert float(top.group(1)) > float(top.group(2))  # the clean classifier is overconfident on noise


def test_lab_figures_are_legible_on_a_projector(classroom):
    """Every text in the Lab's figures is at least 12 pt (the bar for a projector)."""
    from matplotlib.text import Text

    from ui.lab import LabTab

    lab = LabTab(classroom)
    figures = [lab.why_gradual(digit=1)[0], lab.difficulty(samples_per_digit=1)[0],
               lab.recognisability(digit=2, seeds_per_digit=2, sampler="ddim", steps=8)[0]]
    for figure in figures:
        sizes = [t.get_fontsize() for t in figure.findobj(Text) if t.get_text().strip()]
        assert sizes and min(sizes) >= 12, sizes


def test_training_data_table_reads_the_measured_cas():
    import json

    from diffusion.checkpoints import CHECKPOINT_DIR
    from ui.lab import training_data_text

    cas = {r["data"]: r for r in json.loads((CHECKPOINT_DIR / "cas.json").read_text())["results"]}
    text = training_data_text()
    assert f"{cas['generated']['test_accuracy']:.2%}" in text and f"{cas['real']['test_accuracy']:.2%}" in text
