"""The Reverse-process tab: one digit denoised frame by frame (x_t beside the model's guess x̂₀); then a player
that plays every frame back in the browser, a slider to scrub them, a plot of when the digit becomes
recognisable, and a GIF; and all ten digits at once, as one filmstrip.
Endpoints: /reverse_process, /show_frame, /all_ten.

Two judges: the noise-aware classifier reads x_t together with its time step t (on pure noise it says
≈ 10 % for every digit: "can't tell"), so it says when x_t becomes recognisable; the trusted clean-image
classifier reads x̂₀, which is a clean-image guess. What "recognisable" means (the probability it takes, the
first frame that reaches it) is the engine's: `diffusion.recognisability`."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd
import torch

from diffusion.data import to_uint8
from diffusion.recognisability import (RECOGNISABLE_PROBABILITY, Recognisability, first_recognisable,
                                       measure_recognisability, percent_of_process)

from .classroom import Classroom, yield_to_the_network
from .controls import RANDOM_SEED_JS, FrameImage, InlineFrame, sampling_controls
from .rendering import BLUE, ORANGE, PLAYER_CSS, RED, enlarge, filmstrip, player_html, swatch, write_gif
from .settings import (ALL_DIGITS, ANIMATION_CONCURRENCY, DEFAULT_REVERSE_DIGIT, FILMSTRIP_PERCENTS, FRAME_INTERVAL_S,
                       FRAME_SCALE, FRAMES_PER_SECOND, INSTANT, MAX_STREAMED_FRAMES, PLAYER_MAX_FPS, PLAYER_MIN_FPS,
                       PLAYER_SECONDS, PLOT_POINTS, SAMPLING_CONCURRENCY, UI_ONLY)
from .validation import checked_whole_number, invalid

PLAYER_JS = (Path(__file__).parent / "player.js").read_text()  # runs in the browser (see player.js)
SHOW_IN_PLAYER_JS = "(frame) => window.reversePlayer?.show(frame)"  # the slider moves the player too

# The confidence plot's lines, and their colours: the page draws their legend (page-sized text; Vega's own legend,
# under the plot, is cut off by the plot's box)
X_T_CURVE, X0_CURVE = "x_t (noise-aware classifier)", "x̂₀ (clean-image classifier)"
RECOGNISABLE_CURVE = f"recognisable (p = {RECOGNISABLE_PROBABILITY:g})"
CURVE_COLOURS = {X_T_CURVE: BLUE, X0_CURVE: ORANGE, RECOGNISABLE_CURVE: RED}
PLOT_LEGEND = "**The plot below:** " + " · ".join(swatch(colour, curve) for curve, colour in CURVE_COLOURS.items())

# What the counter says before the first run (and after a failed one), and the filmstrip's table after a failed one
COUNTER_PROMPT = ("### Press **Run the reverse process** to watch noise become a digit\n"
                  "Frame by frame, x_t (what the sampler holds) appears beside x̂₀ (the model's guess of the clean "
                  "digit), with the time step t counting down from T to 0 and how sure two classifiers are that it is "
                  "the asked digit. Then a player replays every frame, a plot shows when the digit becomes "
                  "recognisable, and the GIF is yours to download.")
COUNTER_FAILED = ("### The last run failed (see the message)\n"
                  "Its old frames, plot, player and GIF were cleared so they are not mistaken for this request's.")
ALL_TEN_FAILED = ("*The last filmstrip request failed (see the message): its old filmstrip and table were cleared so "
                  "they are not mistaken for this request's.*")


@dataclass
class ReverseRun:
    """Every frame of one run of the reverse process: frame 0 is x_T, then one frame per step.

    t holds each frame's time step (T for x_T: pure noise is where the forward process ends); x_t and x0
    hold uint8 [28,28] images (x0 of frame 0 is black: no prediction yet); confidence_x_t is the noise-aware
    classifier's probability for the asked digit given x_t and t, confidence_x0 the clean classifier's given
    x̂₀ (None until scored: every PLOT_POINTS-th frame, the frames before the first recognisable one, and any
    frame shown).
    """

    digit: int
    num_train_steps: int
    num_inference_steps: int
    t: list[int] = field(default_factory=list)
    x_t: list[np.ndarray] | np.ndarray = field(default_factory=list)
    x0: list[np.ndarray] | np.ndarray = field(default_factory=list)
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
            self.t.append(step.t if step.index else self.num_train_steps)
            self.x_t.append(image)
            self.x0.append(guess)
            self.confidence_x_t.append(None)
            self.confidence_x0.append(None)

    def pack(self) -> None:
        """Once the run is over: its frames as two uint8 [frames,28,28] arrays, each one block of memory, for
        the run store. While it runs, frames are views into each step batch's arrays (a ddpm-500 run: a
        thousand array objects, each keeping its batch alive)."""
        self.x_t, self.x0 = np.stack(self.x_t), np.stack(self.x0)


def a_digit(d: int) -> str:
    """'a 3', 'an 8'."""
    return f"an {d}" if d == 8 else f"a {d}"


def frame_counter(run: ReverseRun, i: int) -> str:
    """'### t = 277 / 500 · step 3 of 10' and the two classifiers' verdicts, for frame i (scored)."""
    p, d = run.confidence_x_t[i], run.digit
    if i == 0:
        return (f"### x_T, pure noise · step 0 of {run.num_inference_steps}\n"
                f"The noise-aware classifier gives it {p:.0%} for {a_digit(d)} (10% for every digit is \"can't tell\").")
    return (f"### t = {run.t[i]} / {run.num_train_steps} · step {i} of {run.num_inference_steps}\n"
            f"The noise-aware classifier is {p:.0%} sure x_t is {a_digit(d)}, and the clean-image classifier "
            f"{run.confidence_x0[i]:.0%} sure the model's guess x̂₀ is.")


