"""The Gradio app, through gradio_client against the launched server: every endpoint with its
defaults, results checked against the engine, bad input on every endpoint, and CLIP both
unavailable (the usual case offline) and available (a tiny random open_clip model from a file)."""
import base64
import inspect
import io
import re
import threading
import time

import httpx
import numpy as np
import pytest
import torch
from gradio_client import Client, handle_file
from PIL import Image

import ui
from diffusion.data import to_model_range, to_uint8
from diffusion.digit_images import pixel_diversity
from diffusion.model import count_parameters
from ui import settings
from ui.how_it_works import how_it_works_markdown
from ui.rendering import PLOT_DPI, SCHEDULE_FIGURE_INCHES, enlarge, gif_frame
from conftest import MISSING_CLIP, launch_classroom
from diffusion.classifier import DEFAULT_CLASSIFIER
from diffusion.pipeline import DEFAULT_GUIDANCE, DEFAULT_SAMPLER, DEFAULT_STEPS, DEFAULT_UNET
from diffusion.scoring import classifier_scores, noisy_image_scores
from tiny_clip import TINY_CLIP

@pytest.fixture(scope="module")
def clip_classroom(classroom, tiny_clip_weights) -> ui.Classroom:
    """The same models, with CLIP = the tiny model from its weights file."""
    return ui.load_classroom(str(DEFAULT_UNET), str(DEFAULT_CLASSIFIER), TINY_CLIP, tiny_clip_weights)


@pytest.fixture(scope="module")
def clip_client(clip_classroom) -> Client:
    demo, url = launch_classroom(clip_classroom)
    yield Client(url, verbose=False)
    demo.close()
    clip_classroom.close()


# --- helpers -------------------------------------------------------------------------------------------

def read_image(path) -> np.ndarray:
    """An image from the app as uint8 [H,W] (grey): a file, or a streamed frame sent inline ({"url": "data:…"})."""
    if isinstance(path, dict):
        assert path["path"] is None and path["url"].startswith("data:image/png;base64,")
        path = io.BytesIO(base64.b64decode(path["url"].split(",", 1)[1]))
    return np.asarray(Image.open(path).convert("L"))


def shrink(image: np.ndarray, scale: int) -> np.ndarray:
    """Undo the app's enlargement: every pixel is a scale×scale block."""
    return image[::scale, ::scale]


def grid_samples(path, count: int) -> np.ndarray:
    """Cut the /generate grid image into its samples: uint8 [count,28,28] (10 per row, 2-pixel gaps)."""
    grid = shrink(read_image(path), settings.GRID_SCALE)
    cells = [divmod(i, 10) for i in range(count)]
    return np.stack([grid[2 + 30 * r: 30 + 30 * r, 2 + 30 * c: 30 + 30 * c] for r, c in cells])


def table_column(table: dict, header: str) -> list:
    return [row[table["headers"].index(header)] for row in table["data"]]


def assert_same_images(a: np.ndarray, b: np.ndarray) -> None:
    """Equal up to one grey level (float rounding differs between batch sizes)."""
    assert a.shape == b.shape
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def generate(client: Client, **kwargs):
    """(images uint8 [N,28,28], cards html, table, agreement text, disagreement html)."""
    cards, grid, table, agreement, disagreements = client.predict(api_name="/generate", **kwargs)
    return grid_samples(grid, len(table["data"])), cards, table, agreement, disagreements


def wait_for_clip(client: Client, timeout_s: float = 120) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        status = client.predict(api_name="/clip_status")
        if "loading" not in status and "not loaded" not in status:
            return status
        assert time.monotonic() < deadline, f"CLIP still not loaded: {status}"
        time.sleep(0.5)



# --- Generate --------------------------------------------------------------------------------------------

