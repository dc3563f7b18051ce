"""The Training tab through gradio_client against the launched app: /training_snapshots and /noise_prediction
with their defaults and with values, checked against the engine; bad input refused with a clear message."""
import numpy as np
import pytest
from gradio_client import Client
from PIL import Image

import ui.training
from diffusion.data import grid_image, to_model_range
from diffusion.training_history import (list_snapshots, load_snapshot, noise_prediction, noise_to_uint8,
                                        read_evaluation)
from ui import settings
from ui.training import TrainingTab


def read_image(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"))


def rows(plot: dict) -> list[dict]:
    return [dict(zip(plot["columns"], row)) for row in plot["data"]]


def test_both_endpoints_are_named_and_every_parameter_has_a_default(client: Client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    defaults = {name: {p["parameter_name"]: p["parameter_default"] for p in endpoints[name]["parameters"]}
                for name in ("/training_snapshots", "/noise_prediction")}
    assert defaults == {"/training_snapshots": {"snapshot": 0, "seed": 0},
                        "/noise_prediction": {"digit_index": 0, "t": settings.DEFAULT_NOISE_T, "seed": 0,
                                              "snapshot": "final"}}


def test_training_snapshots_defaults_show_the_first_snapshots_digits(client):
    grid, caption = client.predict(api_name="/training_snapshots")
    s = settings.SNAPSHOT_GRID_SCALE
    assert read_image(grid).shape == (62 * s, 152 * s)  # 2 rows of 5 digits, ≥ 240 px high
    assert "Snapshot 0: step 25, epoch 0.05" in caption


def test_training_snapshots_show_the_snapshots_own_samples_and_scores(client):
    snapshot = list_snapshots()[6]
    grid, caption = client.predict(snapshot=6, seed=5, api_name="/training_snapshots")
    expected = grid_image(load_snapshot(snapshot).generate(list(range(10)), seed=5), nrow=5)
    got = read_image(grid)[::settings.SNAPSHOT_GRID_SCALE, ::settings.SNAPSHOT_GRID_SCALE]
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
    assert f"step {snapshot.step}, epoch 5.00" in caption and f"{snapshot.heldout_loss:.4f}" in caption
    scores = read_evaluation().get("snapshots", {}).get(snapshot.step)
    if scores:
        assert f"**{scores['accuracy']:.1%}**" in caption and f"**{scores['fd']:.2f}**" in caption
    else:
        assert "not evaluated" in caption
    # 6.0 (a slider's number) is snapshot 6 too; the first snapshot draws other pictures from the same seed
    assert np.array_equal(read_image(client.predict(snapshot=6.0, seed=5, api_name="/training_snapshots")[0]),
                          read_image(grid))
    early = read_image(client.predict(snapshot=0, seed=5, api_name="/training_snapshots")[0])
    assert np.abs(early.astype(int) - read_image(grid).astype(int)).mean() > 10


def test_without_evaluation_json_the_tab_says_not_evaluated(classroom, monkeypatch, tmp_path):
    monkeypatch.setattr(ui.training, "read_evaluation", lambda: read_evaluation(tmp_path / "missing.json"))
    tab = TrainingTab(classroom)
    _, caption = tab.training_snapshots(snapshot=2, seed=0)
    assert "step 235" in caption and "not evaluated" in caption
    assert tab.evaluation_table().count("not evaluated") == 2 * len(tab.snapshots)


def test_noise_prediction_defaults_use_the_apps_network(client, classroom):
    x0, x_t, eps, eps_hat, error, text, plot = client.predict(api_name="/noise_prediction")
    pipe, s = classroom.pipe, settings.NOISE_IMAGE_SCALE
    r = noise_prediction(pipe.model, pipe.schedule, to_model_range(classroom.shipped_images[0]),
                         int(classroom.shipped_labels[0]), settings.DEFAULT_NOISE_T, seed=0)
    assert read_image(x0).shape == (28 * s, 28 * s)
    assert np.array_equal(read_image(x0)[::s, ::s], classroom.shipped_images[0])
    assert np.array_equal(read_image(eps)[::s, ::s], noise_to_uint8(r.eps))
    assert np.abs(read_image(eps_hat)[::s, ::s].astype(int) - noise_to_uint8(r.eps_hat)).max() <= 1
    assert f"**{r.mse:.4f}**" in text and "the app's network" in text
    assert {row["curve"] for row in rows(plot)} == {ui.training.CHOSEN, ui.training.CHOSEN_T}
    assert "━━ the app's network</b> · " in text and f"━━ your t = {settings.DEFAULT_NOISE_T}</b>" in text
    losses = [row["loss"] for row in rows(plot) if row["curve"] == ui.training.CHOSEN]
    assert len(losses) == settings.LOSS_BY_T_POINTS and all(0 < v < 1 for v in losses)
    assert losses[0] == max(losses)  # t = 1 is the hardest noise level


def test_noise_prediction_with_a_snapshot_shows_a_higher_loss(client, classroom):
    final = client.predict(digit_index=12, t=300, seed=4, api_name="/noise_prediction")
    early = client.predict(digit_index="12", t=300, seed=4, snapshot="1", api_name="/noise_prediction")
    assert np.array_equal(read_image(final[0]), read_image(early[0]))   # the same digit, t and noise …
    assert np.array_equal(read_image(final[2]), read_image(early[2]))
    snapshot = list_snapshots()[1]
    pipe = load_snapshot(snapshot)
    r = noise_prediction(pipe.model, pipe.schedule, to_model_range(classroom.shipped_images[12]),
                         int(classroom.shipped_labels[12]), 300, seed=4)
    assert f"**{r.mse:.4f}**" in early[5] and "snapshot 1 (step 100)" in early[5]
    curves = {}
    for row in rows(early[6]):
        curves.setdefault(row["curve"], []).append(row["loss"])
    assert set(curves) == {ui.training.CHOSEN, ui.training.APP, ui.training.CHOSEN_T}
    assert np.mean(curves[ui.training.CHOSEN]) > 3 * np.mean(curves[ui.training.APP])  # … a worse guess at every t
    assert curves[ui.training.CHOSEN_T] == [0, pytest.approx(1.05 * max(curves[ui.training.CHOSEN]))]


@pytest.mark.parametrize("api_name,changes,expected", [
    ("/noise_prediction", {"t": 0}, "t (1 to T = 500) must be a whole number from 1 to 500, got 0"),
    ("/noise_prediction", {"t": 501}, "from 1 to 500, got 501"),
    ("/noise_prediction", {"t": "ten"}, "got 'ten'"),
    ("/noise_prediction", {"t": 2.5}, "got 2.5"),
    ("/noise_prediction", {"digit_index": 30}, "digit index must be a whole number from 0 to 29"),
    ("/noise_prediction", {"seed": -1}, "seed must be a whole number"),
    ("/noise_prediction", {"snapshot": "step 9999"}, "snapshot ('final' or a snapshot number) must be"),
    ("/noise_prediction", {"snapshot": 7}, "from 0 to 6, got 7"),
    ("/training_snapshots", {"snapshot": 7}, "snapshot must be a whole number from 0 to 6, got 7"),
    ("/training_snapshots", {"snapshot": "late"}, "got 'late'"),
    ("/training_snapshots", {"seed": None}, "seed must be a whole number"),
])
def test_bad_input_gets_a_clear_error(client, api_name, changes, expected):
    with pytest.raises(Exception) as error:
        client.predict(api_name=api_name, **changes)
    assert expected in str(error.value)
