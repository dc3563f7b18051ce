"""Issue 16's bugs, at the level of the handlers and the page's wiring (no browser): T typed in its box refits t,
β start/end locked for cosine, samples × steps kept within MAX_WORK by the sliders, photos checked, empty panels
that say what fills them, failed requests that clear their stale outputs, a short CLIP line, the Generate
summary, the guidance sweep kept within MAX_WORK, legible figures. tests/test_browser_devices.py checks the same page in a real browser."""
import re
import shutil
import time

import gradio as gr
import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Text
from PIL import Image

from diffusion.requests import MAX_SAMPLES, MAX_WORK
from diffusion.schedules import SCHEDULE_NAMES, NoiseSchedule
import ui.generate
from ui import controls, settings
from ui.controls import fit_samples_slider, samples_cap, sweep_samples_cap, wrap_tabs
from ui.forward import ForwardTab
from ui.generate import CARDS_FAILED, CARDS_PROMPT, SWEEP_PROMPT, GenerateTab, clip_status_text
from ui.reverse import ALL_TEN_FAILED, COUNTER_FAILED, COUNTER_PROMPT, CURVE_COLOURS, ReverseTab
from ui.rendering import PLOT_FONT_PT, enlarge, schedule_figure, sweep_figure
from ui.uploads import photo_problem, upload_folder


@pytest.fixture(scope="module")
def page(classroom):
    """The Generate and Forward-noising tabs in a page of their own (what build_app puts in its tabs)."""
    generate, forward = GenerateTab(classroom), ForwardTab(classroom)
    with gr.Blocks() as demo:
        toggle = controls.presenter_toggle(demo)
        with gr.Tab("Generate"):
            generate.layout()
        with gr.Tab("Forward noising"):
            forward.layout()
    wrap_tabs(demo)
    return demo, generate, forward, toggle


@pytest.fixture(scope="module")
def reverse_page(classroom):
    """The Reverse-process tab in a page of its own (what build_app puts in its tab)."""
    reverse = ReverseTab(classroom)
    with gr.Blocks() as demo:
        with gr.Tab("Reverse process"):
            reverse.layout()
    return demo, reverse


def component(demo, elem_id):
    [found] = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == elem_id]
    return found


def events_of(demo, block, event: str):
    """The page's functions that `event` of `block` triggers directly."""
    return [f for f in demo.fns.values() if (block._id, event) in [tuple(t) for t in f.targets]]


def failure_handlers(demo, fn) -> list:
    """The functions chained with .failure() after the event that runs `fn`."""
    ids = [i for i, f in demo.fns.items() if f.fn == fn]
    return [f for f in demo.fns.values() if f.trigger_after in ids and f.trigger_only_on_failure]


# --- Forward noising: T typed in its number box ---------------------------------------------------------------

def test_typing_t_refits_the_t_slider_and_redraws(page):
    demo, _, forward, _ = page
    T = component(demo, "T-slider")
    # Typing a value (and Enter) only fires "change"; dragging fires it too. The old page listened to "release".
    [fit] = [f for f in events_of(demo, T, "change") if f.fn == forward.fit_t_slider]
    chained = [f for f in demo.fns.values() if f.trigger_after == fit._id]
    assert any(f.fn == forward.forward_noising for f in chained)  # … then x_t, the strip and the plot
    update = forward.fit_t_slider(50, 500)
    assert update.maximum == 50 and update.value == 50  # never "T = 50 with t = 500"


# --- β start and β end: locked for cosine ----------------------------------------------------------------------

def test_beta_inputs_are_locked_for_cosine(page):
    demo, _, forward, _ = page
    start, end = forward.fit_beta_inputs("cosine")
    assert start.interactive is False and end.interactive is False
    start, end = forward.fit_beta_inputs("linear")
    assert start.interactive is True and end.interactive is True
    schedule = next(b for b in demo.blocks.values() if isinstance(b, gr.Radio) and b.label == "β schedule")
    assert any(f.fn == forward.fit_beta_inputs for f in events_of(demo, schedule, "change"))
    model_uses_betas = forward.classroom.pipe.schedule.name != "cosine"
    assert component(demo, "beta-start").interactive is model_uses_betas


# --- samples × steps ≤ MAX_WORK, kept by the sliders -----------------------------------------------------------

