"""The Edit tab: re-imagine a digit as another (SDEdit) and regenerate part of one (inpainting), two of the
real uses of diffusion models the course names. Endpoints: /edit, /inpaint.

The digit comes from the shipped MNIST test digits, an upload or a drawing, framed as MNIST framed its
digits (a 20×20 box, centred by its centre of mass), so a drawing that fills the canvas looks like what the
model learnt from. The editing itself is the engine's (`diffusion.editing`), run on the shared network server.
"""
from __future__ import annotations

import gradio as gr
import numpy as np

from diffusion.data import grid_image
from diffusion.editing import (DEFAULT_EDIT_CLASSIFIER_SCALE, DEFAULT_EDIT_GUIDANCE, DEFAULT_STRENGTH, INPAINT_RESAMPLE, INPAINT_SAMPLER,
                               INPAINT_STEPS, STRENGTH_STRIP)
from diffusion.requests import DEFAULT_SAMPLER, DEFAULT_STEPS, MAX_CLASSIFIER_SCALE, check_edit_request, edit_start_t

from .classroom import Classroom, yield_to_the_network
from .rendering import enlarge, labelled_strip
from .settings import (DEFAULT_EDIT_SOURCE, DEFAULT_INPAINT_SOURCE, LAB_IMAGE_SCALE, STRIP_FONT_PX, STRIP_SCALE, MASK_PRESETS, MAX_INPAINT_SAMPLES,
                       MAX_GUIDANCE, MAX_SEED, MIN_GUIDANCE, SAMPLING_CONCURRENCY, UI_ONLY)
from .uploads import read_digit
from .validation import checked_whole_number, invalid, user_errors


def preset_mask(side: str) -> np.ndarray:
    """[28,28] uint8, 1 = keep, 0 = regenerate the named half (top, bottom, left or right)."""
    keep = np.ones((28, 28), np.uint8)
    keep[{"top": np.s_[:14, :], "bottom": np.s_[14:, :], "left": np.s_[:, :14], "right": np.s_[:, 14:]}[side]] = 0
    return keep


