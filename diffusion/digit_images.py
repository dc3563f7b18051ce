"""Digits from anywhere into MNIST's form, and a statistic of a set of digits.

    digit_from_file(path)        any image file -> uint8 [28,28], light ink on black like MNIST
    pixel_diversity(images, S)   how much samples of the same digit differ
"""
from __future__ import annotations

import numpy as np
from PIL import Image, UnidentifiedImageError

MAX_IMAGE_PIXELS = 5000 * 5000  # decoded size of an image file this module will read


class NotADigitImage(ValueError):
    """The file cannot be read as an image, or is too large; the message is meant for the user."""


def digit_from_file(path: str, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Any image file -> uint8 [28,28], white ink on black like MNIST.

    Transparent parts become background; a light background is inverted; the picture is padded to a
    square and shrunk (area average) to 28×28. A 28k×28k enlargement of a 28×28 digit comes back exactly.
    Raises NotADigitImage for a file that is not an image, or has more than `max_pixels` pixels.
    """
    try:
        image = Image.open(path)
        if image.width * image.height > max_pixels:
            raise NotADigitImage(f"the image is {image.width}×{image.height} pixels; at most "
                                 f"{max_pixels / 1e6:.0f} megapixels, please")
        image.seek(0)
        image = _flatten_alpha(image.convert("RGBA")).convert("L")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, EOFError):
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