@pytest.mark.parametrize("digit", ["all", "3"])
def test_samples_slider_is_capped_by_steps(digit):
    digits = 10 if digit == "all" else 1
    for steps in (1, 12, 50, 100, 333, 500):
        high = samples_cap(digit, steps)
        assert high * digits * steps <= MAX_WORK and high * digits <= MAX_SAMPLES and high >= 1
        assert (high + 1) * digits * steps > MAX_WORK or (high + 1) * digits > MAX_SAMPLES  # the tightest cap
    update = fit_samples_slider("3", 100, 500)  # 100 samples × 500 steps was refused by the server
    assert update.maximum == 10 and update.value == 10
    assert fit_samples_slider("all", 10, 500).value == 1
    assert fit_samples_slider("3", 4, 12).value == 4  # within the cap: left alone


def test_steps_and_digit_changes_refit_the_samples_slider(page):
    demo, generate, _, _ = page
    steps = next(b for b in demo.blocks.values() if isinstance(b, gr.Slider) and b.label == "Steps")
    digit = next(b for b in demo.blocks.values() if isinstance(b, gr.Radio) and b.label == "Digit")
    for block in (steps, digit):
        assert any(f.fn == generate.fit_samples_slider for f in events_of(demo, block, "change"))
    samples = next(b for b in demo.blocks.values() if isinstance(b, gr.Slider) and b.label == "Samples per digit")
    assert samples.maximum * 10 * steps.value <= MAX_WORK


# --- Uploads: one digit on a plain background, or a clear refusal ----------------------------------------------

def upload(tmp_path, name: str, image: np.ndarray) -> dict:
    """A picture put where gradio keeps uploads, as the page sends it."""
    path = tmp_path / name
    Image.fromarray(image).save(path)
    folder = upload_folder() / "test_ui_fixes"
    folder.mkdir(parents=True, exist_ok=True)
    return {"path": str(shutil.copy(path, folder / name))}


def photo(classroom, lighting: float, ink: float, seed: int = 0) -> np.ndarray:
    """A simulated 1200×900 photo of shipped digit #3 on paper: `lighting` grey levels of uneven light from left
    to right, dark ink `ink` (0…1) strong."""
    rng = np.random.default_rng(seed)
    height, width = 900, 1200
    paper = 200 + lighting * np.mgrid[0:height, 0:width][1] / width + rng.normal(0, 5, (height, width))
    digit = np.asarray(Image.fromarray(classroom.shipped_images[3]).resize((500, 500), Image.BILINEAR), float)
    paper[200:700, 350:850] -= ink * digit
    return paper.clip(0, 255).astype(np.uint8)


def test_a_photo_that_is_not_a_plain_digit_is_refused_saying_why(classroom, page, tmp_path):
    _, _, forward, _ = page
    uneven = upload(tmp_path, "uneven.png", (photo(classroom, -120, 0.5)))
    with pytest.raises(gr.Error, match="background is not plain"):
        forward.load_image(uneven)
    faint = upload(tmp_path, "faint.png", photo(classroom, 0, 0.12))
    with pytest.raises(gr.Error, match="too little contrast"):
        forward.load_image(faint)
    blank = upload(tmp_path, "grey.png", np.full((300, 300), 110, np.uint8))
    with pytest.raises(gr.Error, match="too little contrast"):
        forward.load_image(blank)
    # the note beside x₀ says so too, and what the app did with a good picture
    assert forward.upload_note(uneven).startswith("**Upload refused:**")
    good = upload(tmp_path, "good.png", photo(classroom, 0, 0.7))
    x0 = forward.load_image(good)  # grey paper (and the black padding) become one black background: no grey square
    assert x0.shape == (28 * settings.FRAME_SCALE,) * 2 and x0.max() == 255 and np.median(x0) == 0
    note = forward.upload_note(good)
    assert "1200×900 picture" in note and "28×28" in note and "made black" in note


def test_shipped_digits_and_drawings_pass_the_photo_check(classroom):
    for image in classroom.shipped_images:
        assert photo_problem(image) is None
        assert photo_problem(255 - image) is not None  # the check reads light ink on black, as the app makes it
    stroke = np.zeros((28, 28), np.uint8)
    stroke[4:24, 13:15] = 255
    assert photo_problem(stroke) is None


