"""The Reverse-process tab's playback, all-ten filmstrip and recognisability readout, through gradio_client
against the launched app: the player carries every frame (checked against the engine), the filmstrip has
the size and the images the engine gives, and the noise-aware classifier says "can't tell" on pure noise."""
import re

import numpy as np
import pytest
import torch
from PIL import Image

from diffusion.data import to_uint8
from diffusion.pipeline import DEFAULT_GUIDANCE, DEFAULT_SAMPLER, DEFAULT_STEPS
from diffusion.recognisability import RECOGNISABLE_PROBABILITY
from diffusion.sampling import initial_noise
from diffusion.scoring import classifier_scores, noisy_image_scores
from ui import settings
from ui.rendering import FILMSTRIP_TILE, filmstrip_cell


# --- helpers -------------------------------------------------------------------------------------------

def player_frames(player: str) -> list[dict]:
    """The player's frames, in order: {"step", "x_t", "x0" (uint8 [28,28]), "caption"}: each tile's cell, cut
    out of its sheet (a PNG file the app serves) where the tile's background-position points."""
    columns, rows = (int(re.search(rf'data-{name}="(\d+)"', player).group(1)) for name in ("columns", "rows"))
    sheets = {name: np.asarray(Image.open(path).convert("L"))  # files the app serves (this machine's disk)
              for name, path in re.findall(r'--(x-t|x0)-sheet: url\(&quot;gradio_api/file=([^&]+)&quot;\)', player)}
    assert set(sheets) == {"x-t", "x0"} and all(s.shape == (rows * 28, columns * 28) for s in sheets.values())
    tile = r'<i class="tile"[^>]*background-image: var\(--(x-t|x0)-sheet\); background-position: ([\d.]+)% ([\d.]+)%"></i>'
    figures = re.findall(rf'<figure class="frame" data-step="(\d+)"[^>]*>{tile}{tile}<figcaption>(.*?)</figcaption>',
                         player)

    def cell(sheet: str, x: str, y: str) -> np.ndarray:
        column, row = round(float(x) / 100 * max(1, columns - 1)), round(float(y) / 100 * max(1, rows - 1))
        return sheets[sheet][row * 28:(row + 1) * 28, column * 28:(column + 1) * 28]

    return [{"step": int(step), "x_t": cell(a, ax, ay), "x0": cell(b, bx, by), "caption": caption, "sheets": (a, b)}
            for step, a, ax, ay, b, bx, by, caption in figures]


def percent_in(caption: str, name: str) -> float:
    """p(… | x_t) = 12% -> 0.12."""
    return int(re.search(rf"p\(\d \| {name}\) = (\d+)%", caption).group(1)) / 100


