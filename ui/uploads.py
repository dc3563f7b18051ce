"""Opening the files a request names, safely: only gradio's own upload cache, only regular files,
reads bounded in size. A path anywhere else, a FIFO, a device or a link out of the cache is refused
before anything is opened, with a message that says so.

A file argument arrives as {"path": ...}; with preprocess=False gradio does not check it, and a client
can leave out the "meta" key that would make gradio check it, so the app checks every path itself.
"""
from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import gradio as gr
import numpy as np
from PIL import Image

from diffusion.digit_images import NotADigitImage, digit_from_bytes
from diffusion.requests import short_repr

from .settings import MAX_FILE_BYTES, MAX_PATH_CHARS
from .validation import invalid


def upload_folder() -> Path:
    """Where gradio keeps uploads and the files it serves (GRADIO_TEMP_DIR, else <tmp>/gradio)."""
    return Path(gr.utils.get_upload_folder()).resolve()


def uploaded_path(payload, what: str) -> Path:
    """The checked path of a file argument: inside gradio's upload folder, after resolving links.
    Raises gr.Error (and opens nothing) for anything else."""
    path = payload.get("path") if isinstance(payload, dict) else None
    if not isinstance(path, str) or not path:
        raise invalid(f"{what} must be an image file, sent as {{\"path\": …}} from an upload; got {short_repr(payload)}")
    if len(path) > MAX_PATH_CHARS or "\x00" in path:
        raise invalid(f"{what}: that is not the path of an uploaded file")
    try:
        resolved = Path(path).resolve()
    except (OSError, RuntimeError, ValueError):
        raise invalid(f"{what}: that is not the path of an uploaded file") from None
    if not resolved.is_relative_to(upload_folder()):
        raise invalid(f"{what}: only files uploaded to this app can be read (upload the image first)")
    return resolved


def read_uploaded_bytes(payload, what: str) -> bytes:
    """The bytes of an uploaded file: a regular file in the upload folder, at most MAX_FILE_BYTES."""
    path = uploaded_path(payload, what)
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; O_NOFOLLOW: no link swapped in since resolve()
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError:
        raise invalid(f"{what}: the uploaded file is no longer there; upload it again") from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise invalid(f"{what}: only regular files can be read")
        if info.st_size > MAX_FILE_BYTES:
            raise invalid(f"{what}: the file is {info.st_size / 2**20:.1f} MB; at most {MAX_FILE_BYTES / 2**20:.0f} MB")
        data = f.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise invalid(f"{what}: the file is over {MAX_FILE_BYTES / 2**20:.0f} MB")
    return data


def read_digit(payload, what: str, mnist_frame: bool = False) -> np.ndarray:
    """An uploaded image as a digit, uint8 [28,28] (see `digit_from_bytes`)."""
    data = read_uploaded_bytes(payload, what)
    try:
        return digit_from_bytes(data, mnist_frame=mnist_frame)
    except NotADigitImage as e:
        raise invalid(f"{what}: {e}") from None


# --- Photos: one digit on a plain background, or a clear refusal --------------------------------------------
PAPER_TOLERANCE = 8        # a background this dark (of 255) is black already: the picture is left as it is
MIN_CONTRAST = 64          # the ink (its 4th brightest pixel) stands at least this far above the paper (the median)
MAX_PAPER_SPREAD = 0.5     # a photo's paper greys (95th − 5th percentile) spread at most this share of the contrast
MAX_INK_SHARE = 0.45       # a digit covers under half the picture; more is a scene, a texture or a filled box


def level_photo(digit: np.ndarray) -> tuple[np.ndarray, str | None, float, float]:
    """A 28×28 digit (light ink on dark, as `digit_from_bytes` makes it) with its paper made black and its ink
    stretched to white, unless it is so already; returns (levelled, problem or None, paper level, contrast)."""
    pixels = np.asarray(digit, dtype=np.float64)
    paper, ink = float(np.median(pixels)), float(np.sort(pixels, axis=None)[-4])  # the 4th brightest
    contrast = ink - paper
    if contrast < MIN_CONTRAST:
        return digit, ("the digit hardly stands out from the background (too little contrast). Write with a "
                       "thicker, darker pen in good light, or raise the picture's contrast."), paper, contrast
    levelled = pixels
    if paper > PAPER_TOLERANCE or ink < 255 - PAPER_TOLERANCE:
        levelled = ((pixels - paper) * 255 / contrast).clip(0, 255)
    # the paper's greys (not the ink, not the black padding that made the picture square) should be even
    paper_pixels = pixels[(pixels > 0) & (pixels < paper + contrast / 2)]
    spread = np.percentile(paper_pixels, 95) - np.percentile(paper_pixels, 5) if paper_pixels.size else 0.0
    problem = None
    if paper > PAPER_TOLERANCE and spread > MAX_PAPER_SPREAD * contrast:
        problem = ("its background is not plain (uneven light, shadows or other things around the digit). "
                   "Photograph one digit on plain paper in even light, or crop the picture to the digit.")
    elif (levelled > 128).mean() > MAX_INK_SHARE:
        problem = "over half of the picture is ink: upload a single digit on a plain background."
    return levelled.round().astype(np.uint8), problem, paper, contrast


def photo_problem(digit: np.ndarray) -> str | None:
    """Why a 28×28 digit (light ink on dark) is not one digit on a plain background, or None if it is."""
    return level_photo(digit)[1]


def read_photo_digit(payload, what: str) -> tuple[np.ndarray, str]:
    """An uploaded picture as a digit, uint8 [28,28] (grey paper levelled to black), and a note on what the app
    did with it. Raises gr.Error (saying why and what to do) for a picture that is not one digit on a plain
    background."""
    data = read_uploaded_bytes(payload, what)
    try:
        digit = digit_from_bytes(data)
    except NotADigitImage as e:
        raise invalid(f"{what}: {e}") from None
    levelled, problem, paper, contrast = level_photo(digit)
    if problem is not None:
        raise invalid(f"{what} refused: {problem}")
    with Image.open(io.BytesIO(data)) as picture:  # the header only: the size, for the note
        width, height = picture.size
    note = (f"**Your {width}×{height} picture** was padded to a square and shrunk to 28×28, its ink made white on "
            f"black like MNIST's digits (dark ink on a light background is inverted)")
    if levelled is not digit:
        note += (f"; its paper (grey level {paper:.0f} of 255 after that) was made black and the ink stretched to "
                 f"white (contrast {contrast:.0f})")
    return levelled, note + "."