def test_the_upload_box_example_passes(page, tmp_path):
    _, _, forward, _ = page
    forward.load_image(upload(tmp_path, "example.png", forward.example_upload()))


def test_upload_note_is_wired_beside_x0(page):
    demo, _, forward, _ = page
    assert component(demo, "upload-note") is not None
    assert any(f.fn == forward.upload_note for f in demo.fns.values())


# --- Empty panels say what fills them; failures clear stale results --------------------------------------------

def test_generate_opens_with_prompts_not_empty_panels(page):
    demo, _, _, _ = page
    assert component(demo, "sample-cards").value == CARDS_PROMPT and "Press <b>Generate</b>" in CARDS_PROMPT
    assert component(demo, "sweep-table").value == SWEEP_PROMPT
    assert "After **Generate**" in component(demo, "agreement").value
    for elem_id in ("x-t", "x0-hat", "forward-x-t", "all-ten"):  # the image panels: CSS says what fills them
        assert f"#{elem_id}:not(:has(img))::after" in settings.CSS


def test_failed_requests_clear_their_outputs(page):
    demo, generate, forward, _ = page
    [cleared] = {f.fn for f in failure_handlers(demo, generate.generate)}  # the button and the dice both chain it
    assert cleared() == (CARDS_FAILED, None, None, "", "")
    assert {f.fn for f in failure_handlers(demo, generate.guidance_sweep)} == {generate.sweep_cleared_after_failure}
    assert generate.sweep_cleared_after_failure()[0] is None
    forward_clears = {f.fn for f in failure_handlers(demo, forward.forward_noising)}
    assert forward_clears == {forward.cleared_after_failure}
    x_t, formula, strip, plot = forward.cleared_after_failure()
    assert x_t is None and strip is None and plot is None and "refused" in formula


def test_reverse_tab_opens_with_a_prompt_not_a_placeholder(reverse_page):
    demo, _ = reverse_page
    counter = component(demo, "step-counter")
    assert counter.value == COUNTER_PROMPT and "t = – / –" not in counter.value
    assert "Press **Run the reverse process**" in COUNTER_PROMPT
    for shown in ("x_t", "x̂₀", "t counting down", "classifiers", "player", "plot", "GIF"):  # what the run shows
        assert shown in COUNTER_PROMPT, shown
    # the browser tests wait for these in the counter: the prompt must not look like a run's counter
    assert "first recognises" not in COUNTER_PROMPT and not re.search(r"step \d+ of \d+", COUNTER_PROMPT)


def test_confidence_plot_legend_is_the_pages(reverse_page):
    demo, _ = reverse_page
    plot = component(demo, "confidence-plot")
    assert plot.colors_in_legend == [] and set(plot.color_map) == set(CURVE_COLOURS)  # no legend cut off under it
    legend = component(demo, "confidence-legend").value
    assert all(curve in legend and colour in legend for curve, colour in CURVE_COLOURS.items())


def outputs_by_block(handler, values) -> dict:
    """{output block: the value the failure handler gives it}."""
    assert len(handler.outputs) == len(values)
    return dict(zip(handler.outputs, values))


def test_failed_reverse_process_clears_every_output(reverse_page):
    demo, reverse = reverse_page
    handlers = failure_handlers(demo, reverse.reverse_process)
    assert len(handlers) == 2  # the button's click and the dice's chained run
    assert {f.fn for f in handlers} == {reverse.cleared_after_failure}
    [run] = [f for f in demo.fns.values() if f.fn == reverse.reverse_process and f.api_name == "reverse_process"]
    for handler in handlers:
        assert handler.outputs == run.outputs  # every output of the run, cleared
        assert handler.api_visibility == "private" and handler.concurrency_id == settings.UI_ONLY["concurrency_id"]
    cleared = outputs_by_block(handlers[0], reverse.cleared_after_failure())
    by_id = {block.elem_id: value for block, value in cleared.items() if getattr(block, "elem_id", None)}
    assert by_id["x-t"] is None and by_id["x0-hat"] is None
    assert by_id["step-counter"] == COUNTER_FAILED and "failed" in COUNTER_FAILED and "cleared" in COUNTER_FAILED
    assert by_id["confidence-plot"] is None and by_id["gif"] is None and by_id["player"] == ""
    scrubber = by_id["scrubber"]
    assert (scrubber.minimum, scrubber.maximum, scrubber.value, scrubber.interactive) == (0, 1, 0, False)
    [live] = [v for b, v in cleared.items() if isinstance(b, gr.Row)]
    [playback] = [v for b, v in cleared.items() if isinstance(b, gr.Column)]
    assert live.visible is True and playback.visible == "hidden"  # the live images back, the old player hidden
    [state] = [v for b, v in cleared.items() if isinstance(b, gr.State)]
    assert state is None  # the session forgets the failed request's predecessor


