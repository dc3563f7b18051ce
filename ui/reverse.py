"""The Reverse-process tab: one digit denoised frame by frame (x_t beside the model's guess x̂₀), then a
slider to scrub the frames, a plot of when the classifier first recognises the digit, and a GIF.
Endpoints: /reverse_process, /show_frame."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import gradio as gr
import numpy as np

from diffusion.batching import request_steps
from diffusion.data import to_uint8

from .classroom import Classroom
from .controls import RANDOM_SEED_JS, sampling_controls
from .rendering import enlarge, new_figure, write_gif
from .settings import (ANIMATION_CONCURRENCY, DEFAULT_REVERSE_DIGIT, FRAME_SCALE, INSTANT, MAX_STREAMED_FRAMES,
                       RECOGNISABLE)
from .validation import checked_whole_number, invalid


@dataclass
class ReverseRun:
    """Every frame of one run of the reverse process: frame 0 is x_T, then one frame per step.

    t holds each frame's time step (None for x_T: the sampler decides where it starts); x_t and x0
    hold uint8 [28,28] images (x0 of frame 0 is black: no prediction yet); the confidences are the
    classifier's probability for the asked digit.
    """

    digit: int
    num_train_steps: int
    num_inference_steps: int
    t: list[int | None] = field(default_factory=list)
    x_t: list[np.ndarray] = field(default_factory=list)
    x0: list[np.ndarray] = field(default_factory=list)
    confidence_x_t: list[float] = field(default_factory=list)
    confidence_x0: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.t)


def first_recognisable(confidences: list[float]) -> int | None:
    """Index of the first frame whose confidence reaches RECOGNISABLE, or None."""
    return next((i for i, p in enumerate(confidences) if p >= RECOGNISABLE), None)


def time_label(run: ReverseRun, i: int) -> str:
    """'t = 277' for frame i, 'x_T' for the starting noise."""
    return "x_T" if run.t[i] is None else f"t = {run.t[i]}"


def frame_counter(run: ReverseRun, i: int) -> str:
    """'t = 277 / 500 · step 3 of 10 · …' for frame i."""
    if i == 0:
        return (f"### x_T, pure noise · step 0 of {run.num_inference_steps}\n"
                f"The classifier gives it {run.confidence_x_t[0]:.0%} for a {run.digit}.")
    return (f"### t = {run.t[i]} / {run.num_train_steps} · step {i} of {run.num_inference_steps}\n"
            f"The classifier is {run.confidence_x_t[i]:.0%} sure x_t is a {run.digit}, "
            f"and {run.confidence_x0[i]:.0%} sure the model's guess x̂₀ is.")


def recognition_summary(run: ReverseRun) -> str:
    parts = []
    for name, confidences in (("x_t", run.confidence_x_t), ("x̂₀", run.confidence_x0)):
        i = first_recognisable(confidences)
        parts.append(f"in {name} at step {i} ({time_label(run, i)})" if i is not None else f"never in {name}")
    return (f"The classifier first recognises the {run.digit} (p ≥ {RECOGNISABLE:.0%}) "
            f"{parts[0]}, and {parts[1]}. Drag the slider to scrub through the frames.")


def confidence_figure(run: ReverseRun):
    """The classifier's confidence in the asked digit for x_t and x̂0 at every step; the first
    recognisable step of each is marked."""
    fig = new_figure(7, 3.2)
    ax = fig.subplots()
    frames = np.arange(len(run))
    for name, confidences, start, color in (("x_t (the noisy image)", run.confidence_x_t, 0, "tab:blue"),
                                            ("x̂₀ (the model's guess)", run.confidence_x0, 1, "tab:orange")):
        ax.plot(frames[start:], confidences[start:], marker="o" if len(run) <= 60 else None,
                markersize=3, color=color, label=name)
        i = first_recognisable(confidences)
        if i is not None:
            ax.axvline(i, color=color, linestyle="--", linewidth=1)
            ax.annotate(f"recognisable: step {i}, {time_label(run, i)}", (i, RECOGNISABLE), color=color, fontsize=8,
                        xytext=(4, -14 if start else 6), textcoords="offset points")
    ax.axhline(RECOGNISABLE, color="gray", linestyle=":", linewidth=1)
    ticks = np.unique(np.linspace(0, len(run) - 1, min(len(run), 12)).round().astype(int))
    ax.set_xticks(ticks, [f"{i}\n{time_label(run, i).replace(' ', '')}" for i in ticks])
    ax.set(xlabel="step (t counts down from T to 0)", ylabel=f"p(it is a {run.digit})", ylim=(-0.02, 1.05),
           title=f"When does the classifier recognise the {run.digit}?")
    fig.legend(fontsize=8, loc="outside lower center", ncols=2)
    return fig


class ReverseTab:
    """Handlers (their parameter names are the API's) and the layout of the Reverse-process tab."""

    def __init__(self, classroom: Classroom):
        self.classroom = classroom

    def reverse_process(self, digit, guidance, sampler, steps, seed, request: gr.Request = None):
        """Stream the denoising of one digit: x_T, then after each step x_t, x̂0 and the step counter, one frame
        at a time as they come (at most MAX_STREAMED_FRAMES; all are kept for the slider); the last message
        adds the confidence plot, the GIF and the frame slider."""
        checked = self.classroom.sampling_request(digit, 1, guidance, sampler, steps, seed, allow_all=False)
        with self.classroom.sampling_slots.slot(request):
            yield from self.stream(checked)

    def stream(self, request):
        engine_request = self.classroom.engine_request(request)
        run = ReverseRun(request.digits[0], self.classroom.pipe.num_train_steps, request.num_inference_steps)
        self.add_frame(run, None, to_uint8(engine_request.x_T)[0], np.zeros((28, 28), np.uint8))
        yield *self.frame_outputs(run, 0), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        stride = math.ceil(request.num_inference_steps / MAX_STREAMED_FRAMES)  # long ddpm runs: every stride-th
        pipe = self.classroom.pipe
        for step in request_steps(pipe.model, pipe.schedule, engine_request):
            self.add_frame(run, step.t, to_uint8(step.x)[0], to_uint8(step.x0)[0])
            if step.index % stride == 0 and step.index < step.total:  # the last frame comes with the results
                yield *self.frame_outputs(run, len(run) - 1), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        x_t, x0, counter = self.frame_outputs(run, len(run) - 1)
        scrubber = gr.Slider(minimum=0, maximum=len(run) - 1, value=len(run) - 1, step=1, interactive=True)
        gif = write_gif(run.x_t, run.x0, self.classroom.work_folder, f"reverse-process-{run.digit}")
        yield x_t, x0, counter + "\n\n" + recognition_summary(run), confidence_figure(run), str(gif), scrubber, run

    def add_frame(self, run: ReverseRun, t: int | None, x_t: np.ndarray, x0: np.ndarray) -> None:
        confidence_x_t, confidence_x0 = self.classroom.confidence(np.stack([x_t, x0]), [run.digit] * 2)
        run.t.append(t)
        run.x_t.append(x_t)
        run.x0.append(x0)
        run.confidence_x_t.append(float(confidence_x_t))
        run.confidence_x0.append(float(confidence_x0) if len(run) > 1 else 0.0)

    @staticmethod
    def frame_outputs(run: ReverseRun, i: int) -> tuple:
        return enlarge(run.x_t[i], FRAME_SCALE), enlarge(run.x0[i], FRAME_SCALE), frame_counter(run, i)

    def show_frame(self, frame, run: ReverseRun | None):
        """Frame `frame` of this session's last run (x_t, x̂0, counter)."""
        if not isinstance(run, ReverseRun):
            raise invalid("run the reverse process first: there are no frames to show yet")
        return self.frame_outputs(run, checked_whole_number("frame", frame, 0, len(run) - 1))

    def layout(self) -> None:
        """Build the tab inside the current gr.Tab."""
        gr.Markdown("Watch the model turn pure noise x_T into a digit. Left: x_t, what the sampler holds at step t. "
                    "Right: x̂₀, the network's current guess of the clean digit. At what point can you first "
                    "recognise the digit?")
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                c = sampling_controls(self.classroom, [str(d) for d in range(10)], DEFAULT_REVERSE_DIGIT)
                run_button = gr.Button("Run the reverse process", variant="primary")
            with gr.Column(scale=2):
                counter = gr.Markdown("### t = – / –", elem_id="step-counter")
                with gr.Row():
                    x_t = gr.Image(label="x_t (noisy image)", format="png", height=240, interactive=False,
                                   elem_classes="pixels", elem_id="x-t")
                    x0 = gr.Image(label="x̂₀ (model's guess of the clean digit)", format="png", height=240,
                                  interactive=False, elem_classes="pixels", elem_id="x0-hat")
                scrubber = gr.Slider(0, 1, value=0, step=1, label="Frame (scrub after a run)", interactive=False,
                                     elem_id="scrubber")
                plot = gr.Plot(label="Classifier confidence across steps", show_label=False, format="png",
                               elem_id="confidence-plot")
                gif = gr.File(label="Download the animation (GIF)", elem_id="gif")
        run_state = gr.State(None)
        inputs = [c.digit, c.guidance, c.sampler, c.steps, c.seed]
        outputs = [x_t, x0, counter, plot, gif, scrubber, run_state]
        animation = {"concurrency_id": "animation", "concurrency_limit": ANIMATION_CONCURRENCY, "preprocess": False,
                     "show_progress": "minimal"}
        run_button.click(self.reverse_process, inputs, outputs, api_name="reverse_process", **animation)
        c.dice.click(None, js=RANDOM_SEED_JS, outputs=c.seed, api_visibility="private").then(
            self.reverse_process, inputs, outputs, api_visibility="private", **animation)
        scrubber.input(self.show_frame, [scrubber, run_state], [x_t, x0, counter], api_name="show_frame",
                       trigger_mode="always_last", show_progress="hidden", **INSTANT)
