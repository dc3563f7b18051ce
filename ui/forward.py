"""The Forward-noising tab: a real MNIST test digit, an upload or a drawing, noised under any β schedule,
β range and T; x_t at the chosen t, a strip of x_t at evenly spaced t, and ᾱ(t) and log-SNR for every
schedule. Endpoints: /shipped_digit, /load_image, /load_drawing, /forward_noising, /noise_at_t."""
from __future__ import annotations

import functools

import gradio as gr
import numpy as np
import torch

from diffusion.data import to_model_range, to_uint8
from diffusion.requests import is_number
from diffusion.schedules import DEFAULT_BETA_RANGE, SCHEDULE_NAMES, NoiseSchedule

from .classroom import Classroom
from .rendering import enlarge, schedule_plot
from .settings import (FRAME_SCALE, INSTANT, LATEX, LIGHT_CONCURRENCY, MAX_FORWARD_T, MAX_SEED, SAMPLE_SCALE,
                       STRIP_FRAMES, UI_ONLY)
from .uploads import read_digit, read_photo_digit
from .validation import checked_real_number, checked_whole_number, invalid, one_of


@functools.lru_cache(maxsize=64)
def noise_schedule(name: str, num_train_steps: int, beta_start: float, beta_end: float) -> NoiseSchedule:
    """The engine's schedule (cached: the forward-noising slider asks for the same one many times)."""
    try:
        return NoiseSchedule.create(name, num_train_steps, beta_start, beta_end)
    except ValueError as e:
        raise invalid(str(e)) from None


