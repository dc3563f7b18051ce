"""Opening the files a request names, safely: only gradio's own upload cache, only regular files,
reads bounded in size. A path anywhere else, a FIFO, a device or a link out of the cache is refused
before anything is opened, with a message that says so.

A file argument arrives as {"path": ...}; with preprocess=False gradio does not check it, and a client
can leave out the "meta" key that would make gradio check it, so the app checks every path itself.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

import gradio as gr
import numpy as np

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
