"""The app as a hostile client sees it, on 127.0.0.1: every endpoint, over raw HTTP and gradio_client.

For every hostile input: a clear message of the app's own (no Python error text, no echo of a huge
input), no file outside gradio's upload folder opened (an audit hook records every open), and the server
still serving a normal request. Bursts of rejected large requests leave memory where it was.
"""
import gc
import json
import os
import re
import struct
import sys
import threading
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest
from gradio_client import handle_file
from PIL import Image

from ui.uploads import upload_folder

REPO = Path(__file__).resolve().parent.parent
ENDPOINTS_WITH_FILES = {"load_image": ["image"], "forward_noising": ["image"], "noise_at_t": ["image"]}
NUMBER_FIELDS = [("generate", "samples_per_digit"), ("generate", "guidance"), ("generate", "steps"),
                 ("generate", "seed"), ("guidance_sweep", "steps"), ("reverse_process", "guidance"),
                 ("reverse_process", "steps"), ("reverse_process", "seed"), ("show_frame", "frame"),
                 ("shipped_digit", "index"), ("forward_noising", "beta_start"), ("forward_noising", "num_steps"),
                 ("forward_noising", "t"), ("noise_at_t", "seed")]
PYTHON_ERROR_TEXT = re.compile(r"Traceback|invalid literal|int too large|Exceeds the limit|Unable to allocate|"
                               r"Errno|validation error|object at 0x|KeyError|TypeError|ValueError|pydantic")


# --- what the server opens -------------------------------------------------------------------------------

OPENED: list[str] = []
RECORDING = threading.Event()


def _record_opens(event, args):
    if event == "open" and RECORDING.is_set() and isinstance(args[0], (str, bytes, os.PathLike)):
        OPENED.append(os.fsdecode(args[0]))


sys.addaudithook(_record_opens)  # audit hooks cannot be removed; this one only records while RECORDING


def opened_outside_uploads(paths_of_interest) -> list[str]:
    folder = str(upload_folder())
    return [p for p in OPENED if p in paths_of_interest and not os.path.realpath(p).startswith(folder)]


# --- talking to the server ------------------------------------------------------------------------------

def parameters(url: str) -> dict[str, list[str]]:
    info = httpx.get(f"{url}gradio_api/info").json()["named_endpoints"]
    return {name.strip("/"): [p["parameter_name"] for p in e["parameters"]] for name, e in info.items()}


def defaults(url: str) -> dict[str, dict]:
    info = httpx.get(f"{url}gradio_api/info").json()["named_endpoints"]
    return {name.strip("/"): {p["parameter_name"]: p["parameter_default"] for p in e["parameters"]}
            for name, e in info.items()}


def raw_call(url: str, api_name: str, data: list | None = None, body: bytes | None = None) -> tuple[int, str]:
    """POST /gradio_api/call/<name>, then read its event stream; (HTTP status, the error's text or '')."""
    content = body if body is not None else json.dumps({"data": data}).encode()
    posted = httpx.post(f"{url}gradio_api/call/{api_name}", content=content,
                        headers={"content-type": "application/json"}, timeout=60)
    if posted.status_code != 200:
        return posted.status_code, posted.json().get("detail", "")
    with httpx.stream("GET", f"{url}gradio_api/call/{api_name}/{posted.json()['event_id']}", timeout=120) as s:
        events = re.findall(r"event: (\w+)\ndata: (.*)", "".join(s.iter_text()))
    event, data = events[-1]
    if event != "error":
        return 200, ""
    error = json.loads(data) if data.startswith("{") else data
    return 200, (error.get("error") or "") if isinstance(error, dict) else str(error)


def call_with(url: str, api_name: str, **changes) -> tuple[int, str]:
    """The endpoint's defaults with some values changed, as raw JSON."""
    values = defaults(url)[api_name]
    values.update(changes)
    return raw_call(url, api_name, [values[name] for name in parameters(url)[api_name]])


def assert_clear_refusal(status: int, message: str, *expected: str) -> None:
    assert status in (200, 400, 404, 413) and message, f"not refused: {status} {message!r}"
    assert not PYTHON_ERROR_TEXT.search(message), f"Python's error text reached the client: {message[:300]!r}"
    assert len(message) < 600, f"the message echoes the input: {len(message)} characters"
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"