def test_failed_all_ten_clears_the_filmstrip_and_its_table(reverse_page):
    demo, reverse = reverse_page
    [handler] = failure_handlers(demo, reverse.all_ten)
    assert handler.fn == reverse.all_ten_cleared_after_failure and handler.api_visibility == "private"
    cleared = outputs_by_block(handler, reverse.all_ten_cleared_after_failure())
    assert {block.elem_id: value for block, value in cleared.items()} == {"all-ten": None,
                                                                           "all-ten-table": ALL_TEN_FAILED}
    assert "failed" in ALL_TEN_FAILED and "cleared" in ALL_TEN_FAILED


# --- The guidance sweep: as many samples per digit as fit in MAX_WORK -------------------------------------------

@pytest.mark.parametrize("digit", ["all", "3"])
def test_sweep_samples_cap_is_the_most_that_fits(digit):
    digits = 10 if digit == "all" else 1
    for steps in (1, 12, 50, 100, 500):
        for values in (1, 2, 6, 8):
            cap = sweep_samples_cap(digit, steps, values)
            assert cap * digits * steps * values <= MAX_WORK and cap * digits <= MAX_SAMPLES
            assert (cap + 1) * digits * steps * values > MAX_WORK or (cap + 1) * digits > MAX_SAMPLES


@pytest.fixture
def sweeps(classroom, monkeypatch):
    """The requests the sweep sends to the network server, recorded."""
    sent = []
    run = classroom.server.run

    def recording(requests):
        sent.append(list(requests))
        return run(requests)

    monkeypatch.setattr(classroom.server, "run", recording)
    return sent


def test_sweep_draws_as_many_samples_as_fit_and_says_so(classroom, sweeps, monkeypatch):
    monkeypatch.setattr(ui.generate, "MAX_WORK", 60)  # small work, so the test is quick: 5 × 4 steps × 3 w = 60
    generate = GenerateTab(classroom)
    _, table = generate.guidance_sweep("3", 10, "0, 1, 2", "ddim", 4, 1)
    assert [[r.num_samples for r in requests] for requests in sweeps] == [[5, 5, 5]]
    assert table.startswith("**Drawn with 5 samples per digit, not the 10 asked**")
    assert "once per value of w" in table and "4 steps × 3 values of w" in table and "within 60 " in table
    assert "10 per digit would need 120" in table
    _, table = generate.guidance_sweep("3", 2, "0, 1, 2", "ddim", 4, 1)  # fits: drawn as asked, no note
    assert [r.num_samples for r in sweeps[-1]] == [2, 2, 2] and "Drawn with" not in table
    assert table.startswith("| w |")


def test_sweep_refused_when_not_even_one_sample_fits_naming_what_to_reduce(classroom, sweeps):
    generate = GenerateTab(classroom)
    # all ten digits × 100 steps × 6 values of w = 6,000 > MAX_WORK even with one sample each
    with pytest.raises(gr.Error, match="even with 1 sample per digit") as refused:
        generate.guidance_sweep("all", 1, "0, 0.5, 1, 2, 4, 8", "ddim", 100, 0)
    message = str(refused.value)
    assert f"= 6,000 network evaluations (at most {MAX_WORK:,})" in message
    assert "fewer steps (at most 83 with 6 values of w)" in message
    assert "fewer values of w (at most 5 with 100 steps)" in message and "one digit instead of all ten" in message
    assert sweeps == []  # refused before any sampling


