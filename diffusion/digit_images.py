"""Digits from anywhere into MNIST's form, and a statistic of a set of digits.

    digit_from_bytes(data)       any image file's bytes -> uint8 [28,28], light ink on black like MNIST
    mnist_normalise(image)       a digit framed as MNIST's were: in a 20×20 box, centred by its centre of mass
    pixel_diversity(images, S)   how much samples of the same digit differ
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

MAX_IMAGE_PIXELS = 5000 * 5000  # decoded size of an image file this module will read
MAX_ASPECT_RATIO = 10           # longer side / shorter side: a digit is about square; a 100000×1 strip is not
MNIST_BOX = 20                  # MNIST's digits were scaled to fit a 20×20 box inside the 28×28 frame
INK_LEVEL = 32                  # pixels brighter than this (of 255) count as ink when finding the digit


class NotADigitImage(ValueError):
    """The file cannot be read as an image, or is too large; the message is meant for the user."""


def digit_from_bytes(data: bytes, max_pixels: int = MAX_IMAGE_PIXELS, mnist_frame: bool = False) -> np.ndarray:
    """An image file's bytes -> uint8 [28,28], white ink on black like MNIST.

    Transparent parts become background; a light background is inverted; the picture is padded to a
    square and shrunk (area average) to 28×28. A 28k×28k enlargement of a 28×28 digit comes back exactly.
    mnist_frame: instead, frame the digit as MNIST did (`mnist_normalise`), from the full-size picture.
    The size and shape are checked from the header, before any pixel is decoded. Raises NotADigitImage
    for bytes that are not an image, an image of more than `max_pixels` pixels, or a long thin strip.
    """
    try:
        image = Image.open(io.BytesIO(data))  # reads the header only
    except Image.DecompressionBombError:
        raise NotADigitImage(f"the image is far too large; at most {max_pixels / 1e6:.0f} megapixels, please") from None
    except (UnidentifiedImageError, OSError, EOFError, ValueError):
        raise NotADigitImage("that file is not an image this app can read (PNG, JPEG, GIF, WebP…)") from None
    width, height = image.size
    if width * height > max_pixels:
        raise NotADigitImage(f"the image is {width}×{height} pixels; at most {max_pixels / 1e6:.0f} megapixels, please")
    if max(width, height) > MAX_ASPECT_RATIO * max(1, min(width, height)):
        raise NotADigitImage(f"the image is {width}×{height} pixels: a digit should be roughly square "
                             f"(at most {MAX_ASPECT_RATIO}:1)")
    try:
        image.seek(0)
        image.draft("RGB", (280, 280))  # JPEG: decode at a reduced size, enough for 28×28
        image = _flatten_alpha(image.convert("RGBA")).convert("L")
    except (OSError, EOFError, ValueError, Image.DecompressionBombError):
        raise NotADigitImage("that file is not an image this app can read (PNG, JPEG, GIF, WebP…)") from None
    pixels = np.asarray(image)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    if border.mean() > 127:  # dark ink on a light background: make it MNIST's light ink on black
        pixels = 255 - pixels
    if mnist_frame:
        return mnist_normalise(pixels)
    side = max(pixels.shape)
    square = np.zeros((side, side), np.uint8)
    top, left = (side - pixels.shape[0]) // 2, (side - pixels.shape[1]) // 2
    square[top:top + pixels.shape[0], left:left + pixels.shape[1]] = pixels
    return np.array(Image.fromarray(square).resize((28, 28), Image.BOX))


def mnist_normalise(image: np.ndarray) -> np.ndarray:
    """uint8 [H,W] (light ink on black) -> uint8 [28,28] framed as MNIST made its digits: the ink's bounding
    box scaled (keeping its aspect, anti-aliased) to fit a 20×20 box, then placed so that its centre of mass
    is at pixel (14, 14) of the 28×28 frame, as in MNIST. A drawing that fills the canvas then looks like the digits the model
    learnt from. Raises NotADigitImage if there is no ink."""
    pixels = np.asarray(image)
    rows, cols = np.nonzero(pixels > INK_LEVEL)
    if len(rows) == 0:
        raise NotADigitImage("there is no digit in the image (it is blank): draw or upload one")
    ink = pixels[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    scale = MNIST_BOX / max(ink.shape)
    height, width = max(1, round(ink.shape[0] * scale)), max(1, round(ink.shape[1] * scale))
    box = np.asarray(Image.fromarray(ink).resize((width, height), Image.LANCZOS), dtype=np.float64).clip(0, 255)
    mass = box.sum()
    centre_row = (box.sum(1) * np.arange(height)).sum() / mass if mass else (height - 1) / 2
    centre_col = (box.sum(0) * np.arange(width)).sum() / mass if mass else (width - 1) / 2
    top = int(np.clip(round(14 - centre_row), 0, 28 - height))
    left = int(np.clip(round(14 - centre_col), 0, 28 - width))
    framed = np.zeros((28, 28), np.uint8)
    framed[top:top + height, left:left + width] = box.round().astype(np.uint8)
    return framed


def _flatten_alpha(rgba: Image.Image) -> Image.Image:
    """Put an RGBA image on a background that contrasts with its visible ink (black for light ink)."""
    alpha = np.asarray(rgba.getchannel("A"))
    if alpha.min() == 255:
        return rgba.convert("RGB")
    visible = np.asarray(rgba.convert("L"))[alpha > 127]
    light_ink = visible.size > 0 and visible.mean() > 127
    background = Image.new("RGBA", rgba.size, (0, 0, 0, 255) if light_ink else (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def pixel_diversity(images: np.ndarray, samples_per_digit: int) -> float | None:
    """Mean per-pixel standard deviation (pixels in 0..1) across the samples of each digit; None if
    there is one sample per digit. images: uint8 [D·S,28,28], digit-major (S samples per digit)."""
    if samples_per_digit < 2:
        return None
    per_digit = (images.astype(np.float32) / 255).reshape(-1, samples_per_digit, 28 * 28)
    return float(per_digit.std(axis=1).mean())