def assert_still_serving(url: str) -> None:
    status, error = raw_call(url, "generate", [v for v in defaults(url)["generate"].values()])
    assert (status, error) == (200, ""), (status, error)


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header says width × height (8-bit grey) and whose pixel data is a few bytes: what a
    hostile upload looks like (a size that would cost a lot to decode, in a file of a few hundred bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b""))


def upload(url: str, name: str, data: bytes) -> str:
    """Upload bytes the way the page does; returns the server-side path."""
    response = httpx.post(f"{url}gradio_api/upload", files={"files": (name, data, "image/png")})
    response.raise_for_status()
    return response.json()[0]


def rss_mb() -> float:
    return int(next(line.split()[1] for line in Path("/proc/self/status").read_text().splitlines()
                    if line.startswith("VmRSS"))) / 1024


# --- 1. reading files on the server -------------------------------------------------------------------------

OUTSIDE = [str(REPO / "checkpoints" / "unet.json"), "/etc/passwd", "/proc/self/mem", "/dev/kmsg",
           "/proc/self/environ", "../../../../etc/passwd"]


@pytest.mark.parametrize("path", OUTSIDE)
@pytest.mark.parametrize("api_name", sorted(ENDPOINTS_WITH_FILES))
def test_files_outside_the_upload_folder_are_never_opened(url, api_name, path):
    [field] = ENDPOINTS_WITH_FILES[api_name]
    OPENED.clear()
    RECORDING.set()
    try:
        results = [call_with(url, api_name, **{field: {"path": path}}),  # no "meta": gradio would not check it
                   call_with(url, api_name, **{field: {"path": path, "meta": {"_type": "gradio.FileData"}}})]
    finally:
        RECORDING.clear()
    for status, message in results:
        assert_clear_refusal(status, message, "only files uploaded to this app can be read")
    assert opened_outside_uploads({path, os.path.realpath(path)}) == []
    assert_still_serving(url)


def test_the_drawing_endpoint_checks_its_file_too(url):
    OPENED.clear()
    RECORDING.set()
    try:
        status, message = raw_call(url, "load_drawing", [{"background": None, "layers": [],
                                                          "composite": {"path": "/etc/passwd"}}])
    finally:
        RECORDING.clear()
    assert_clear_refusal(status, message, "only files uploaded to this app can be read")
    assert opened_outside_uploads({"/etc/passwd"}) == []


def test_gradio_client_cannot_read_server_files_either(client):
    with pytest.raises(Exception, match="only files uploaded to this app can be read"):
        client.predict(image={"path": str(REPO / "checkpoints" / "unet.json")}, api_name="/load_image")


def test_a_fifo_or_a_link_inside_the_upload_folder_is_refused_without_blocking(url):
    folder = upload_folder()
    fifo, link = folder / "hostile.fifo", folder / "hostile-link.png"
    for p in (fifo, link):
        p.unlink(missing_ok=True)
    os.mkfifo(fifo)
    link.symlink_to("/etc/passwd")
    try:
        status, message = call_with(url, "load_image", image={"path": str(fifo)})
        assert_clear_refusal(status, message, "only regular files can be read")  # answered: no worker blocked
        status, message = call_with(url, "load_image", image={"path": str(link)})
        assert_clear_refusal(status, message, "only files uploaded to this app can be read")
    finally:
        fifo.unlink()
        link.unlink()
    assert_still_serving(url)


@pytest.mark.parametrize("payload,expected", [
    ({"path": "/tmp/a\x00b"}, "an image is sent as"),
    ({"path": "x" * 5000}, "an image is sent as"),
    ({"path": 5}, "an image is sent as"),
    ({"path": None, "meta": {"_type": "gradio.FileData"}}, "an image is sent as"),
    ({"path": "a.png", "size": "huge", "extra": 1, "meta": {"_type": "gradio.FileData"}}, "an image is sent as"),
], ids=["nul", "long", "number", "null", "extra-keys"])
def test_malformed_file_arguments_get_a_clear_message(url, payload, expected):
    assert_clear_refusal(*call_with(url, "load_image", image=payload), expected)


# --- 2. no way around the queue -----------------------------------------------------------------------------