def mask_from_painting(painted: np.ndarray) -> np.ndarray:
    """A painted layer (any size, [H,W] or [H,W,C] with alpha last) -> [28,28] keep mask: a cell painted
    anywhere is regenerated."""
    painted = np.asarray(painted)
    alpha = painted[..., -1] if painted.ndim == 3 else painted
    h, w = alpha.shape
    cells = alpha[: h // 28 * 28, : w // 28 * 28].reshape(28, h // 28, 28, w // 28)
    return (cells.max(axis=(1, 3)) == 0).astype(np.uint8)


def overlay(image: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """The digit in grey with the part to regenerate in orange: uint8 [28·s,28·s,3]."""
    rgb = np.repeat(image[..., None], 3, axis=2).astype(np.float32)
    rgb[keep == 0] = 0.5 * rgb[keep == 0] + 0.5 * np.array([255, 140, 0])
    return enlarge(rgb.round().astype(np.uint8).transpose(2, 0, 1), LAB_IMAGE_SCALE).transpose(1, 2, 0)


class EditTab:
    """Handlers (their parameter names are the API's) and the layout of the Edit tab."""

    def __init__(self, classroom: Classroom):
        self.classroom = classroom

    def source_digit(self, image) -> np.ndarray:
        """uint8 [28,28]: an uploaded image framed as MNIST's digits, or (None) a shipped real digit's index."""
        if image is None or isinstance(image, (int, str)) and str(image).isdigit():
            index = DEFAULT_EDIT_SOURCE if image is None else int(image)
            images = self.classroom.shipped_images
            return images[checked_whole_number("shipped digit index", index, 0, len(images) - 1)]
        return read_digit(image, "the digit", mnist_frame=True)

    def request(self, digit, samples, guidance, sampler, steps, seed, image, classifier_scale=0.0, **edit):
        checked = self.classroom.sampling_request(digit, samples, guidance, sampler, steps, seed, allow_all=False,
                                                  classifier_scale=classifier_scale)
        with user_errors():
            return check_edit_request(checked, image, num_train_steps=self.classroom.pipe.num_train_steps, **edit)

    def edit(self, image=None, digit=8, strength=DEFAULT_STRENGTH, guidance=DEFAULT_EDIT_GUIDANCE,
             sampler=DEFAULT_SAMPLER, steps=DEFAULT_STEPS, seed=0, classifier_scale=DEFAULT_EDIT_CLASSIFIER_SCALE,
             request: gr.Request = None):
        """SDEdit: noise the digit to t = strength·T and denoise it as `digit` (with w, and classifier guidance at
        classifier_scale; 0 = none). Returns the input as framed, the result, a strip of the same seed at every
        strength, and the classifier's verdicts. image: an uploaded file, or a shipped real digit's index (None:
        a real 3)."""
        source = self.source_digit(image)
        steer = dict(classifier_scale=classifier_scale)
        chosen = self.request(digit, 1, guidance, sampler, steps, seed, source, strength=strength, **steer)
        strip = [self.request(digit, 1, guidance, sampler, steps, seed, source, strength=s, **steer)
                 for s in STRENGTH_STRIP]
        yield_to_the_network()
        with self.classroom.sampling_slots.slot(request):
            images = np.concatenate(self.classroom.server.run([chosen] + strip))
        asked = chosen.digits[0]
        scores = self.classroom.classifier_scores(images, [asked] * len(images))
        seen = scores.predicted_digit[1:]
        strip_image = labelled_strip(images[1:], [f"s = {s:g}" for s in STRENGTH_STRIP], [f"sees {d}" for d in seen],
                                     STRIP_SCALE, STRIP_FONT_PX, highlight=[d != asked for d in seen])
        T, start = self.classroom.pipe.num_train_steps, edit_start_t(chosen.strength, self.classroom.pipe.num_train_steps)
        noised = f"noised to t = {start} of {T}" if start is not None else "started from pure noise, as generating"
        verdict = (f"**s = {chosen.strength:g}** ({noised}, then "
                   f"{chosen.num_inference_steps} steps as a {asked} with w = {chosen.guidance:g} and classifier guidance "
                   f"{chosen.classifier_scale:g}): the classifier sees "
                   f"a **{scores.predicted_digit[0]}** (p({asked}) = {scores.confidence_requested[0]:.0%}). Mean change "
                   f"from the input: {np.abs(images[0].astype(float) - source).mean() / 255:.3f} (pixels in 0..1). "
                   f"Low s keeps the strokes; high s lets the label win.")
        return enlarge(source, LAB_IMAGE_SCALE), enlarge(images[0], LAB_IMAGE_SCALE), strip_image, verdict

    def edit_drawing(self, drawing, digit, strength, guidance, sampler, steps, seed, classifier_scale,
                     request: gr.Request = None):
        """/edit on the sketchpad's picture (its composite image file) (UI only)."""
        composite = drawing.get("composite") if isinstance(drawing, dict) else None
        return self.edit(composite, digit, strength, guidance, sampler, steps, seed, classifier_scale, request)

    def inpaint(self, image=None, mask="bottom", digit=7, samples=4, guidance=DEFAULT_EDIT_GUIDANCE, seed=0,
                resample=INPAINT_RESAMPLE, request: gr.Request = None):
        """Regenerate the masked part of the digit as `digit`, in keeping with the rest (RePaint); the rest
        stays exactly as it was. mask: top, bottom, left or right (the half to regenerate), or an uploaded
        image whose light pixels mark what to regenerate. Returns the input with the mask, the results, a note."""
        source = self.source_digit(DEFAULT_INPAINT_SOURCE if image is None else image)
        if isinstance(mask, str) and mask in MASK_PRESETS:
            keep = preset_mask(mask)
        elif isinstance(mask, dict):
            keep = (read_digit(mask, "the mask") <= 127).astype(np.uint8)
        else:
            raise invalid(f"mask must be one of {', '.join(MASK_PRESETS)}, or an uploaded mask image")
        return self.inpaint_with(source, keep, digit, samples, guidance, seed, resample, request)

    def inpaint_with(self, source, keep, digit, samples, guidance, seed, resample, request):
        checked_whole_number("samples", samples, 1, MAX_INPAINT_SAMPLES)
        edit = self.request(digit, samples, guidance, INPAINT_SAMPLER, INPAINT_STEPS, seed, source, strength=1.0,
                            keep_mask=keep, resample=resample)
        yield_to_the_network()
        with self.classroom.sampling_slots.slot(request):
            [images] = self.classroom.server.run([edit])
        asked = edit.digits[0]
        scores = self.classroom.classifier_scores(images, [asked] * len(images))
        changed = max(int(np.abs(im[keep == 1].astype(int) - source[keep == 1].astype(int)).max()) for im in images)
        note = (f"{int((scores.predicted_digit == asked).sum())} of {len(images)} results are seen as a {asked} by the "
                f"classifier. The kept pixels changed by at most {changed}/255. ({edit.num_inference_steps} ddpm steps, "
                f"all but the last resampled {edit.resample}×: {(edit.num_inference_steps - 1) * edit.resample + 1} "
                f"network evaluations.)")
        results = enlarge(grid_image(images, nrow=len(images), pad=1), LAB_IMAGE_SCALE)
        return overlay(source, keep), results, note

    def inpaint_painted(self, image, editor, digit, samples, guidance, seed, request: gr.Request = None):
        """The page's hand-painted mask (the editor's first layer) instead of a preset (UI only)."""
        layers = (editor or {}).get("layers") or []
        if not layers or layers[0] is None:
            raise invalid("paint over the part to regenerate first (or pick a preset half)")
        keep = mask_from_painting(layers[0])
        with user_errors():
            if keep.all():
                raise ValueError("the mask is empty: paint over the part of the digit to regenerate")
        source = self.source_digit(DEFAULT_INPAINT_SOURCE if image is None else image)
        return self.inpaint_with(source, keep, digit, samples, guidance, seed, INPAINT_RESAMPLE, request)

    def layout(self) -> None:
        gr.Markdown("Two real uses of diffusion models. **Re-imagine** (SDEdit): noise a digit part of the way, "
                    "to t = s·T, and denoise it as another digit. **Inpaint**: regenerate only part of a digit. "
                    "Drawings and uploads are framed as MNIST's digits were (a 20×20 box, centred by mass).")
        sampling = {"concurrency_id": "sampling", "concurrency_limit": SAMPLING_CONCURRENCY, "preprocess": False}
        digits = [str(d) for d in range(10)]
        shipped = [(f"#{i}: a real {y}", str(i)) for i, y in enumerate(self.classroom.shipped_labels)]
        guidance = dict(minimum=MIN_GUIDANCE, maximum=MAX_GUIDANCE, step=0.1, value=DEFAULT_EDIT_GUIDANCE,
                        label="Guidance w")
        with gr.Accordion("Re-imagine a digit as another (SDEdit)", open=True):
            with gr.Row():
                e_source = gr.Dropdown(shipped, value=str(DEFAULT_EDIT_SOURCE), label="Start from a real digit")
                e_digit = gr.Radio(digits, value="8", label="Denoise it as")
                e_strength = gr.Slider(0, 1, value=DEFAULT_STRENGTH, step=0.05, label="Strength s (t = s·T)")
                e_w = gr.Slider(**guidance)
                e_seed = gr.Number(0, precision=0, minimum=0, maximum=MAX_SEED, label="Seed")
                e_scale = gr.Slider(0, MAX_CLASSIFIER_SCALE, value=DEFAULT_EDIT_CLASSIFIER_SCALE, step=0.5,
                                    label="Classifier guidance", info="the noise-aware classifier's pull toward "
                                                                      "the new digit (0 = none)")
            with gr.Row():
                e_button = gr.Button("Re-imagine the real digit", variant="primary")
                e_draw_button = gr.Button("Re-imagine my drawing")
            with gr.Row():
                e_sketch = gr.Sketchpad(value=np.zeros((280, 280, 3), np.uint8), canvas_size=(280, 280),
                                        fixed_canvas=True, label="…or draw a digit (white on black)", format="png",
                                        brush=gr.Brush(default_size=22, colors=["#ffffff"], color_mode="fixed"),
                                        layers=False, elem_id="edit-sketch")
                e_input = gr.Image(format="png", label="the input, framed as MNIST", elem_classes="pixels", elem_id="edit-input")
                e_result = gr.Image(format="png", label="the result", elem_classes="pixels", elem_id="edit-result")
            e_verdict = gr.Markdown(elem_id="edit-verdict")
            e_strip = gr.Image(format="png", label="the same seed at every strength", interactive=False,
                               elem_classes="pixels", elem_id="edit-strip")
        e_inputs = [e_source, e_digit, e_strength, e_w, gr.State(DEFAULT_SAMPLER), gr.State(DEFAULT_STEPS), e_seed,
                    e_scale]
        e_outputs = [e_input, e_result, e_strip, e_verdict]
        e_button.click(self.edit, e_inputs, e_outputs, api_name="edit", **sampling)
        e_draw_button.click(self.edit_drawing, [e_sketch] + e_inputs[1:], e_outputs, api_visibility="private",
                            **sampling)

        with gr.Accordion("Inpaint: regenerate part of a digit", open=True):
            with gr.Row():
                i_source = gr.Dropdown(shipped, value=str(DEFAULT_INPAINT_SOURCE), label="Start from a real digit")
                i_digit = gr.Radio(digits, value="7", label="Regenerate as")
                i_mask = gr.Radio(list(MASK_PRESETS), value="bottom", label="Half to regenerate")
                i_w = gr.Slider(**guidance)
                i_seed = gr.Number(0, precision=0, minimum=0, maximum=MAX_SEED, label="Seed")
                samples = gr.Slider(1, MAX_INPAINT_SAMPLES, value=4, step=1, label="Results (one per seed)")
            with gr.Row():
                i_button = gr.Button("Inpaint the chosen half", variant="primary")
                i_paint_button = gr.Button("Inpaint where I painted")
            with gr.Row():
                i_editor = gr.ImageEditor(value=self.editor_value(DEFAULT_INPAINT_SOURCE), label="…or paint over the part to regenerate", type="numpy",
                                          image_mode="RGBA", canvas_size=(280, 280), transforms=(), layers=False,
                                          brush=gr.Brush(default_size=30, colors=["#ff8c00"], color_mode="fixed"),
                                          elem_id="inpaint-editor")
                i_masked = gr.Image(format="png", label="the input; orange = regenerated", elem_id="inpaint-input")
                i_results = gr.Image(format="png", label="results (one per seed)", elem_classes="pixels", elem_id="inpaint-results")
            i_note = gr.Markdown(elem_id="inpaint-note")
        i_button.click(self.inpaint, [i_source, i_mask, i_digit, samples, i_w, i_seed], [i_masked, i_results, i_note],
                       api_name="inpaint", **sampling)
        i_paint_button.click(self.inpaint_painted, [i_source, i_editor, i_digit, samples, i_w, i_seed],
                             [i_masked, i_results, i_note], api_visibility="private",
                             concurrency_id="sampling", concurrency_limit=SAMPLING_CONCURRENCY)
        i_source.change(self.editor_value, i_source, i_editor, **UI_ONLY)

    def editor_value(self, index) -> dict:
        """The chosen shipped digit as the mask editor's background, to paint the mask on (UI only)."""
        image = enlarge(self.source_digit(index), 10)
        return {"background": np.repeat(image[..., None], 3, axis=2), "layers": [], "composite": None}