def frame_caption(run: ReverseRun, i: int) -> str:
    """The player's line for frame i: 'step 3 of 12 (25%) · t = 277 of 500 · p(8 | x_t) = 4% · p(8 | x̂₀) = 91%'.
    A frame that was not scored (long runs score every PLOT_POINTS-th) shows the last scored one's p, and its step."""
    S, d = run.num_inference_steps, run.digit
    words = [f"step {i} of {S} ({percent_of_process(i, S):.0f}%)", f"t = {run.t[i]} of {run.num_train_steps}"]
    if i == 0:
        words[-1] += " (x_T, pure noise)"
    k = max(j for j in range(i + 1) if run.confidence_x_t[j] is not None)  # frame 0 is always scored
    at = "" if k == i else f" (at step {k})"
    words.append(f"p({d} | x_t) = {run.confidence_x_t[k]:.0%}{at}")
    if k:
        words.append(f"p({d} | x̂₀) = {run.confidence_x0[k]:.0%}{at}")
    return " · ".join(words)


def recognition_summary(run: ReverseRun) -> str:
    """Where the asked digit first became recognisable in x_t (noise-aware classifier), and x̂₀ (clean classifier)."""
    S, T, d = run.num_inference_steps, run.num_train_steps, run.digit
    i = first_recognisable(run.confidence_x_t)
    where = (f"**recognisable at {percent_of_process(i, S):.0f}% of the process (step {i} of {S}, t = {run.t[i]} "
             f"of {T})**" if i is not None else "**not recognisable at any step of this run**")
    j = first_recognisable(run.confidence_x0)
    guess = (f"reads the model's guess x̂₀ as {a_digit(d)} from step {j} of {S} ({percent_of_process(j, S):.0f}%)"
             if j is not None else f"never reads the model's guess x̂₀ as {a_digit(d)}")
    return (f"The noise-aware classifier first recognises the {d} in x_t (p ≥ {RECOGNISABLE_PROBABILITY:.0%}): "
            f"{where}. The clean-image classifier {guess}. Press ▶ Play to watch every frame again, or drag the "
            f"slider.")


def confidence_table(run: ReverseRun) -> pd.DataFrame:
    """The two classifiers' confidence in the asked digit (x_t: noise-aware; x̂₀: clean-image) at every scored
    step, and the line at which we call a digit recognisable, as rows (step, p, curve) that the page draws
    (gr.LinePlot, in the browser: thirty students' plots cost the server nothing)."""
    scored = [i for i in range(len(run)) if run.confidence_x_t[i] is not None]
    curves = [pd.DataFrame({"step": scored, "p": [run.confidence_x_t[i] for i in scored],
                            "curve": X_T_CURVE}),
              pd.DataFrame({"step": scored[1:], "p": [run.confidence_x0[i] for i in scored[1:]],
                            "curve": X0_CURVE}),
              pd.DataFrame({"step": [0, len(run) - 1], "p": [RECOGNISABLE_PROBABILITY] * 2,
                            "curve": RECOGNISABLE_CURVE})]
    return pd.concat(curves, ignore_index=True)


