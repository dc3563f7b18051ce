"""The Reverse-process tab: one digit denoised frame by frame (x_t beside the model's guess x̂₀), then a
slider to scrub the frames, a plot of when the classifier first recognises the digit, and a GIF.
Endpoints: /reverse_process, /show_frame."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import gradio as gr
import numpy as np
import pandas as pd
import torch

from diffusion.data import to_uint8

from .classroom import Classroom, yield_to_the_network
from .controls import RANDOM_SEED_JS, sampling_controls
from .rendering import enlarge, write_gif
from .settings import (ANIMATION_CONCURRENCY, DEFAULT_REVERSE_DIGIT, FRAME_INTERVAL_S, FRAME_SCALE, FRAMES_PER_SECOND,
                       INSTANT,
                       MAX_STREAMED_FRAMES, PLOT_POINTS,
                       RECOGNISABLE)
from .validation import checked_whole_number, invalid


@dataclass
class ReverseRun:
    """Every frame of one run of the reverse process: frame 0 is x_T, then one frame per step.

    t holds each frame's time step (None for x_T: the sampler decides where it starts); x_t and x0
    hold uint8 [28,28] images (x0 of frame 0 is black: no prediction yet); the confidences are the
    classifier's probability for the asked digit (None until scored: all are, once the run is over).
    """

    digit: int
    num_train_steps: int
    num_inference_steps: int
    t: list[int | None] = field(default_factory=list)
    x_t: list[np.ndarray] = field(default_factory=list)
    x0: list[np.ndarray] = field(default_factory=list)
    confidence_x_t: list[float | None] = field(default_factory=list)
    confidence_x0: list[float | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.t)

    @property
    def nbytes(self) -> int:
        """Memory its frames take (for the run store's budget)."""
        return 2 * 28 * 28 * len(self) + 64 * len(self)

    def add(self, steps: list) -> None:
        """Steps from the network server (step 0 is x_T), converted to images together: two torch calls for
        the lot, not two per step (each call hands the interpreter to other threads and back)."""
        x_t = to_uint8(torch.cat([step.x for step in steps]))
        x0 = to_uint8(torch.cat([step.x0 if step.x0 is not None else torch.full_like(step.x, -1) for step in steps]))
        for step, image, guess in zip(steps, x_t, x0):
            self.t.append(step.t if step.index else None)
            self.x_t.append(image)
            self.x0.append(guess)
            self.confidence_x_t.append(None)
            self.confidence_x0.append(None)


def first_recognisable(confidences: list[float | None]) -> int | None:
    """Index of the first scored frame whose confidence reaches RECOGNISABLE, or None."""
    return next((i for i, p in enumerate(confidences) if p is not None and p >= RECOGNISABLE), None)


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


def confidence_table(run: ReverseRun) -> pd.DataFrame:
    """The classifier's confidence in the asked digit for x_t and x̂0 at every step, and the line at which
    we call a digit recognisable, as rows (step, p, curve) that the page draws (gr.LinePlot, in the browser:
    thirty students' plots cost the server nothing)."""
    scored = [i for i in range(len(run)) if run.confidence_x_t[i] is not None]
    curves = [pd.DataFrame({"step": scored, "p": [run.confidence_x_t[i] for i in scored], "curve": "x_t (the noisy image)"}),
              pd.DataFrame({"step": scored[1:], "p": [run.confidence_x0[i] for i in scored[1:]],
                            "curve": "x̂₀ (the model's guess)"}),
              pd.DataFrame({"step": [0, len(run) - 1], "p": [RECOGNISABLE] * 2,
                            "curve": f"recognisable (p = {RECOGNISABLE:g})"})]
    return pd.concat(curves, ignore_index=True)


class ReverseTab:
    """Handlers (their parameter names are the API's) and the layout of the Reverse-process tab."""

    def __init__(self, classroom: Classroom):
        self.classroom = classroom

    def reverse_process(self, digit, guidance, sampler, steps, seed, request: gr.Request = None):
        """Stream the denoising of one digit: x_T, then x_t, x̂0 and the step counter as the steps come (at
        most one frame per FRAME_INTERVAL_S, the newest, and at most MAX_STREAMED_FRAMES in all; every frame
        is kept for the slider); the last message adds the confidence plot, the GIF and the frame slider."""
        checked = self.classroom.sampling_request(digit, 1, guidance, sampler, steps, seed, allow_all=False)
        with self.classroom.sampling_slots.slot(request):
            yield from self.stream(checked)

    def stream(self, request):
        yield_to_the_network()
        run = ReverseRun(request.digits[0], self.classroom.pipe.num_train_steps, request.num_inference_steps)
        stride = math.ceil(request.num_inference_steps / MAX_STREAMED_FRAMES)  # long ddpm runs: every stride-th
        plot_stride = math.ceil(request.num_inference_steps / PLOT_POINTS)
        handle = self.classroom.server.submit(request, stream=True)
        # At most FRAMES_PER_SECOND frames a second for the whole class: a student alone sees 10 a second,
        # thirty see one each; every frame is there for playback once the run is over.
        server = self.classroom.server

        def interval() -> float:
            return max(FRAME_INTERVAL_S, server.streams() / FRAMES_PER_SECOND)

        for steps in handle.step_batches(interval):  # closing this generator (a closed tab) stops the run
            run.add(steps)
            # the plot's frames are scored as they come, so the end has little left to do
            self.score_frames(run, [s.index for s in steps if s.index % plot_stride == 0])
            self.refine_first_recognisable(run, plot_stride)
            shown = [s.index for s in steps if s.index % stride == 0 and s.index < s.total]
            if shown:  # the last frame comes with the results
                yield *self.frame_outputs(run, shown[-1]), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        self.score_frames(run, [len(run) - 1])
        self.refine_first_recognisable(run, plot_stride)
        x_t, x0, counter = self.frame_outputs(run, len(run) - 1)
        scrubber = gr.Slider(minimum=0, maximum=len(run) - 1, value=len(run) - 1, step=1, interactive=True)
        gif = write_gif(run.x_t, run.x0, self.classroom.work_folder, f"reverse-process-{run.digit}")
        yield (x_t, x0, counter + "\n\n" + recognition_summary(run), confidence_table(run), str(gif), scrubber,
               self.classroom.runs.put(run))

    def refine_first_recognisable(self, run: ReverseRun, stride: int) -> None:
        """With every stride-th frame scored, also score the frames just before the first recognisable one of
        x_t and of x̂₀, so the step it is first recognised at is exact (frames already scored cost nothing)."""
        for confidences in (run.confidence_x_t, run.confidence_x0):
            first = first_recognisable(confidences)
            if first is not None and stride > 1:
                self.score_frames(run, range(max(0, first - stride + 1), first))

    def score_frames(self, run: ReverseRun, frames) -> None:
        """The classifier's confidence in the asked digit for x_t and x̂0 of these frames, in one batch."""
        frames = [i for i in frames if run.confidence_x_t[i] is None]
        if not frames:
            return
        images = np.stack([run.x_t[i] for i in frames] + [run.x0[i] for i in frames])
        confidence = self.classroom.confidence(images, [run.digit] * len(images))
        for j, i in enumerate(frames):
            run.confidence_x_t[i] = float(confidence[j])
            run.confidence_x0[i] = float(confidence[len(frames) + j]) if i else 0.0

    def frame_outputs(self, run: ReverseRun, i: int) -> tuple:
        self.score_frames(run, [i])
        return enlarge(run.x_t[i], FRAME_SCALE), enlarge(run.x0[i], FRAME_SCALE), frame_counter(run, i)

    def show_frame(self, frame, run_id: str | None):
        """Frame `frame` of this session's last run (x_t, x̂0, counter)."""
        run = self.classroom.runs.get(run_id)
        if run is None:
            raise invalid("run the reverse process first: there are no frames to show yet" if run_id is None else
                          "this run's frames are no longer kept (the app keeps the latest runs): run it again")
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
                plot = gr.LinePlot(x="step", y="p", color="curve", y_lim=[0, 1.05], height=300,
                                   title="When does the classifier recognise the digit?",
                                   x_title="step (t counts down from T to 0)", y_title="p(the asked digit)",
                                   label="Classifier confidence across steps", elem_id="confidence-plot")
                gif = gr.File(label="Download the animation (GIF)", elem_id="gif")
        run_state = gr.State(None)  # the id of this session's last run in the classroom's run store
        inputs = [c.digit, c.guidance, c.sampler, c.steps, c.seed]
        outputs = [x_t, x0, counter, plot, gif, scrubber, run_state]
        animation = {"concurrency_id": "animation", "concurrency_limit": ANIMATION_CONCURRENCY, "preprocess": False,
                     "show_progress": "minimal"}
        run_button.click(self.reverse_process, inputs, outputs, api_name="reverse_process", **animation)
        c.dice.click(None, js=RANDOM_SEED_JS, outputs=c.seed, api_visibility="private").then(
            self.reverse_process, inputs, outputs, api_visibility="private", **animation)
        scrubber.input(self.show_frame, [scrubber, run_state], [x_t, x0, counter], api_name="show_frame",
                       trigger_mode="always_last", show_progress="hidden", **INSTANT)
