"""Identical pictures reach every client whole (ui/image_cache.py): gradio names cached images by their bytes,
so many requests make the same file at once while others are serving it."""
import logging
import threading

import gradio as gr
import numpy as np
import pytest
from gradio import processing_utils
from PIL import Image

from devtools.class_client import Student, exceptions_in_log, file_urls
from devtools.servers import free_port
from ui import image_cache

BLANK = np.zeros((112, 112), dtype=np.uint8)  # like the blank x̂₀ of every reverse process's step 0


def test_the_cache_path_and_bytes_are_gradios(tmp_path):
    """Same folder (the hash of the encoded bytes), same name, same bytes as gradio's own function."""
    original = processing_utils.encode_pil_to_bytes(Image.fromarray(BLANK), "png")
    path = image_cache.save_pil_to_cache(Image.fromarray(BLANK), str(tmp_path), format="png")
    assert path.endswith(f"{processing_utils.hash_bytes(original)}/image.png")
    assert open(path, "rb").read() == original
    assert image_cache.save_pil_to_cache(Image.fromarray(BLANK), str(tmp_path), format="png") == path
    assert [p.name for p in (tmp_path / processing_utils.hash_bytes(original)).iterdir()] == ["image.png"]  # no staging left


def test_readers_never_see_a_partial_file_while_writers_write_it(tmp_path):
    """Eight writers save the same picture over and over while readers read its file: every read is whole."""
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200), dtype=np.uint8))
    path = image_cache.save_pil_to_cache(image, str(tmp_path), format="png")
    size, stop, short_reads, reads = len(open(path, "rb").read()), threading.Event(), [], [0]

    def write():
        while not stop.is_set():
            image_cache.save_pil_to_cache(image, str(tmp_path), format="png")
            image_cache.write_once(image_cache.Path(path), open(path, "rb").read())

    def read():
        for _ in range(400):
            with open(path, "rb") as f:
                got = len(f.read())
            reads[0] += 1
            if got != size:
                short_reads.append(got)

    writers = [threading.Thread(target=write) for _ in range(8)]
    readers = [threading.Thread(target=read) for _ in range(4)]
    for t in writers + readers:
        t.start()
    for t in readers:
        t.join()
    stop.set()
    for t in writers:
        t.join()
    assert reads[0] == 1600 and short_reads == []


def test_file_urls_finds_file_data_and_files_named_in_html():
    base = "http://127.0.0.1:1/"
    update = [{"path": "/c/a.png", "url": base + "gradio_api/file=/c/a.png", "meta": {"_type": "gradio.FileData"}},
              '<i style="background-image: url(gradio_api/file=/w/player-1-x0.png)"></i>', None, 3,
              '<div style="--sheet: url(&quot;gradio_api/file=/w/player-1-x0.png&quot;)"></div>',
              {"value": {"url": base + "gradio_api/file=/c/a.png"}}]
    assert file_urls(update, base) == [base + "gradio_api/file=/c/a.png", base + "gradio_api/file=/w/player-1-x0.png"]


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append(self.format(record))


@pytest.fixture
def identical_pictures_app():
    """A small gradio app whose events all return the same pictures (a streamed run of blank frames and one
    still image), launched the way ui.launch launches the real app (image_cache installed), and its log."""
    image_cache.install()

    def frames(n):
        for i in range(int(n)):
            yield BLANK, np.full((112, 112), 128 + 127 * (i % 2), dtype=np.uint8)  # two pictures, taking turns

    with gr.Blocks() as demo:
        n = gr.Number(6, precision=0)
        a, b = gr.Image(format="png"), gr.Image(format="png")
        gr.Button().click(frames, n, [a, b], api_name="frames")
    demo.queue(default_concurrency_limit=None)
    log, loggers = _Collect(), [logging.getLogger(name) for name in ("uvicorn", "uvicorn.error", "gradio", "")]
    log.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    for logger in loggers:
        logger.addHandler(log)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/", log
    demo.close()
    for logger in loggers:
        logger.removeHandler(log)


def test_thirty_clients_fetch_every_identical_frame_whole(identical_pictures_app):
    """Thirty clients at once, each fetching every frame of its run by its URL while the others' runs write the
    same files: no failed fetch, no exception in the server's log."""
    url, log = identical_pictures_app
    students = [Student(url, f"192.0.2.{i + 1}") for i in range(30)]
    results, barrier = [None] * 30, threading.Barrier(30)

    def one(i):
        barrier.wait()
        results[i] = students[i].call("frames", {"n": 12})

    threads = [threading.Thread(target=one, args=(i,)) for i in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r["ok"] for r in results), [r["error"] for r in results if not r["ok"]]
    assert [r["failed_fetches"] for r in results if r["failed_fetches"]] == []
    assert [(r["updates"], r["files"]) for r in results] == [(13, 26)] * 30  # 12 frames and the last again,
    # each with its two pictures
    assert exceptions_in_log("\n".join(log.lines)) == []


def test_the_app_installs_the_atomic_cache(url):
    assert processing_utils.save_pil_to_cache is image_cache.save_pil_to_cache


def test_exceptions_in_log_finds_tracebacks_and_error_lines():
    log = ("INFO: started\nERROR:    Exception in ASGI application\nTraceback (most recent call last):\n"
           "  File x\nh11._util.LocalProtocolError: Too little data for declared Content-Length\nINFO: ok\n")
    assert len(exceptions_in_log(log)) == 3
    assert exceptions_in_log("INFO: 200 OK\nWARNING: slow\n") == []


def test_a_streamed_frame_travels_inline_and_anything_else_as_a_file():
    """controls.FrameImage: an InlineFrame becomes a PNG data URI in the update (no file, no fetch); an array is a
    cached file as gr.Image makes it; the browser draws both with gr.Image's own front end."""
    import base64
    import io

    from ui.controls import FrameImage, InlineFrame
    frame = np.random.default_rng(1).integers(0, 255, (224, 224), dtype=np.uint8)
    component = FrameImage(format="png")
    inline = component.postprocess(InlineFrame(frame))
    assert inline.path is None and inline.url.startswith("data:image/png;base64,")
    decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(inline.url.split(",", 1)[1]))))
    np.testing.assert_array_equal(decoded, frame)
    as_file = component.postprocess(frame)
    assert as_file.url is None and np.array_equal(np.asarray(Image.open(as_file.path)), frame)
    assert component.get_block_name() == "image"
