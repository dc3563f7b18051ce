"""The Training tab in a real browser (Debian's chromium driven by playwright), against `python app.py`
started as a Space starts it: the loss curves are drawn, the snapshot slider changes the samples and their
scores, the noise prediction follows the t slider, and every image is at least 240 px on screen, pixelated.
Screenshots go to test-artifacts/training-tab.png and training-noise.png."""
from pathlib import Path

import pytest

from devtools.browser import CHROMIUM, launch_chromium
from devtools.servers import free_port, start_app, stop

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
WAIT_MS = 120_000  # generous: the suite may share 2 cores with training


@pytest.fixture(scope="module")
def url():
    """`python app.py` on a free port given through $PORT; CLIP pointed at a missing file (unavailable)."""
    port = free_port()
    ARTIFACTS.mkdir(exist_ok=True)
    with open(ARTIFACTS / "app-training.log", "w") as log:
        server, _ = start_app(port, log=log)
        yield f"http://127.0.0.1:{port}/"
        stop(server)


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")
    with playwright.sync_playwright() as p:
        browser = launch_chromium(p)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, url):
    """A fresh page on the app's Training tab; fails the test on uncaught page errors or requests outside
    127.0.0.1."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    errors, outside = [], []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: r.url.startswith(("http://127.0.0.1", "data:", "blob:")) or outside.append(r.url))
    page.set_default_timeout(WAIT_MS)
    page.goto(url)
    page.wait_for_selector("#clip-status")
    page.get_by_role("tab", name="Training").click()
    yield page
    context.close()
    assert errors == [], errors
    assert outside == [], f"the page asked for resources outside the app: {outside}"


def wait_rendered(page, selector: str) -> None:
    """Wait until the <img> under `selector` has loaded with a real size."""
    page.wait_for_function("sel => { const i = document.querySelector(sel + ' img');"
                           " return i !== null && i.complete && i.naturalWidth > 0; }", arg=selector)


def wait_plotted(page, selector: str) -> None:
    """Wait until the native plot under `selector` (drawn in the browser by Vega) has drawn its marks."""
    page.wait_for_function("sel => document.querySelector(sel + ' canvas, ' + sel + ' svg .mark-line, ' + sel"
                           " + ' svg path') !== null", arg=selector)


def wait_text(page, selector: str, text: str) -> None:
    page.wait_for_function("([sel, text]) => { const e = document.querySelector(sel);"
                           " return e !== null && e.innerText.includes(text); }", arg=[selector, text])


def image_source(page, selector: str) -> str:
    return page.eval_on_selector(f"{selector} img", "img => img.src")


def assert_large_and_pixelated(page, selector: str) -> None:
    size = page.eval_on_selector(f"{selector} img", "img => [img.getBoundingClientRect().width,"
                                 " img.getBoundingClientRect().height, getComputedStyle(img).imageRendering]")
    assert min(size[:2]) >= 240 and size[2] == "pixelated", (selector, size)


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_loss_curves_and_the_snapshot_slider(page):
    wait_plotted(page, "#loss-curve")
    wait_plotted(page, "#loss-curve-zoom")
    wait_text(page, "#snapshot-caption", "Snapshot 0: step 25")
    wait_rendered(page, "#snapshot-grid")
    first = image_source(page, "#snapshot-grid")
    page.locator("#snapshot-slider input[type=range]").fill("6")
    wait_text(page, "#snapshot-caption", "Snapshot 6: step 2345, epoch 5.00")
    page.wait_for_function("old => document.querySelector('#snapshot-grid img').src !== old", arg=first)
    wait_rendered(page, "#snapshot-grid")
    assert_large_and_pixelated(page, "#snapshot-grid")
    caption = page.locator("#snapshot-caption").inner_text()
    assert "held-out digits: 0.0379" in caption
    assert "the classifier read" in caption or "not evaluated" in caption
    page.locator("#snapshot-grid").scroll_into_view_if_needed()
    shot(page, "training-tab")


def test_noise_prediction_follows_t(page):
    images = ["#noise-x0", "#noise-x-t", "#noise-eps", "#noise-eps-hat", "#noise-error"]
    for selector in images:
        wait_rendered(page, selector)
    wait_text(page, "#noise-loss", "t = 50)")
    wait_plotted(page, "#loss-by-t")
    before = image_source(page, "#noise-x-t")
    page.locator("#noise-t input[type=range]").fill("300")
    wait_text(page, "#noise-loss", "t = 300)")
    page.wait_for_function("old => document.querySelector('#noise-x-t img').src !== old", arg=before)
    for selector in images:
        wait_rendered(page, selector)
        assert_large_and_pixelated(page, selector)
    assert "The loss of this example: mean((ε̂ − ε)²) = " in page.locator("#noise-loss").inner_text()
    page.locator("#loss-by-t").scroll_into_view_if_needed()
    shot(page, "training-noise")