@pytest.mark.parametrize("route,body", [
    ("run/generate", {"data": []}), ("run/load_image", {"data": [{"path": "/etc/passwd"}]}),
    ("run/predict", {"data": [], "fn_index": 0}), ("api/generate", {"data": []}),
    ("component_server", {"component_id": 1, "fn_name": "x", "data": None, "session_hash": "a"}),
    ("stream/abc", {}), ("vibe-edit", {}), ("process_recording", {}),
])
def test_routes_that_skip_the_queue_are_closed(url, route, body):
    response = httpx.post(f"{url}gradio_api/{route}", json=body)
    assert response.status_code == 404
    assert_clear_refusal(200, response.json()["detail"], "through its queue only")


def test_a_call_must_name_an_event_that_exists(url):
    status, message = raw_call(url, "no_such_endpoint", [])
    assert status == 404 and "there is no endpoint /no_such_endpoint" in message
    response = httpx.post(f"{url}gradio_api/queue/join", json={"data": [], "fn_index": 10**6, "session_hash": "s"})
    assert response.status_code == 404 and "there is no event" in response.json()["detail"]


# --- 3. memory ------------------------------------------------------------------------------------------------

def test_a_burst_of_large_requests_is_refused_before_anything_is_kept(url):
    huge = json.dumps({"data": ["all", 1, 0.6, "dpm++2m-sde", 12, 0, "x" * 10_000_000]}).encode()
    for _ in range(3):  # warm up allocators
        raw_call(url, "generate", body=huge)
    gc.collect()
    before = rss_mb()
    for _ in range(30):
        status, message = raw_call(url, "generate", body=huge)
        assert status == 413 and "the request is too large: at most 64 KB" in message
    gc.collect()
    assert rss_mb() - before < 50
    assert_still_serving(url)


def test_text_fields_are_bounded(url):
    status, message = call_with(url, "generate", quality_prompts_text="p" * 5000)
    assert_clear_refusal(status, message, "at most 8 quality prompts of at most 200 characters")


# --- 4. no raw Python errors ----------------------------------------------------------------------------------

@pytest.mark.parametrize("api_name,field", NUMBER_FIELDS, ids=[f"{a}-{f}" for a, f in NUMBER_FIELDS])
def test_a_400_digit_integer_in_any_number_field(url, api_name, field):
    body = json.dumps({"data": [10**400 if name == field else value
                                for name, value in defaults(url)[api_name].items()]}).encode()
    status, message = raw_call(url, api_name, body=body)
    if api_name == "show_frame":  # this session has no run to scrub yet: that is said first
        assert_clear_refusal(status, message, "run the reverse process first")
    else:
        assert_clear_refusal(status, message, "an integer of 1329 bits")


@pytest.mark.parametrize("value", ["²", "①", "٣", "7" * 5000, "-0", "0x7"])
def test_unicode_and_long_digit_strings(url, value):
    for api_name, field in (("generate", "digit"), ("reverse_process", "digit"), ("shipped_digit", "index")):
        status, message = call_with(url, api_name, **{field: value})
        assert_clear_refusal(status, message, "must be")


def test_a_missing_argument_names_the_parameters(url):
    status, message = raw_call(url, "reverse_process", ["3"])
    assert_clear_refusal(status, message, "/reverse_process takes 5 value(s) (digit, guidance, sampler, steps, seed)")


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'{"data": "all"}', b'{"nodata": 1}'])
def test_bodies_that_are_not_calls(url, body):
    assert_clear_refusal(*raw_call(url, "generate", body=body), "the request body must be")


# --- 5. images that are cheap to send and costly to decode -------------------------------------------------------

@pytest.mark.parametrize("size,expected", [
    ((25_000_000, 1), "a digit should be roughly square"), ((100_000, 250), "a digit should be roughly square"),
    ((20_000, 20_000), "at most 25 megapixels"), ((6000, 6000), "6000×6000 pixels; at most 25 megapixels"),
], ids=["25M-by-1", "100000-by-250", "20000-square", "6000-square"])
def test_image_size_and_shape_are_checked_from_the_header(url, size, expected):
    path = upload(url, "hostile.png", png_header(*size))
    for api_name in ENDPOINTS_WITH_FILES:
        assert_clear_refusal(*call_with(url, api_name, image={"path": path}), expected)
    assert_still_serving(url)


def test_a_photo_sized_upload_still_works(url):
    image = np.zeros((3000, 4000), np.uint8)
    image[1000:2000, 1800:2200] = 255
    buffer = __import__("io").BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    path = upload(url, "photo.png", buffer.getvalue())
    status, message = call_with(url, "load_image", image={"path": path})
    assert (status, message) == (200, "")


