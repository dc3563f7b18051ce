"""Digits from anywhere into MNIST's form, and a statistic of a set of digits.

    digit_from_bytes(data)       any image file's bytes -> uint8 [28,28], light ink on black like MNIST
    pixel_diversity(images, S)   how much samples of the same digit differ
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

MAX_IMAGE_PIXELS = 5000 * 5000  # decoded size of an image file this module will read
MAX_ASPECT_RATIO = 10           # longer side / shorter side: a digit is about square; a 100000×1 strip is not


class NotADigitImage(ValueError):
    """The file cannot be read as an image, or is too large; the message is meant for the user."""


def digit_from_bytes(data: bytes, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """An image file's bytes -> uint8 [28,28], white ink on black like MNIST.

    Transparent parts become background; a light background is inverted; the picture is padded to a
    square and shrunk (area average) to 28×28. A 28k×28k enlargement of a 28×28 digit comes back exactly.
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
    side = max(pixels.shape)
    square = np.zeros((side, side), np.uint8)
    top, left = (side - pixels.shape[0]) // 2, (side - pixels.shape[1]) // 2
    square[top:top + pixels.shape[0], left:left + pixels.shape[1]] = pixels
    return np.array(Image.fromarray(square).resize((28, 28), Image.BOX))


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