class ForwardTab:
    """Handlers (their parameter names are the API's) and the layout of the Forward-noising tab."""

    def __init__(self, classroom: Classroom):
        self.classroom = classroom

    def shipped_choices(self) -> list[tuple[str, int]]:
        c = self.classroom
        return [(f"#{i}: a {y} (MNIST test image {k})", i)
                for i, (y, k) in enumerate(zip(c.shipped_labels, c.shipped_test_index))]

    def example_upload(self) -> np.ndarray:
        """The upload box's example (and /load_image's default): a shipped digit, dark on white, 5× larger."""
        return 255 - enlarge(self.classroom.shipped_images[20], 5)

    def shipped_digit(self, index):
        """x₀ = one of the real MNIST test digits shipped with the repo (index 0 … 29, a number or its digits
        as text), enlarged."""
        images = self.classroom.shipped_images
        if isinstance(index, str) and index.isascii() and index.isdigit() and len(index) <= 3:
            index = int(index)
        return enlarge(images[checked_whole_number("shipped digit index", index, 0, len(images) - 1)], FRAME_SCALE)

    def load_image(self, image, request: gr.Request = None):
        """x₀ from an uploaded image: any size, light or dark background, shrunk to 28×28, enlarged. A picture
        that is not one digit on a plain background (a photo's uneven background, too little contrast) is
        refused, saying why."""
        with self.classroom.image_slots.slot(request):
            digit, _ = read_photo_digit(image, "image")
            return enlarge(digit, FRAME_SCALE)

    def upload_note(self, image, request: gr.Request = None):
        """The note beside x₀ after an upload: what the app did with the picture, or why it refused it (UI only)."""
        if image is None:
            return ""
        try:
            with self.classroom.image_slots.slot(request):
                _, note = read_photo_digit(image, "image")
            return note
        except gr.Error as e:
            return f"**Upload refused:** {e.message} x₀ is unchanged."

    def load_drawing(self, drawing, request: gr.Request = None):
        """x₀ from the sketchpad (its composite picture), shrunk to 28×28, enlarged."""
        composite = drawing.get("composite") if isinstance(drawing, dict) else None
        with self.classroom.image_slots.slot(request):
            return enlarge(read_digit(composite, "drawing"), FRAME_SCALE)

    def forward_noising(self, image, schedule, beta_start, beta_end, num_steps, t, seed, request: gr.Request = None):
        """x_t at the chosen t (with ᾱ_t), a strip of x_t at evenly spaced t, and the schedules plot."""
        with self.classroom.image_slots.slot(request):
            x0, sched, t, noise = self.forward_inputs(image, schedule, beta_start, beta_end, num_steps, t, seed)
        strip_t = np.linspace(0, sched.num_train_steps, STRIP_FRAMES).round().astype(int)
        strip = to_uint8(sched.q_sample(x0.expand(len(strip_t), -1, -1, -1), torch.from_numpy(strip_t),
                                        noise.expand(len(strip_t), -1, -1, -1)))
        x_t, formula = self.noisy(x0, sched, t, noise)
        every_schedule = {name: noise_schedule(name, sched.num_train_steps, sched.beta_start, sched.beta_end)
                          for name in SCHEDULE_NAMES}
        return (x_t, formula, [(enlarge(img, SAMPLE_SCALE), f"t = {s}") for img, s in zip(strip, strip_t)],
                schedule_plot(self.classroom.work_folder, every_schedule, sched.name))

    def noise_at_t(self, image, schedule, beta_start, beta_end, num_steps, t, seed, request: gr.Request = None):
        """Only x_t at the chosen t, with ᾱ_t: what the t slider asks for (fast)."""
        with self.classroom.image_slots.slot(request):
            return self.noisy(*self.forward_inputs(image, schedule, beta_start, beta_end, num_steps, t, seed))

    @staticmethod
    def forward_inputs(image, schedule, beta_start, beta_end, num_steps, t, seed):
        """Checked inputs: x₀ float [1,1,28,28] in [-1,1], the schedule, t, and the noise ε [1,1,28,28]."""
        x0 = to_model_range(read_digit(image, "x₀"))
        name = one_of("schedule", schedule, SCHEDULE_NAMES)
        beta_start = checked_real_number("β start", beta_start, 0, 1)
        beta_end = checked_real_number("β end", beta_end, 0, 1)
        if name == "cosine":  # it ignores the β range: any range is fine, and the comparison plot uses the default
            beta_start, beta_end = DEFAULT_BETA_RANGE
        sched = noise_schedule(name, checked_whole_number("T", num_steps, 1, MAX_FORWARD_T), beta_start, beta_end)
        t = checked_whole_number(f"t (with T = {sched.num_train_steps})", t, 0, sched.num_train_steps)
        generator = torch.Generator().manual_seed(checked_whole_number("seed", seed, 0, MAX_SEED))
        return x0, sched, t, torch.randn((1, 1, 28, 28), generator=generator)

    @staticmethod
    def noisy(x0: torch.Tensor, sched: NoiseSchedule, t: int, noise: torch.Tensor) -> tuple[np.ndarray, str]:
        x_t = to_uint8(sched.q_sample(x0, torch.tensor([t]), noise))[0]
        signal, noise_scale = sched.scales(t)
        formula = (f"**t = {t}:** ᾱ_t = {sched.alpha_bar[t].item():.4f}, so x_t = {signal:.3f}·x₀ + "
                   f"{noise_scale:.3f}·ε  (ε is fixed by the seed, so moving t fades x₀ into the same noise)")
        return enlarge(x_t, FRAME_SCALE), formula

    @staticmethod
    def fit_beta_inputs(schedule):
        """β start and β end are editable only for the schedules that use them (cosine ignores them; UI only)."""
        used = schedule != "cosine"
        info = None if used else "the cosine schedule ignores it"
        return gr.Number(interactive=used, info=info), gr.Number(interactive=used, info=info)

    @staticmethod
    def cleared_after_failure():
        """After a failed forward-noising request: no stale x_t, strip or plot from other settings (UI only)."""
        return None, "**That setting was refused** (see the message): x_t, the strip and the plot were cleared.", \
            None, None

    @staticmethod
    def fit_t_slider(num_steps, t):
        """Keep the t slider inside 0 … T when T changes (UI only)."""
        num_steps = num_steps if is_number(num_steps) and 1 <= num_steps <= MAX_FORWARD_T else MAX_FORWARD_T
        value = min(t, num_steps) if is_number(t) else num_steps // 2
        return gr.Slider(maximum=int(num_steps), value=int(value))

    def layout(self) -> dict:
        """Build the tab inside the current gr.Tab; returns the forward-noising event's arguments (the page
        load runs it too)."""
        gr.Markdown("Forward diffusion adds Gaussian noise: $x_t = \\sqrt{\\bar\\alpha_t}\\,x_0 + "
                    "\\sqrt{1-\\bar\\alpha_t}\\,\\varepsilon$. Pick a real MNIST test digit, upload an image or draw "
                    "one, then choose the β schedule and move t.", latex_delimiters=LATEX)
        model_schedule = self.classroom.pipe.schedule
        with gr.Row():
            with gr.Column(scale=2):
                shipped = gr.Dropdown(self.shipped_choices(), value=0, label="A real MNIST test digit")
                with gr.Row():
                    upload = gr.Image(self.example_upload(), label="…or upload an image (any size; dark ink on "
                                      "white is inverted)", type="filepath", sources=["upload", "clipboard"],
                                      format="png", height=200, elem_id="upload")
                    with gr.Column():
                        sketch = gr.Sketchpad(value=np.zeros((280, 280, 3), np.uint8), canvas_size=(280, 280),
                                              fixed_canvas=True, label="…or draw one (white on black)", format="png",
                                              brush=gr.Brush(default_size=22, colors=["#ffffff"], color_mode="fixed"),
                                              layers=False, elem_id="sketch")
                        use_drawing = gr.Button("Use my drawing")
            with gr.Column(scale=1):
                x0 = gr.Image(self.shipped_digit(0), label="x₀ (28×28)", type="filepath", format="png", height=240,
                              interactive=False, elem_classes="pixels", elem_id="x0")
                upload_note = gr.Markdown(elem_id="upload-note")
        with gr.Row():
            schedule = gr.Radio(list(SCHEDULE_NAMES), value=model_schedule.name, label="β schedule")
            uses_betas = model_schedule.name != "cosine"
            beta_start = gr.Number(model_schedule.beta_start, label="β start", step=1e-4, minimum=0, maximum=1,
                                   interactive=uses_betas, elem_id="beta-start")
            beta_end = gr.Number(model_schedule.beta_end, label="β end", step=1e-3, minimum=0, maximum=1,
                                 interactive=uses_betas, elem_id="beta-end")
            num_steps = gr.Slider(1, MAX_FORWARD_T, value=model_schedule.num_train_steps, step=1, label="T (steps)",
                                  elem_id="T-slider")
            seed = gr.Number(0, precision=0, minimum=0, maximum=MAX_SEED, label="Noise seed")
        t = gr.Slider(0, model_schedule.num_train_steps, value=model_schedule.num_train_steps // 4, step=1,
                      label="t", elem_id="t-slider")
        with gr.Row():
            with gr.Column(scale=1):
                x_t = gr.Image(label="x_t", format="png", height=240, interactive=False, elem_classes="pixels",
                               elem_id="forward-x-t")
                formula = gr.Markdown(elem_id="forward-formula")
            plot = gr.Image(label="ᾱ(t) and log-SNR for every schedule (matplotlib)", show_label=False,
                            format="png", interactive=False, elem_id="schedule-plot", scale=2)
        strip = gr.Gallery(label="x_t at evenly spaced t", columns=STRIP_FRAMES, height=170, format="png",
                           object_fit="contain", elem_classes="pixels", elem_id="strip")

        light = {"preprocess": False, "concurrency_id": "light", "concurrency_limit": LIGHT_CONCURRENCY}
        shipped.input(self.shipped_digit, shipped, x0, api_name="shipped_digit", **light)
        upload.upload(self.load_image, upload, x0, api_name="load_image", **light).then(
            self.upload_note, upload, upload_note, api_visibility="private", **light)
        for picked in (shipped.input, use_drawing.click):
            picked(lambda: "", None, upload_note, **UI_ONLY)
        use_drawing.click(self.load_drawing, sketch, x0, api_name="load_drawing", **light)
        settings = [x0, schedule, beta_start, beta_end, num_steps, t, seed]
        forward = {"fn": self.forward_noising, "inputs": settings, "outputs": [x_t, formula, strip, plot], **light}
        clear = {"fn": self.cleared_after_failure, "inputs": None, "outputs": forward["outputs"], **UI_ONLY}
        x0.change(api_name="forward_noising", **forward).failure(**clear)
        schedule.change(self.fit_beta_inputs, schedule, [beta_start, beta_end], **UI_ONLY)
        for control in (schedule, beta_start, beta_end, seed):
            control.change(api_visibility="private", **forward).failure(**clear)
        # .change, not .release: typing T in its box (and Enter) must refit t too, not only dragging
        num_steps.change(self.fit_t_slider, [num_steps, t], t, trigger_mode="always_last", **UI_ONLY).then(
            api_visibility="private", **forward).failure(**clear)
        t.input(self.noise_at_t, settings, [x_t, formula], api_name="noise_at_t", trigger_mode="always_last",
                show_progress="hidden", **INSTANT)
        return forward
