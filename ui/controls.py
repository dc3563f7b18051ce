"""The sampling controls the Generate and Reverse-process tabs share: digit, w, sampler, steps, seed."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from diffusion.requests import DEFAULT_GUIDANCE, DEFAULT_SAMPLER, DEFAULT_STEPS, is_number
from diffusion.sampling import SAMPLERS

from .classroom import Classroom
from .settings import MAX_FEW_STEPS, MAX_GUIDANCE, MAX_SEED, MIN_GUIDANCE, UI_ONLY

RANDOM_SEED_JS = f"() => Math.floor(Math.random() * {MAX_SEED})"


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