def recognisability_table(found: Recognisability) -> str:
    """Markdown: where each digit of an all-ten run first became recognisable in x_t."""
    S = found.num_inference_steps
    cells = [(f"{p:.0f}%", f"{s} of {S}", f"{t}") if s >= 0 else ("never", "–", "–")
             for p, s, t in zip(found.percent, found.first_step, found.first_t)]
    rows = [f"| digit | {' | '.join(str(d) for d in found.digits)} |", "|---" * (len(cells) + 1) + "|"]
    for k, name in enumerate(("recognisable at", "step", "t")):
        rows.append(f"| {name} | {' | '.join(cell[k] for cell in cells)} |")
    return (f"Where each digit first becomes recognisable in x_t (the noise-aware classifier's p ≥ "
            f"{RECOGNISABLE_PROBABILITY:.0%}), in % of the process:\n\n" + "\n".join(rows))


class ReverseTab:
    """Handlers (their parameter names are the API's) and the layout of the Reverse-process tab."""

    def __init__(self, classroom: Classroom):
        self.classroom = classroom

    def reverse_process(self, digit, guidance, sampler, steps, seed, request: gr.Request = None):
        """Stream the denoising of one digit: x_T, then x_t, x̂0 and the step counter as the steps come (at
        most one frame per FRAME_INTERVAL_S, the newest, and at most MAX_STREAMED_FRAMES in all; every frame
        is kept for the slider); the last message adds the confidence plot, the GIF, the frame slider and the
        player (HTML with every frame: steps + 1 of them)."""
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

        # the live images show the frames as they come; the player replaces them once the run is over (both
        # stay in the page: "hidden" only hides them, so the player's script and the images' last frames stay)
        live, playback = gr.Row(visible=True), gr.Column(visible="hidden")
        for steps in handle.step_batches(interval):  # closing this generator (a closed tab) stops the run
            run.add(steps)
            # show the newest frame that came (not the last: it comes with the results), and x_T always first:
            # the noise every run starts from
            sendable = [s.index for s in steps if s.index % stride == 0 and s.index < s.total]
            shown = sendable[-1:]
            if sendable[:1] == [0] and shown != [0]:
                shown = [0] + shown
            # the plot's frames are scored as they come (so the end has little left to do), with the frames
            # shown: one request to each classifier, which batches it with the other runs' (ClassifierThread)
            self.score_frames(run, [s.index for s in steps if s.index % plot_stride == 0] + shown)
            self.refine_first_recognisable(run, plot_stride)
            for i in shown:  # inline: no file for the browser to fetch (controls.FrameImage)
                x_t, x0, counter = self.frame_outputs(run, i)
                yield InlineFrame(x_t), InlineFrame(x0), counter, *[gr.skip()] * 4, live, playback, gr.skip()
                live = playback = gr.skip()
        self.score_frames(run, [len(run) - 1])
        self.refine_first_recognisable(run, plot_stride)
        run.pack()
        x_t, x0, counter = self.frame_outputs(run, len(run) - 1)
        scrubber = gr.Slider(minimum=0, maximum=len(run) - 1, value=len(run) - 1, step=1, interactive=True)
        gif = write_gif(run.x_t, run.x0, self.classroom.work_folder, f"reverse-process-{run.digit}")
        fps = min(PLAYER_MAX_FPS, max(PLAYER_MIN_FPS, round(len(run) / PLAYER_SECONDS)))
        player = player_html(run.x_t, run.x0, [frame_caption(run, i) for i in range(len(run))], fps,
                             self.classroom.work_folder)
        yield (x_t, x0, counter + "\n\n" + recognition_summary(run), confidence_table(run), str(gif), scrubber,
               player, gr.Row(visible="hidden"), gr.Column(visible=True), self.classroom.runs.put(run))

    def refine_first_recognisable(self, run: ReverseRun, stride: int) -> None:
        """With every stride-th frame scored, also score the frames just before the first recognisable one of
        x_t and of x̂₀, so the step it is first recognised at is exact (frames already scored cost nothing)."""
        for confidences in (run.confidence_x_t, run.confidence_x0):
            first = first_recognisable(confidences)
            if first is not None and stride > 1:
                self.score_frames(run, range(max(0, first - stride + 1), first))

    def score_frames(self, run: ReverseRun, frames) -> None:
        """Score x_t (noise-aware classifier, with each frame's t) and x̂₀ (clean classifier) of these frames."""
        frames = [i for i in frames if run.confidence_x_t[i] is None]
        if not frames:
            return
        digits = [run.digit] * len(frames)
        x_t = self.classroom.noisy_image_scores(np.stack([run.x_t[i] for i in frames]), [run.t[i] for i in frames],
                                                digits).confidence_requested
        x0 = self.classroom.confidence(np.stack([run.x0[i] for i in frames]), digits)
        for j, i in enumerate(frames):
            run.confidence_x_t[i] = float(x_t[j])
            run.confidence_x0[i] = float(x0[j]) if i else 0.0  # x_T has no guess yet

    def frame_outputs(self, run: ReverseRun, i: int) -> tuple:
        self.score_frames(run, [i])
        return enlarge(run.x_t[i], FRAME_SCALE), enlarge(run.x0[i], FRAME_SCALE), frame_counter(run, i)

    def show_frame(self, frame, run_id: str | None):
        """Frame `frame` of this session's last run: x_t, x̂0, and the counter with the run's summary."""
        run = self.classroom.runs.get(run_id)
        if run is None:
            raise invalid("run the reverse process first: there are no frames to show yet" if run_id is None else
                          "this run's frames are no longer kept (the app keeps the latest runs): run it again")
        x_t, x0, counter = self.frame_outputs(run, checked_whole_number("frame", frame, 0, len(run) - 1))
        return x_t, x0, counter + "\n\n" + recognition_summary(run)

    def all_ten(self, guidance, sampler, steps, seed, request: gr.Request = None):
        """All ten digits in one request (one batch through the network server). Returns the filmstrip, uint8
        [H,W]: row d is digit d; at the step nearest each of FILMSTRIP_PERCENTS of the process, x_t beside x̂₀
        under a header (that step's "25%", "t = 375"; layout: rendering.filmstrip_cell), and Markdown: where each
        digit first became recognisable in x_t."""
        checked = self.classroom.sampling_request(ALL_DIGITS, 1, guidance, sampler, steps, seed)
        S, T = checked.num_inference_steps, self.classroom.pipe.num_train_steps
        picks = [round(p * S / 100) for p in FILMSTRIP_PERCENTS]  # the frame (step) at each percentage
        kept = {}

        def keep_picks(steps):
            for step in steps:
                if step.index in picks:
                    kept[step.index] = step
                yield step

        yield_to_the_network()
        with self.classroom.sampling_slots.slot(request):
            steps = self.classroom.server.submit(checked, stream=True).steps()
            # the measurement stops following once every digit is recognisable; the filmstrip needs the rest
            found = measure_recognisability(keep_picks(steps), checked.digits, self.classroom.noisy_probabilities,
                                            T)
            for _ in keep_picks(steps):
                pass
        x_t = np.stack([to_uint8(kept[i].x) for i in picks])  # [columns, 10, 28, 28]
        x0 = np.stack([to_uint8(kept[i].x0) if i else np.zeros_like(x_t[0]) for i in picks])  # x_T: no guess yet
        headers = [(f"{percent_of_process(i, S):.0f}%", f"t = {kept[i].t if i else T}") for i in picks]
        return filmstrip(x_t, x0, headers, [str(d) for d in checked.digits]), recognisability_table(found)

    @staticmethod
    def cleared_after_failure():
        """What the outputs show after a failed /reverse_process: no stale results (UI only). The live images'
        row comes back and the player's column hides, as before a first run; the frame slider has nothing to
        scrub; the session forgets its last run."""
        scrubber = gr.Slider(minimum=0, maximum=1, value=0, interactive=False)
        return (None, None, COUNTER_FAILED, None, None, scrubber, "", gr.Row(visible=True),
                gr.Column(visible="hidden"), None)

    @staticmethod
    def all_ten_cleared_after_failure():
        """What the filmstrip and its table show after a failed /all_ten (UI only)."""
        return None, ALL_TEN_FAILED

    def layout(self) -> None:
        """Build the tab inside the current gr.Tab."""
        gr.Markdown("Watch the model turn pure noise x_T into a digit. Left: x_t, what the sampler holds at step t. "
                    "Right: x̂₀, the network's current guess of the clean digit. At what point can you first "
                    "recognise the digit? Once the run is over, play it back as slowly as you like.")
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                c = sampling_controls(self.classroom, [str(d) for d in range(10)], DEFAULT_REVERSE_DIGIT)
                run_button = gr.Button("Run the reverse process", variant="primary")
                all_ten_button = gr.Button("All ten digits at once (filmstrip)")
            with gr.Column(scale=2):
                counter = gr.Markdown(COUNTER_PROMPT, elem_id="step-counter")
                with gr.Row() as live:
                    x_t = FrameImage(label="x_t (noisy image)", format="png", height=240, interactive=False,
                                     elem_classes="pixels", elem_id="x-t")
                    x0 = FrameImage(label="x̂₀ (model's guess of the clean digit)", format="png", height=240,
                                    interactive=False, elem_classes="pixels", elem_id="x0-hat")
                with gr.Column(visible="hidden") as playback:
                    player = gr.HTML("", js_on_load=PLAYER_JS, css_template=PLAYER_CSS, elem_id="player")
                scrubber = gr.Slider(0, 1, value=0, step=1, label="Frame (scrub after a run)", interactive=False,
                                     elem_id="scrubber")
                gr.Markdown(PLOT_LEGEND, elem_id="confidence-legend")
                plot = gr.LinePlot(x="step", y="p", color="curve", y_lim=[0, 1.05], height=340,
                                   color_map=CURVE_COLOURS, colors_in_legend=[],
                                   title="When does the digit become recognisable?",
                                   # axis titles in the label: at presenter size Vega's titles ran into the ticks
                                   # (" ": gradio would fall back to the column names)
                                   x_title=" ", y_title=" ", x_axis_format="d",
                                   label="Classifier confidence p(the asked digit) (up) at each step (across; t "
                                         "counts down from T to 0)",
                                   elem_id="confidence-plot")
                gif = gr.File(label="Download the animation (GIF)", elem_id="gif")
        gr.Markdown(f"### All ten digits at once\nOne request, one batch: each row a digit, x_t beside x̂₀ at the "
                    f"steps nearest {', '.join(f'{p}%' for p in FILMSTRIP_PERCENTS)} of the process (the settings "
                    f"on the left).")
        strip = gr.Image(label="All ten digits along the reverse process", show_label=False, format="png",
                         interactive=False, elem_id="all-ten")
        strip_table = gr.Markdown(elem_id="all-ten-table")
        run_state = gr.State(None)  # the id of this session's last run in the classroom's run store
        inputs = [c.digit, c.guidance, c.sampler, c.steps, c.seed]
        outputs = [x_t, x0, counter, plot, gif, scrubber, player, live, playback, run_state]
        animation = {"concurrency_id": "animation", "concurrency_limit": ANIMATION_CONCURRENCY, "preprocess": False,
                     "show_progress": "minimal"}
        # a failed request clears its outputs: an error must not leave another run's frames on show
        run_button.click(self.reverse_process, inputs, outputs, api_name="reverse_process", **animation).failure(
            self.cleared_after_failure, None, outputs, **UI_ONLY)
        c.dice.click(None, js=RANDOM_SEED_JS, outputs=c.seed, api_visibility="private").then(
            self.reverse_process, inputs, outputs, api_visibility="private", **animation).failure(
            self.cleared_after_failure, None, outputs, **UI_ONLY)
        scrubber.input(None, scrubber, None, js=SHOW_IN_PLAYER_JS, api_visibility="private")
        scrubber.input(self.show_frame, [scrubber, run_state], [x_t, x0, counter], api_name="show_frame",
                       trigger_mode="always_last", show_progress="hidden", **INSTANT)
        all_ten_button.click(self.all_ten, inputs[1:], [strip, strip_table], api_name="all_ten",
                             concurrency_id="sampling", concurrency_limit=SAMPLING_CONCURRENCY, preprocess=False
                             ).failure(self.all_ten_cleared_after_failure, None, [strip, strip_table], **UI_ONLY)