def test_sweep_plan_under_the_values_of_w_follows_the_controls(page):
    demo, generate, _, _ = page
    box = component(demo, "sweep-values")
    assert "1 sample per digit" in box.info  # the page's defaults: all ten digits, 1 sample each
    for label in ("Digit", "Samples per digit", "Steps"):
        control = next(b for b in demo.blocks.values() if getattr(b, "label", None) == label)
        assert any(f.fn == generate.sweep_plan for f in events_of(demo, control, "change")), label
    assert any(f.fn == generate.sweep_plan for f in events_of(demo, box, "change"))
    assert "8 samples per digit (not 100" in generate.sweep_plan("3", 100, 100, "0, 0.5, 1, 2, 4, 8").info
    assert "too much work" in generate.sweep_plan("all", 1, 100, "0, 0.5, 1, 2, 4, 8").info
    assert "separated by commas" in generate.sweep_plan("3", 1, 10, "a, b").info


# --- CLIP unavailable: one short line, the details folded away --------------------------------------------------

def clip_unavailable(classroom) -> str:
    """CLIP's status once it has failed to load (its weights file is missing here)."""
    classroom.clip.start()
    deadline = time.monotonic() + 60
    while classroom.clip.status() in ("not loaded", "loading") and time.monotonic() < deadline:
        time.sleep(0.05)
    return classroom.clip.status()


def test_clip_unavailable_is_one_short_line_with_details_folded(classroom):
    status = clip_unavailable(classroom)
    assert status.startswith("unavailable")
    text = clip_status_text(status)
    first, rest = text.split("\n\n", 1)
    assert first.startswith("**CLIP unavailable**") and len(first) < 120
    assert "DIFFUSION_CLIP" not in first and "nonexistent" not in first
    assert rest.startswith('<details class="clip-details">') and "<details open" not in rest
    assert "nonexistent" in rest  # the teacher's details are still there, folded


def test_generate_summary_line_and_no_repeated_clip_message(classroom):
    clip_unavailable(classroom)
    generate = GenerateTab(classroom)
    cards, _, table, agreement, _ = generate.generate("3", 5, 0.6, "dpm++2m-sde", 8, 1, "")
    right = sum(row == 3 for row in table["classifier digit"])
    assert f"the classifier reads {right} of 5 as the asked digit ({right / 5:.0%})" in cards
    assert "mean confidence" in cards and "diversity 0." in cards
    assert cards.count('class="sample-card"') == 5
    assert "No CLIP scores" in agreement
    assert "DIFFUSION_CLIP" not in agreement and "nonexistent" not in agreement  # said once, at the top


def test_compact_grid_marks_misread_samples(classroom):
    generate = GenerateTab(classroom)
    cards, _, table, _, _ = generate.generate("all", 1, -2.0, "dpm++2m-sde", 3, 2, "")
    misses = sum(int(p) != a for p, a in zip(table["classifier digit"], table["asked"]))
    assert cards.count("data-miss") == misses
    assert "#sample-cards.compact .sample-card[data-miss]" in settings.CSS


# --- Presenter mode and the phone -------------------------------------------------------------------------------

def test_header_has_the_presenter_switch_and_tabs_wrap(page):
    demo, _, _, toggle = page
    assert toggle.elem_id == "presenter-toggle"
    assert any(f.js == controls.PRESENTER_JS for f in events_of(demo, toggle, "change"))
    assert any(f.js == controls.PRESENTER_FROM_URL_JS for f in demo.fns.values())  # ?presenter=1
    [tabs] = [b for b in demo.blocks.values() if isinstance(b, gr.Tabs)]
    assert tabs.overflow_behavior == "wrap"
    assert "body.presenter" in settings.CSS


def drawn_font_sizes(figure) -> list[float]:
    FigureCanvasAgg(figure).draw()
    return [t.get_fontsize() for t in figure.findobj(Text) if t.get_visible() and t.get_text()]


def test_figures_text_is_at_least_14_pt():
    schedules = {name: NoiseSchedule.create(name, 1000, 1e-4, 0.02) for name in SCHEDULE_NAMES}
    assert min(drawn_font_sizes(schedule_figure(schedules, "linear"))) >= PLOT_FONT_PT >= 14
    grids = [enlarge(np.zeros((30, 302), np.uint8), 1)] * 3
    assert min(drawn_font_sizes(sweep_figure([0, 1, 2], grids, ["classifier 90%"] * 3))) >= 14