def read_image(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"))


def assert_same_images(a: np.ndarray, b: np.ndarray) -> None:
    """Equal up to one grey level (float rounding differs between batch sizes)."""
    assert a.shape == b.shape
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def reverse_process(client, **kwargs) -> tuple:
    """The final message of /reverse_process: (x_t, x0, counter, plot, gif, slider, player)."""
    return client.submit(api_name="/reverse_process", **kwargs).result()


# --- the player ----------------------------------------------------------------------------------------

def test_the_last_message_carries_the_player_with_every_frame(client, classroom):
    steps, T = 6, classroom.pipe.num_train_steps
    *_, counter, plot, gif, slider, player = reverse_process(client, digit="5", steps=steps, seed=3)
    frames = player_frames(player)
    assert [f["step"] for f in frames] == list(range(steps + 1)) == list(range(slider["maximum"] + 1))
    assert player.count('class="tile"') == 2 * (steps + 1) and all(f["sheets"] == ("x-t", "x0") for f in frames)
    # the frames are the engine's: x_T from the seed, then each step's x_t (x̂₀ of x_T: black, no guess yet)
    x_T = initial_noise(1, torch.Generator().manual_seed(3))
    engine = list(classroom.pipe.denoising_steps([5], guidance=DEFAULT_GUIDANCE, sampler=DEFAULT_SAMPLER,
                                                 num_inference_steps=steps, seed=3))
    assert_same_images(frames[0]["x_t"], to_uint8(x_T)[0])
    assert not frames[0]["x0"].any()
    for frame, step in zip(frames[1:], engine):
        assert_same_images(frame["x_t"], to_uint8(step.x)[0])
        assert_same_images(frame["x0"], to_uint8(step.x0)[0])
    # each caption: "step s of S (…%) · t = … of T · p(5 | x_t) = …% · p(5 | x̂₀) = …%", t counting down to 0
    ts = [int(re.search(rf"t = (\d+) of {T}", f["caption"]).group(1)) for f in frames]
    assert ts[0] == T and ts[-1] == 0 and ts == sorted(ts, reverse=True)
    assert frames[0]["caption"].startswith(f"step 0 of {steps} (0%) · t = {T} of {T} (x_T, pure noise) · p(5 | x_t) = ")
    assert frames[-1]["caption"].startswith(f"step {steps} of {steps} (100%) · t = 0 of {T} · p(5 | x_t) = ")
    # … whose probabilities are the noise-aware classifier's (x_t at its t) and the clean classifier's (x̂₀)
    for i in (0, steps // 2, steps):
        x_t = noisy_image_scores(classroom.noise_classifier, frames[i]["x_t"][None], [ts[i]], [5])
        assert percent_in(frames[i]["caption"], "x_t") == pytest.approx(x_t.confidence_requested[0], abs=0.006)
    x0 = classifier_scores(classroom.classifier, frames[-1]["x0"][None], [5]).confidence_requested[0]
    assert percent_in(frames[-1]["caption"], "x̂₀") == pytest.approx(x0, abs=0.006)
    # the controls the browser plays it with (ui/player.js)
    for control in ('data-action="play"', 'data-action="back"', 'data-action="forward"', 'type="checkbox" name="loop"',
                    f'name="fps" min="{settings.PLAYER_MIN_FPS}" max="{settings.PLAYER_MAX_FPS}"'):
        assert control in player


def test_a_500_step_ddpm_run_fits_in_one_bounded_player(client, classroom):
    steps = classroom.pipe.num_train_steps  # the course's ddpm: every one of T steps
    *_, counter, plot, gif, slider, player = reverse_process(client, digit="2", sampler="ddpm", steps=steps, seed=1)
    frames = player_frames(player)
    assert len(frames) == steps + 1
    size = len(player.encode())
    print(f"player of a {steps}-step run: {len(frames)} frames, {size / 2**20:.2f} MB")
    assert size < 1.5 * 2**20
    # long runs are scored at about PLOT_POINTS frames; a frame in between shows the last scored p and its step
    unscored = [f["caption"] for f in frames if "(at step" in f["caption"]]
    assert unscored and all(re.search(r"p\(2 \| x_t\) = \d+% \(at step \d+\)", c) for c in unscored)


# --- recognisability -------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(4))
def test_pure_noise_is_not_recognisable_as_an_eight(client, classroom, seed):
    """The clean-image classifier called x_T an 8 with p ≈ 1 for these seeds; the noise-aware one can't tell."""
    x_t, x0, counter, plot, gif, slider, player = reverse_process(client, digit="8", seed=seed)
    frames = player_frames(player)
    x_T = frames[0]["x_t"]
    T = classroom.pipe.num_train_steps
    assert classifier_scores(classroom.classifier, x_T[None], [8]).confidence_requested[0] > 0.99  # fooled
    p = noisy_image_scores(classroom.noise_classifier, x_T[None], [T], [8]).confidence_requested[0]
    assert p < 0.5
    assert percent_in(frames[0]["caption"], "x_t") == pytest.approx(p, abs=0.006)
    rows = [dict(zip(plot["columns"], row)) for row in plot["data"]]
    x_t_curve = {r["step"]: r["p"] for r in rows if r["curve"].startswith("x_t")}
    assert x_t_curve[0] == pytest.approx(p, abs=1e-3)
    # the summary states where it became recognisable, and it is not pure noise
    found = re.search(r"recognisable at (\d+)% of the process \(step (\d+) of (\d+), t = (\d+) of (\d+)\)", counter)
    assert found, counter
    step = int(found.group(2))
    assert step > 0 and int(found.group(3)) == DEFAULT_STEPS and int(found.group(5)) == T
    first = next(i for i in sorted(x_t_curve) if x_t_curve[i] >= RECOGNISABLE_PROBABILITY)
    assert step == first
    assert int(found.group(1)) == round(100 * step / DEFAULT_STEPS)


# --- all ten digits ----------------------------------------------------------------------------------------

def test_all_ten_is_a_named_endpoint_with_defaults(client):
    endpoint = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/all_ten"]
    assert [p["parameter_name"] for p in endpoint["parameters"]] == ["guidance", "sampler", "steps", "seed"]
    assert all(p["parameter_has_default"] for p in endpoint["parameters"])


def test_all_ten_shows_every_digit_along_the_process_in_one_filmstrip(client, classroom):
    strip, table = client.predict(seed=4, api_name="/all_ten")
    picture = read_image(strip)
    columns = len(settings.FILMSTRIP_PERCENTS)
    bottom, right = filmstrip_cell(9, columns - 1, True)
    assert picture.shape == (bottom + FILMSTRIP_TILE, right + FILMSTRIP_TILE)
    assert min(picture.shape) >= 240

    def tile(row, column, guess):
        top, left = filmstrip_cell(row, column, guess)
        return picture[top:top + FILMSTRIP_TILE:settings.FILMSTRIP_SCALE, left:left + FILMSTRIP_TILE:settings.FILMSTRIP_SCALE]

    # the last column is the finished samples (the engine's, for all ten digits in one batch) …
    final = classroom.pipe.generate(list(range(10)), guidance=DEFAULT_GUIDANCE, sampler=DEFAULT_SAMPLER,
                                    num_inference_steps=DEFAULT_STEPS, seed=4)
    for d in range(10):
        assert_same_images(tile(d, columns - 1, False), final[d])
        assert not tile(d, 0, True).any()  # x_T has no guess x̂₀ yet
    # … the first is x_T, drawn from the seed
    x_T = to_uint8(initial_noise(10, torch.Generator().manual_seed(4)))
    assert_same_images(np.stack([tile(d, 0, False) for d in range(10)]), x_T)
    # the table says where each digit became recognisable, for all ten
    assert "| digit | 0 | 1 | 2 | 3 | 4 | 5 | 6 | 7 | 8 | 9 |" in table
    assert "recognisable at" in table


@pytest.mark.parametrize("kwargs,message", [
    ({"steps": 0}, f"steps for {DEFAULT_SAMPLER} must be a whole number from 1 to 100"),
    ({"guidance": "strong"}, "guidance w must be a finite number"),
    ({"sampler": "euler"}, "sampler must be one of ddpm, ddim, dpm++2m, dpm++2m-sde"),
    ({"seed": -1}, "seed must be a whole number"),
    ({"sampler": "ddpm", "steps": 10**4}, "steps for ddpm must be a whole number from 1 to"),
])
def test_bad_input_to_all_ten_gets_a_clear_error(client, kwargs, message):
    with pytest.raises(Exception) as error:
        client.predict(api_name="/all_ten", **kwargs)
    assert message in str(error.value)
