"""The sampling controls the Generate and Reverse-process tabs share: digit, w, sampler, steps, seed; the bound
on samples × steps that the sliders keep to; the page header's presenter-mode switch; and the image output that
sends streamed frames inline."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr
import numpy as np
from gradio.data_classes import ImageData

from diffusion.requests import DEFAULT_GUIDANCE, DEFAULT_SAMPLER, DEFAULT_STEPS, is_number
from diffusion.sampling import SAMPLERS

from .classroom import Classroom
from .rendering import png_data_uri
from .settings import ALL_DIGITS, MAX_FEW_STEPS, MAX_GUIDANCE, MAX_SAMPLES, MAX_SEED, MAX_WORK, MIN_GUIDANCE, UI_ONLY

RANDOM_SEED_JS = f"() => Math.floor(Math.random() * {MAX_SEED})"


@dataclass(frozen=True)
class InlineFrame:
    """A frame (uint8 [H,W]) that a `FrameImage` sends inside the update itself, as a PNG data URI."""

    pixels: np.ndarray


class FrameImage(gr.Image):
    """An image output that sends an `InlineFrame` inline (no file) and anything else as gr.Image does.

    Why: a browser fetches every image file an update names, one more request each. Thirty students streaming
    an animation made 780 such fetches, and serving them cost more than the updates themselves (a bare gradio
    app streaming 13 updates of two pictures to 30 clients, 2 cores: 2.0 s without the fetches, 5.2 s with
    them). A streamed frame is small (224 px of 28-px blocks: about 2 KB of PNG), so it travels in its update;
    the last frame and the frames the slider asks for are files, as before, for API clients."""

    is_template = True  # the browser draws it with gr.Image's own front end (gradio: a template of its parent)

    def postprocess(self, value):
        if isinstance(value, InlineFrame):
            return ImageData(url=png_data_uri(value.pixels), orig_name="frame.png")
        return super().postprocess(value)


@dataclass
class SamplingControls:
    digit: gr.Radio
    guidance: gr.Slider
    sampler: gr.Dropdown
    steps: gr.Slider
    seed: gr.Number
    dice: gr.Button


def sampling_controls(classroom: Classroom, digit_choices: list, default_digit: str) -> SamplingControls:
    """Digit, w, sampler, steps and seed (with a 🎲 button), defaulting to the engine's evaluated defaults."""
    digit = gr.Radio(digit_choices, value=default_digit, label="Digit")
    guidance = gr.Slider(MIN_GUIDANCE, MAX_GUIDANCE, value=DEFAULT_GUIDANCE, step=0.1, label="Guidance scale w",
                         info="0 = no guidance; larger = more like the digit, less varied; "
                              "-1 = ignore the label (ε(x,∅)); below -1 = steer away from the digit")
    sampler = gr.Dropdown(list(SAMPLERS), value=DEFAULT_SAMPLER, label="Sampler",
                          info="ddpm: the course's sampler (fresh noise every step, many steps); "
                               "ddim, dpm++2m: deterministic, few steps; dpm++2m-sde: few steps "
                               "with fresh noise, the most varied, realistic digits")
    steps = gr.Slider(1, classroom.max_steps(DEFAULT_SAMPLER), value=DEFAULT_STEPS, step=1, label="Steps",
                      info=f"network evaluations: up to {MAX_FEW_STEPS} (ddim, dpm++2m, dpm++2m-sde) or "
                           f"T = {classroom.pipe.num_train_steps} (ddpm)")
    with gr.Row():
        seed = gr.Number(0, precision=0, minimum=0, maximum=MAX_SEED, label="Seed", scale=3,
                         info="same seed + same settings = same images")
        dice = gr.Button("🎲 Random seed", scale=1)

    def fit_steps_slider(chosen, current):
        """Set the steps slider's maximum for the chosen sampler (UI only)."""
        high = classroom.max_steps(chosen if chosen in SAMPLERS else DEFAULT_SAMPLER)
        return gr.Slider(maximum=high, value=min(current, high) if is_number(current) else DEFAULT_STEPS)

    sampler.change(fit_steps_slider, [sampler, steps], steps, **UI_ONLY)
    return SamplingControls(digit, guidance, sampler, steps, seed, dice)


