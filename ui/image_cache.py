"""Every picture the app returns reaches the browser whole: gradio's image cache, written atomically.

gradio saves each image an event returns (a numpy array or a PIL image) as a file in its cache, in a folder
named by a hash of the encoded bytes, so identical pictures share one path: the blank x̂₀ of every reverse
process's step 0, two students who ask for the same digit and seed. gradio 6 writes that path in place
(truncate, then write) while another request may be serving it. A reader that opens the file between the
two reads fewer bytes than the Content-Length it already announced; the browser loses that frame and the
server logs "Too little data for declared Content-Length".

Here a cache file is written under a temporary name in the same folder and renamed into place: a reader
opens either the old file or the new one, each whole. A path that already exists is not written at all (the
same path holds the same bytes), only touched, so that the cache's clean-up (`delete_cache`) counts it as
new. gradio already copies *files* into its cache this way (`save_file_to_cache`); this does the same for the
pictures it encodes itself.

Chosen over the other ways to the same end: placeholders made once at start cover only the blank frame, not
two students with the same digit and seed; frames inline in the page would be kept in every session's state
by gradio; unique names would store identical frames many times over.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from gradio import processing_utils


def write_once(path: Path, data: bytes) -> None:
    """Put `data` at `path` (a content-addressed cache path) so no reader ever sees a partial file."""
    if path.exists():
        try:
            os.utime(path)  # handed out again: not old to the cache's clean-up
        except OSError:
            pass
        return
    fd, staging = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(staging, 0o644)
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise


def save_pil_to_cache(img, cache_dir: str, name: str = "image", format: str = "webp") -> str:
    """gradio's `processing_utils.save_pil_to_cache` (same arguments, same path, same bytes), written atomically."""
    data = processing_utils.encode_pil_to_bytes(img, format)
    folder = Path(cache_dir) / processing_utils.hash_bytes(data)
    folder.mkdir(exist_ok=True, parents=True)
    path = (folder / f"{name}.{format}").resolve()
    write_once(path, data)
    return str(path)


def install() -> None:
    """Make gradio save the pictures it encodes with `save_pil_to_cache` above (numpy arrays go through it too:
    `save_img_array_to_cache` calls it by its module's name). Safe to call more than once."""
    processing_utils.save_pil_to_cache = save_pil_to_cache