# --- 6. one client cannot take the class's CPU -----------------------------------------------------------------

def test_one_client_has_at_most_two_sampling_requests_running(url):
    """Three heavy requests at once from one address (behind the proxy, as on a Space): the third is refused
    at once with a clear message; another address is served meanwhile."""
    heavy = {"digit": "3", "samples_per_digit": 50, "steps": 100, "sampler": "ddim"}
    values = defaults(url)["generate"]
    values.update(heavy)
    body = json.dumps({"data": list(values.values())})
    results = []

    def send(address):
        client = httpx.Client(headers={"x-forwarded-for": address, "content-type": "application/json"}, timeout=120)
        posted = client.post(f"{url}gradio_api/call/generate", content=body)
        with client.stream("GET", f"{url}gradio_api/call/generate/{posted.json()['event_id']}") as s:
            results.append((address, "".join(s.iter_text())))

    threads = [threading.Thread(target=send, args=("203.0.113.7",)) for _ in range(3)]
    threads.append(threading.Thread(target=send, args=("198.51.100.2",)))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    refused = [a for a, text in results if "you already have 2 sampling requests running" in text]
    assert refused == ["203.0.113.7"]
    assert sum("event: complete" in text for _, text in results) == 3


# --- 7. and 8. short messages, contracts that match -------------------------------------------------------------

def test_errors_never_echo_a_long_input(url):
    for api_name, field in (("generate", "digit"), ("generate", "sampler"), ("forward_noising", "schedule"),
                            ("guidance_sweep", "guidance_values_text")):
        status, message = call_with(url, api_name, **{field: "z" * 50_000})
        assert_clear_refusal(status, message)


def test_shipped_digit_takes_its_index_as_documented(client):
    from_text, from_number = (client.predict(index=i, api_name="/shipped_digit") for i in ("5", 5))
    assert np.array_equal(np.asarray(Image.open(from_text)), np.asarray(Image.open(from_number)))


def test_the_cosine_schedule_ignores_the_beta_range_in_both_endpoints(client):
    x0 = client.predict(index=2, api_name="/shipped_digit")
    settings = dict(image=handle_file(x0), schedule="cosine", beta_start=0.5, beta_end=0.1, num_steps=200, t=50)
    full_x_t, formula, _, _ = client.predict(api_name="/forward_noising", **settings)
    fast_x_t, fast_formula = client.predict(api_name="/noise_at_t", **settings)
    assert formula == fast_formula
    assert np.array_equal(np.asarray(Image.open(full_x_t)), np.asarray(Image.open(fast_x_t)))
    with pytest.raises(Exception, match="need 0 < beta_start < beta_end < 1"):
        client.predict(api_name="/noise_at_t", **{**settings, "schedule": "linear"})
    with pytest.raises(Exception, match="need 0 < beta_start < beta_end < 1"):
        client.predict(api_name="/forward_noising", **{**settings, "schedule": "linear"})


def test_every_endpoint_refuses_garbage_with_a_clear_message(url):
    """Each parameter of each endpoint, in turn, gets values of the wrong type."""
    garbage = [None, [], {}, {"a": [1, {"b": 2}]}, -1e308, "", "\x00", True]
    for api_name, names in parameters(url).items():
        for name in names:
            for value in garbage:
                status, message = call_with(url, api_name, **{name: value})
                if status == 200 and message == "":
                    continue  # a value this parameter accepts (e.g. "" prompts, True is refused elsewhere)
                assert_clear_refusal(status, message)
    assert_still_serving(url)


def test_the_served_work_folder_shows_its_own_files_and_nothing_else(url, classroom):
    """The players' sheets of frames are files the app serves from its work folder (ui.launch); nothing outside
    it can be read through that door."""
    status, _ = call_with(url, "reverse_process", digit="4", steps=3)
    assert status == 200
    [sheet, *_] = sorted(classroom.work_folder.glob("player-*.png"), key=lambda p: -p.stat().st_mtime)
    assert httpx.get(f"{url}gradio_api/file={sheet}").status_code == 200
    for outside in ("/etc/passwd", f"{classroom.work_folder}/../../etc/passwd", f"{sheet}/../../../etc/hostname",
                    __file__):
        response = httpx.get(f"{url}gradio_api/file={outside}")
        assert response.status_code in (403, 404) and "root:" not in response.text, outside