def test_every_endpoint_is_named_and_every_parameter_has_a_default(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    expected = {"/generate", "/guidance_sweep", "/clip_status", "/reverse_process", "/show_frame",
                "/shipped_digit", "/load_image", "/load_drawing", "/forward_noising", "/noise_at_t"}
    assert expected <= set(endpoints)
    without_default = {name: [p["parameter_name"] for p in info["parameters"] if not p["parameter_has_default"]]
                       for name, info in endpoints.items()}
    assert {name: missing for name, missing in without_default.items() if missing} == {}


def test_generate_defaults_give_ten_digits_scored_by_the_classifier(client, classroom):
    assert "CLIP unavailable" in wait_for_clip(client)  # it fails at once (missing file), but in the background
    images, cards, table, agreement, disagreements = generate(client)
    digits = list(range(10))
    assert images.shape == (10, 28, 28)
    assert table_column(table, "asked") == digits
    # The engine's own call with the engine's defaults gives the same images …
    expected = classroom.pipe.generate(digits, guidance=DEFAULT_GUIDANCE, sampler=DEFAULT_SAMPLER,
                                       num_inference_steps=DEFAULT_STEPS, seed=0)
    assert_same_images(images, expected)
    # … and the table and captions carry the classifier's scores of exactly these images.
    scores = classifier_scores(classroom.classifier, images, digits)
    np.testing.assert_allclose(table_column(table, "classifier p(asked)"), scores.confidence_requested, atol=2e-3)
    assert table_column(table, "classifier digit") == scores.predicted_digit.tolist()
    assert cards.count("<img") == 10 and cards.count('class="sample-card"') == 10
    for i in range(10):  # each card shows its sample's classifier verdict beside the image
        assert f"<b>#{i + 1}</b> · asked <b>{i}</b><br>classifier: " in cards
    assert cards.count("classifier: ") == 10 and "CLIP" not in cards
    # CLIP is unavailable here: said clearly, no CLIP columns, no disagreement cards.
    assert "No CLIP scores" in agreement and "CLIP is unavailable" in agreement
    assert MISSING_CLIP not in agreement  # why (the missing file) is said once, in the CLIP status line
    assert not any(h.startswith("CLIP") for h in table["headers"])
    assert disagreements == ""


def test_generate_is_reproducible_and_the_seed_matters(client):
    first = generate(client, digit="7", samples_per_digit=3, seed=123)[0]
    again = generate(client, digit="7", samples_per_digit=3, seed=123)[0]
    other = generate(client, digit="7", samples_per_digit=3, seed=124)[0]
    assert first.shape == (3, 28, 28)
    np.testing.assert_array_equal(first, again)
    assert np.abs(first.astype(int) - other.astype(int)).mean() > 1


def test_generate_follows_every_sampler_and_setting(client, classroom):
    for sampler, steps, guidance in (("ddim", 8, 0.0), ("ddpm", 20, 2.5), ("dpm++2m", 5, 8.0)):
        images = generate(client, digit=4, samples_per_digit=2, guidance=guidance, sampler=sampler,
                          steps=steps, seed=5)[0]
        expected = classroom.pipe.generate([4, 4], guidance=guidance, sampler=sampler, num_inference_steps=steps, seed=5)
        assert_same_images(images, expected)


def test_concurrent_generate_requests_all_succeed_with_their_own_results(url, classroom):
    results, errors = {}, []

    def ask(seed):
        try:
            results[seed] = generate(Client(url, verbose=False), digit="all", seed=seed)[0]
        except Exception as e:  # collected and reported below
            errors.append(e)

    threads = [threading.Thread(target=ask, args=(seed,)) for seed in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert errors == [] and sorted(results) == list(range(6))
    for seed, images in results.items():
        expected = classroom.pipe.generate(list(range(10)), guidance=DEFAULT_GUIDANCE, sampler=DEFAULT_SAMPLER,
                                           num_inference_steps=DEFAULT_STEPS, seed=seed)
        assert_same_images(images, expected)


def test_guidance_sweep_runs_each_w_with_the_same_seed_in_one_shared_batch(client, classroom):
    before = len(classroom.server.tick_sizes)
    plot, table = client.predict(digit="2", samples_per_digit=3, guidance_values_text="0, 1, 4",
                                 steps=6, seed=9, api_name="/guidance_sweep")
    assert list(classroom.server.tick_sizes)[before:] == [9] * 6  # three w values, 3 samples each: 6 shared ticks
    assert plot["type"] == "matplotlib" and plot["plot"].startswith("data:image/png;base64,")
    rows = re.findall(r"^\| ([\d.]+) \| ([\d.]+)% \| (\d+)% \| ([\d.]+) \|$", table, flags=re.M)
    assert [float(w) for w, *_ in rows] == [0.0, 1.0, 4.0]
    for w, mean_confidence, _, diversity in rows:  # each row agrees with /generate at that w
        images, _, gen_table, _, _ = generate(client, digit="2", samples_per_digit=3, guidance=float(w),
                                               steps=6, seed=9)
        expected = np.mean(table_column(gen_table, "classifier p(asked)"))
        assert float(mean_confidence) == pytest.approx(100 * expected, abs=0.2)
        assert float(diversity) == pytest.approx(pixel_diversity(images, 3), abs=1e-3)


def test_clip_status_says_why_clip_is_unavailable(client):
    assert "CLIP unavailable" in client.predict(api_name="/clip_status")
    assert MISSING_CLIP in client.predict(api_name="/clip_status")


# --- Reverse process -------------------------------------------------------------------------------------

def test_reverse_process_streams_frames_then_plot_gif_and_slider(client, classroom):
    steps = 6
    job = client.submit(digit="5", steps=steps, seed=3, api_name="/reverse_process")
    final = job.result()
    outputs = job.outputs()
    # x_T first, then the newest step at most every FRAME_INTERVAL_S (the last one with the plot and the GIF);
    # every frame is in the GIF and behind the slider
    assert 2 <= len(outputs) <= steps + 1
    assert outputs[0][2].startswith(f"### x_T, pure noise · step 0 of {steps}")
    counters = [re.search(r"t = (\d+) / (\d+) · step (\d+) of (\d+)", out[2]).groups() for out in outputs[1:]]
    T = str(classroom.pipe.num_train_steps)
    sent = [int(c[2]) for c in counters]
    assert sent == sorted(set(sent)) and sent[-1] == steps
    assert all(c[1] == T and c[3] == str(steps) for c in counters) and counters[-1][0] == "0"
    assert [int(c[0]) for c in counters] == sorted((int(c[0]) for c in counters), reverse=True)  # t counts down
    assert all(out[3] is None or "update" in str(out[3]) for out in outputs[:-1])  # no plot re-sent per frame
    assert all(out[6] is None or "update" in str(out[6]) for out in outputs[:-1])  # nor the player
    x_t, x0, counter, plot, gif, slider, player = final  # (the session state is not part of the API)
    last = shrink(read_image(x_t), settings.FRAME_SCALE)
    expected = classroom.pipe.generate([5], guidance=DEFAULT_GUIDANCE, sampler=DEFAULT_SAMPLER, num_inference_steps=steps, seed=3)
    assert_same_images(last[None], expected)
    assert "first recognises the 5" in counter
    # the confidence plot's data: x_t at every frame, x̂₀ from step 1, the 50% line; the last x_t point is
    # the noise-aware classifier's confidence in the final image (at t = 0)
    rows = [dict(zip(plot["columns"], row)) for row in plot["data"]]
    curves = {r["curve"] for r in rows}
    assert len(curves) == 3 and any("recognisable" in c for c in curves)
    x_t_curve = [r for r in rows if r["curve"].startswith("x_t")]
    assert [r["step"] for r in x_t_curve] == list(range(steps + 1))
    final = noisy_image_scores(classroom.noise_classifier, last[None], [0], [5]).confidence_requested[0]
    assert x_t_curve[-1]["p"] == pytest.approx(final, abs=1e-3)
    with Image.open(gif) as animation:
        assert animation.n_frames == steps + 1
        frame = gif_frame(last, last)
        assert animation.size == (frame.shape[1], frame.shape[0])
        animation.seek(animation.n_frames - 1)
        np.testing.assert_array_equal(np.asarray(animation.convert("L")), gif_frame(last, shrink(read_image(x0), settings.FRAME_SCALE)))
    assert (slider["maximum"], slider["value"], slider["interactive"]) == (steps, steps, True)


def test_long_runs_stream_at_most_a_hundred_frames_and_keep_them_all(client):
    steps = 101  # just over MAX_STREAMED_FRAMES: every 2nd frame is sent
    job = client.submit(digit=0, sampler="ddpm", steps=steps, seed=0, api_name="/reverse_process")
    *_, slider, player = job.result()
    sent = [int(re.search(rf"step (\d+) of {steps}", out[2]).group(1)) for out in job.outputs()]
    stride = -(-steps // settings.MAX_STREAMED_FRAMES)
    assert stride > 1 and len(sent) <= settings.MAX_STREAMED_FRAMES + 1
    # x_T first, then only stride-th steps (the newest of those that arrived together), in order; the last at the end
    assert sent[0] == 0 and sent[-1] == steps and sent == sorted(set(sent))
    assert all(i % stride == 0 for i in sent[:-1])
    assert slider["maximum"] == steps  # every frame can be scrubbed to …
    assert player.count('<figure class="frame"') == steps + 1  # … and played back in the browser
    x_t, x0, counter = client.predict(frame=77, api_name="/show_frame")  # a frame that was not sent
    assert f"step 77 of {steps}" in counter


def test_a_finished_run_keeps_its_frames_packed_in_two_arrays(classroom):
    """The run store keeps each run's frames as two uint8 [frames,28,28] arrays of their own (not views into
    the step batches they came in), with the same images."""
    from ui.reverse import ReverseRun

    run = ReverseRun(3, classroom.pipe.num_train_steps, 4)
    steps = list(classroom.pipe.denoising_steps([3], guidance=0.0, num_inference_steps=4, seed=0))
    run.add(steps[:2])
    run.add(steps[2:])
    before_x_t, before_x0 = [image.copy() for image in run.x_t], [image.copy() for image in run.x0]
    run.pack()
    for packed, before in ((run.x_t, before_x_t), (run.x0, before_x0)):
        assert isinstance(packed, np.ndarray) and packed.dtype == np.uint8 and packed.shape == (len(run), 28, 28)
        assert packed.flags.owndata and packed.flags.c_contiguous
        np.testing.assert_array_equal(packed, np.stack(before))
    assert len(run) == len(steps) and run.nbytes >= run.x_t.nbytes + run.x0.nbytes


def test_show_frame_scrubs_this_sessions_last_run(url, classroom):
    client = Client(url, verbose=False)
    with pytest.raises(Exception, match="run the reverse process first"):
        client.predict(frame=0, api_name="/show_frame")
    frames = client.submit(digit=1, guidance=0, steps=4, seed=0, api_name="/reverse_process")
    frames.result()
    streamed = {int(re.search(r"step (\d+) of 4", out[2]).group(1)): out for out in frames.outputs()}
    assert {0, 4} <= set(streamed)
    # frames sent while it runs travel inside their update; the last one is a file (controls.FrameImage)
    assert all(isinstance(streamed[i][0], dict) for i in streamed if i < 4) and isinstance(streamed[4][0], str)
    engine = [s.x for s in classroom.pipe.denoising_steps([1], guidance=0.0, num_inference_steps=4, seed=0)]
    for i in range(5):  # every frame, streamed or not, matches the streamed one and the engine's own steps
        x_t, x0, counter = client.predict(frame=i, api_name="/show_frame")
        assert f"step {i} of 4" in counter
        if i in streamed:
            np.testing.assert_array_equal(read_image(x_t), read_image(streamed[i][0]))
            np.testing.assert_array_equal(read_image(x0), read_image(streamed[i][1]))
        if i:
            assert_same_images(shrink(read_image(x_t), settings.FRAME_SCALE)[None], to_uint8(engine[i - 1]))
    with pytest.raises(Exception, match="frame must be a whole number from 0 to 4"):
        client.predict(frame=5, api_name="/show_frame")


# --- Forward noising ---------------------------------------------------------------------------------------

def test_forward_noising_defaults_show_x_t_the_strip_and_the_plot(client, classroom):
    x_t, formula, strip, plot = client.predict(api_name="/forward_noising")
    schedule = classroom.pipe.schedule
    t = schedule.num_train_steps // 4  # the t slider's default
    x0 = classroom.shipped_images[0]
    noise = torch.randn((1, 1, 28, 28), generator=torch.Generator().manual_seed(0))
    expected = to_uint8(schedule.q_sample(to_model_range(x0), torch.tensor([t]), noise))[0]
    np.testing.assert_array_equal(shrink(read_image(x_t), settings.FRAME_SCALE), expected)
    assert f"**t = {t}:** ᾱ_t = {schedule.alpha_bar[t].item():.4f}" in formula
    assert [item["caption"] for item in strip][0] == "t = 0" and len(strip) == settings.STRIP_FRAMES
    assert strip[-1]["caption"] == f"t = {schedule.num_train_steps}"
    np.testing.assert_array_equal(shrink(read_image(strip[0]["image"]), settings.SAMPLE_SCALE), x0)  # t = 0 is x₀
    width, height = SCHEDULE_FIGURE_INCHES
    assert read_image(plot).shape == (round(height * PLOT_DPI), round(width * PLOT_DPI))


def test_noise_at_t_matches_forward_noising_for_every_schedule(client):
    x0 = client.predict(index=13, api_name="/shipped_digit")
    for schedule in ("linear", "cosine", "quadratic", "sigmoid"):
        settings = dict(image=handle_file(x0), schedule=schedule, beta_start=1e-4, beta_end=0.03, num_steps=300,
                        t=120, seed=4)
        full_x_t, full_formula, _, _ = client.predict(api_name="/forward_noising", **settings)
        fast_x_t, fast_formula = client.predict(api_name="/noise_at_t", **settings)
        np.testing.assert_array_equal(read_image(full_x_t), read_image(fast_x_t))
        assert full_formula == fast_formula


def test_x0_from_shipped_digits_uploads_and_drawings(client, classroom, tmp_path):
    shipped = client.predict(index=7, api_name="/shipped_digit")
    np.testing.assert_array_equal(shrink(read_image(shipped), settings.FRAME_SCALE), classroom.shipped_images[7])
    # Uploads: the same digit 5× larger, as dark ink on white, and as dark ink on a transparent background.
    digit = classroom.shipped_images[7]
    Image.fromarray(255 - enlarge(digit, 5)).save(tmp_path / "dark_on_white.png")
    ink = np.zeros((140, 140, 4), np.uint8)
    ink[..., 3] = enlarge(digit, 5)  # black ink, its opacity = the digit
    Image.fromarray(ink).save(tmp_path / "transparent.png")
    for name in ("dark_on_white.png", "transparent.png"):
        uploaded = client.predict(image=handle_file(str(tmp_path / name)), api_name="/load_image")
        assert_same_images(shrink(read_image(uploaded), settings.FRAME_SCALE), digit)
    # A drawing: a vertical white stroke on the black canvas becomes a "1"-like x₀.
    canvas = np.zeros((280, 280, 3), np.uint8)
    canvas[40:240, 130:150] = 255
    Image.fromarray(canvas).save(tmp_path / "drawing.png")
    drawing = {"background": handle_file(str(tmp_path / "drawing.png")), "layers": [],
               "composite": handle_file(str(tmp_path / "drawing.png")), "id": None}
    drawn = shrink(read_image(client.predict(drawing=drawing, api_name="/load_drawing")), settings.FRAME_SCALE)
    np.testing.assert_array_equal(drawn, np.asarray(Image.fromarray(canvas[..., 0]).resize((28, 28), Image.BOX)))


# --- How it works ------------------------------------------------------------------------------------------

def test_how_it_works_reads_the_real_numbers_from_the_checkpoint(classroom):
    text = how_it_works_markdown(classroom)
    assert f"**{count_parameters(classroom.pipe.model):,} parameters**" in text
    assert f"**T = {classroom.pipe.schedule.num_train_steps}**" in text and f"**{classroom.pipe.schedule.name}**" in text
    assert "(1+w)" in text and "skip connections" in text.lower() and "time embedding" in text.lower()


# --- bad input, on every endpoint ----------------------------------------------------------------------------

BAD_INPUTS = [
    ("/generate", {"digit": 12}, "digit must be a digit from 0 to 9 or 'all'"),
    ("/generate", {"digit": "seven"}, "digit must be"),
    ("/generate", {"guidance": -2.5}, "guidance w must be a finite number from -2 to 8"),
    ("/generate", {"guidance": 1e9}, "guidance w must be a finite number"),
    ("/generate", {"guidance": "strong"}, "guidance w must be a finite number"),
    ("/generate", {"guidance": None}, "guidance w must be a finite number"),
    ("/generate", {"steps": 0}, f"steps for {DEFAULT_SAMPLER} must be a whole number from 1 to 100"),
    ("/generate", {"steps": 10**6}, f"steps for {DEFAULT_SAMPLER} must be a whole number"),
    ("/generate", {"steps": 2.5}, f"steps for {DEFAULT_SAMPLER} must be a whole number"),
    ("/generate", {"sampler": "euler"}, "sampler must be one of ddpm, ddim, dpm++2m, dpm++2m-sde"),
    ("/generate", {"samples_per_digit": 11}, "samples per digit (at most 100 samples in all)"),
    ("/generate", {"digit": 3, "samples_per_digit": 10**6}, "samples per digit"),
    ("/generate", {"digit": 3, "samples_per_digit": 100, "steps": 100}, "too much work for one request"),
    ("/generate", {"sampler": "ddpm", "steps": 10**4}, "steps for ddpm must be a whole number from 1 to"),
    ("/generate", {"seed": -1}, "seed must be a whole number"),
    ("/generate", {"seed": [1, 2]}, "seed must be a whole number"),
    ("/generate", {"quality_prompts_text": "p\n" * 20}, "at most 8 quality prompts"),
    ("/generate", {"quality_prompts_text": 42}, "quality prompts must be text"),
    ("/guidance_sweep", {"guidance_values_text": "a, b"}, "guidance values must be numbers"),
    ("/guidance_sweep", {"guidance_values_text": ""}, "give 1 to 8 guidance values"),
    ("/guidance_sweep", {"guidance_values_text": "0 1 2 3 4 5 6 7 8"}, "give 1 to 8 guidance values"),
    ("/guidance_sweep", {"guidance_values_text": "0, 100"}, "each guidance value w must be"),
    ("/guidance_sweep", {"guidance_values_text": "nan"}, "each guidance value w must be"),
    ("/guidance_sweep", {"samples_per_digit": 10, "steps": 100}, "too much work for one request"),
    ("/reverse_process", {"digit": "all"}, "digit must be a digit from 0 to 9, got 'all'"),
    ("/reverse_process", {"steps": 0}, f"steps for {DEFAULT_SAMPLER} must be a whole number"),
    ("/shipped_digit", {"index": 30}, "shipped digit index must be a whole number from 0 to 29"),
    ("/shipped_digit", {"index": "a"}, "shipped digit index must be a whole number"),
    ("/forward_noising", {"schedule": "exponential"}, "schedule must be one of linear, cosine, quadratic, sigmoid"),
    ("/forward_noising", {"schedule": "linear", "beta_start": 0.02, "beta_end": 0.01},
     "need 0 < beta_start < beta_end < 1"),
    ("/forward_noising", {"beta_end": 2}, "β end must be a finite number from 0 to 1"),
    ("/forward_noising", {"num_steps": 0}, "T must be a whole number from 1 to 1000"),
    ("/forward_noising", {"num_steps": 10**6}, "T must be a whole number from 1 to 1000"),
    ("/forward_noising", {"num_steps": 100, "t": 101}, "t (with T = 100) must be a whole number from 0 to 100"),
    ("/noise_at_t", {"t": -3}, "must be a whole number from 0 to"),
    ("/noise_at_t", {"seed": "lucky"}, "seed must be a whole number"),
    ("/load_drawing", {"drawing": {"composite": None}}, "drawing must be an image file"),
]


@pytest.mark.parametrize("api_name,kwargs,message", BAD_INPUTS,
                         ids=[f"{a}-{'-'.join(map(str, k))}" for a, k, _ in BAD_INPUTS])
def test_bad_input_gets_a_clear_error(client, api_name, kwargs, message):
    with pytest.raises(Exception) as error:
        client.predict(api_name=api_name, **kwargs)
    assert message in str(error.value)


def raw_call(url: str, api_name: str, body: str) -> tuple[str, str]:
    """POST a raw JSON body to /gradio_api/call/<name> and read the event stream: (last event, its data)."""
    posted = httpx.post(f"{url}gradio_api/call/{api_name}", content=body, headers={"content-type": "application/json"})
    posted.raise_for_status()
    with httpx.stream("GET", f"{url}gradio_api/call/{api_name}/{posted.json()['event_id']}", timeout=120) as stream:
        events = re.findall(r"event: (\w+)\ndata: (.*)", "".join(stream.iter_text()))
    return events[-1]


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_sent_as_raw_json_are_refused(url, value):
    """gradio_client cannot send NaN or infinity (JSON has none), but a raw request can."""
    event, data = raw_call(url, "generate", f'{{"data": ["all", 1, {value}, "dpm++2m", 10, 0, "", "classifier-free"]}}')
    assert event == "error" and "guidance w must be a finite number" in data
    event, data = raw_call(url, "reverse_process", f'{{"data": ["3", 1, "dpm++2m", {value}, 0]}}')
    assert event == "error" and "steps for dpm++2m must be a whole number" in data


def test_wrong_number_of_values_is_refused(url):
    response = httpx.post(f"{url}gradio_api/call/generate", content='{"data": ["all"]}',
                          headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["detail"] == ("/generate takes 8 value(s) (digit, samples_per_digit, guidance, sampler, "
                                         "steps, seed, quality_prompts_text, guide), got 1")


def test_uploads_that_are_not_images_or_are_huge_are_refused(client, url, tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(Exception, match="not an image this app can read"):
        client.predict(image=handle_file(str(text)), api_name="/load_image")
    with pytest.raises(Exception, match="not an image this app can read"):
        client.predict(image=handle_file(str(text)), api_name="/forward_noising")
    wide = tmp_path / "wide.png"
    Image.fromarray(np.zeros((6000, 6000), np.uint8)).save(wide)  # 36 megapixels in a small file
    with pytest.raises(Exception, match="6000×6000 pixels; at most 25 megapixels"):
        client.predict(image=handle_file(str(wide)), api_name="/load_image")
    big = tmp_path / "big.png"  # over the 10 MB upload limit: noise does not compress
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (2000, 2000, 3), dtype=np.uint8)).save(big)
    assert big.stat().st_size > 10 * 2**20
    with pytest.raises(Exception, match="exceeds the maximum file size"):  # the client checks first …
        client.predict(image=handle_file(str(big)), api_name="/load_image")
    with big.open("rb") as f:  # … and the server refuses it too
        response = httpx.post(f"{url}gradio_api/upload", files={"files": ("big.png", f, "image/png")})
    assert response.status_code == 413


def test_the_server_keeps_serving_after_bad_input(client):
    for api_name, kwargs, _ in BAD_INPUTS[:5]:
        with pytest.raises(Exception):
            client.predict(api_name=api_name, **kwargs)
    images = generate(client, digit="0", seed=1)[0]
    assert images.shape == (1, 28, 28)


# --- CLIP available ----------------------------------------------------------------------------------------

def test_clip_steps_aside_while_others_wait_for_the_network(clip_classroom, monkeypatch):
    """A class sampling at once gets the classifier's scores at once; CLIP would hold it up."""
    clip_classroom.clip.get(timeout=60)
    images, digits = np.zeros((2, 28, 28), np.uint8), [3, 4]
    monkeypatch.setattr(clip_classroom.server, "requests_in_progress", lambda: 5)
    scores = clip_classroom.score(images, digits, ("a clear digit",))
    assert scores.clip is None and "5 other request(s) are waiting" in scores.clip_note
    assert scores.classifier.confidence_requested.shape == (2,)
    monkeypatch.undo()
    with clip_classroom._clip_lock:  # CLIP busy with another request's samples
        scores = clip_classroom.score(images, digits, ("a clear digit",))
    assert scores.clip is None and "scoring another request" in scores.clip_note
    assert clip_classroom.score(images, digits, ("a clear digit",)).clip is not None  # idle again: CLIP scores


def test_clip_scores_appear_beside_the_samples_when_clip_is_available(clip_client, clip_classroom):
    assert "ready" in wait_for_clip(clip_client)
    prompts = "a sharp digit\na smudge"
    images, cards, table, agreement, disagreements = generate(
        clip_client, digit="all", seed=2, quality_prompts_text=prompts)
    digits = list(range(10))
    scorer = clip_classroom.clip.get()
    expected = scorer.score(images, digits, ("a sharp digit", "a smudge"))
    np.testing.assert_allclose(table_column(table, "CLIP p(asked)"), expected.prob_requested, atol=2e-3)
    np.testing.assert_allclose(table_column(table, "CLIPScore"), expected.clip_score, atol=0.06)
    np.testing.assert_allclose(table_column(table, "CLIP p(a smudge)"), expected.quality_probs[:, 1], atol=2e-3)
    assert table_column(table, "CLIP digit") == expected.predicted_digit.tolist()
    assert cards.count("CLIP: ") == 10 and cards.count("CLIPScore") == 10
    # The agreement panel counts the samples where the two digits match, and shows the others.
    same = sum(a == b for a, b in zip(table_column(table, "CLIP digit"), table_column(table, "classifier digit")))
    assert f"matches the classifier's on {same} of 10 samples" in agreement
    assert disagreements.count('class="sample-card"') == 10 - same


def test_new_sessions_get_the_same_config_with_remembered_signatures(classroom):
    """ui.launch makes gradio remember each component's signature (a session builds a config of every
    component it is asked for); the configs must not change."""
    import gradio.blocks
    from gradio.state_holder import SessionState

    demo, _ = launch_classroom(classroom)
    try:
        assert isinstance(gradio.blocks.inspect, ui._CachedSignatures)
        remembered = list(SessionState(demo).components)
        gradio.blocks.inspect = inspect
        try:
            assert list(SessionState(demo).components) == remembered and len(remembered) > 100
        finally:
            gradio.blocks.inspect = ui._CachedSignatures()
    finally:
        demo.close()


def test_sessions_keep_no_copies_of_configs_and_give_gradios_components_when_asked(classroom):
    """A session keeps no copy of its components' configs or last values (gradio keeps them for deep links,
    which the app does not offer; each API call is a session); its state is gradio's, and `components`
    builds the same configs as gradio's own session state."""
    import gradio.route_utils
    import gradio.state_holder
    from gradio_client import Client

    gradios = ui._SessionWithoutConfigCopies.__mro__[1]
    demo, url = launch_classroom(classroom)
    try:
        assert gradio.state_holder.SessionState is gradio.route_utils.SessionState is ui._SessionWithoutConfigCopies
        ours, theirs = ui._SessionWithoutConfigCopies(demo), gradios(demo)
        assert ours.config_values == {} and len(theirs.config_values) > 100
        assert ours.components == list(theirs.components)
        # a session made by a request: gradio's state (the frame slider an event changed), no config copies
        student = Client(url, verbose=False)
        student.predict(digit=2, steps=4, seed=1, api_name="/reverse_process")
        stored = demo.state_holder.session_data[student.session_hash]
        assert isinstance(stored, ui._SessionWithoutConfigCopies) and stored.config_values == {}
        changed = [key for key, block in stored.blocks_config.blocks.items() if block is not demo.blocks.get(key)]
        assert changed and all(c["props"] for c in stored.components if c["id"] in changed)
        x_t, x0, counter = student.predict(frame=2, api_name="/show_frame")  # the session's run is still known
        assert "step 2 of 4" in counter
    finally:
        demo.close()