def samples_cap(digit, steps) -> int:
    """The most samples per digit a request may ask for with these steps: MAX_SAMPLES in all and samples × steps
    ≤ MAX_WORK (the server's own bounds), so the sliders cannot ask for work the server refuses."""
    digits = 10 if digit == ALL_DIGITS else 1
    high = MAX_SAMPLES // digits
    if is_number(steps) and steps >= 1:
        high = min(high, MAX_WORK // (digits * int(steps)))
    return max(1, high)


def fit_samples_slider(digit, samples, steps):
    """Cap the samples-per-digit slider for the chosen digit(s) and steps (UI only): more steps, fewer samples."""
    high = samples_cap(digit, steps)
    value = min(int(samples), high) if is_number(samples) and samples >= 1 else 1
    return gr.Slider(maximum=high, value=value, info=samples_info(digit, steps))


def sweep_samples_cap(digit, steps, values_of_w: int, max_work: int = MAX_WORK) -> int:
    """The most samples per digit a guidance sweep of `values_of_w` values may draw with these steps: a sweep
    draws every sample once per w, so samples × steps × values_of_w ≤ max_work (and MAX_SAMPLES in all).
    0 when not even one sample per digit fits."""
    digits = 10 if digit == ALL_DIGITS else 1
    steps = int(steps) if is_number(steps) and steps >= 1 else 1
    return min(MAX_SAMPLES // digits, max_work // (digits * steps * max(1, int(values_of_w))))


def samples_info(digit, steps) -> str:
    shown = int(steps) if is_number(steps) and steps >= 1 else None
    why = f"; with {shown} steps, at most {samples_cap(digit, steps)} per digit" if shown else ""
    return f"at most {MAX_SAMPLES} samples in all, samples × steps ≤ {MAX_WORK:,}{why}"


# --- Presenter mode: large text and images, dark, compact; a class on <body> (CSS in settings.py) ---------------
PRESENTER_JS = """(on) => {
  const body = document.body;
  if (on && !body.classList.contains("presenter")) body.dataset.wasDark = body.classList.contains("dark") ? "1" : "";
  body.classList.toggle("presenter", !!on);
  body.classList.toggle("dark", on ? true : body.dataset.wasDark === "1");
  const url = new URL(window.location.href);
  if (on) url.searchParams.set("presenter", "1"); else url.searchParams.delete("presenter");
  window.history.replaceState(null, "", url);
  window.dispatchEvent(new Event("resize"));  // plots and the tab bar measure themselves again
}"""
PRESENTER_FROM_URL_JS = "() => new URLSearchParams(window.location.search).get('presenter') === '1'"


def presenter_toggle(demo: gr.Blocks) -> gr.Checkbox:
    """The header's "Presenter mode" switch; `?presenter=1` in the address turns it on when the page opens.
    Both only toggle a class in the browser: nothing reaches the server."""
    toggle = gr.Checkbox(False, label="Presenter mode (large, dark)", container=False, elem_id="presenter-toggle",
                         elem_classes="presenter-toggle", scale=0, min_width=220)
    toggle.change(None, toggle, None, js=PRESENTER_JS, api_visibility="private")
    demo.load(None, None, toggle, js=PRESENTER_FROM_URL_JS, api_visibility="private")
    return toggle


def wrap_tabs(demo: gr.Blocks) -> None:
    """Every tab one tap away on a phone: the tab bar wraps onto more rows instead of hiding tabs behind a
    "•••" menu (the page's tabs sit in the gr.Tabs that gradio makes around them)."""
    for block in demo.blocks.values():
        if isinstance(block, gr.Tabs):
            block.overflow_behavior = "wrap"
