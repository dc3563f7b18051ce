"""The Architecture tab in a real browser (Debian's chromium driven by playwright), against `python app.py`
started as a Space starts it: the U-Net diagram, every variant's samples and reverse process (at least 240 px
on screen, pixelated), the loss curves, the table and the explanation; a new seed draws new pictures.
Screenshots go to test-artifacts/architecture.png, architecture-diagram.png and architecture-results.png."""
from pathlib import Path

import pytest

from devtools.browser import CHROMIUM, launch_chromium
from devtools.servers import free_port, start_app, stop
from ui.settings import DIAGRAM_FONT_PT

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
WAIT_MS = 120_000  # generous: the suite may share 2 cores with training


@pytest.fixture(scope="module")
def url():
    """`python app.py` on a free port given through $PORT; CLIP pointed at a missing file (unavailable)."""
    port = free_port()
    ARTIFACTS.mkdir(exist_ok=True)
    with open(ARTIFACTS / "app-architecture.log", "w") as log:
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
    """A fresh page on the app's Architecture tab; fails the test on uncaught page errors or requests outside
    127.0.0.1."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    errors, outside = [], []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: r.url.startswith(("http://127.0.0.1", "data:", "blob:")) or outside.append(r.url))
    page.set_default_timeout(WAIT_MS)
    page.goto(url)
    page.wait_for_selector("#clip-status")
    page.get_by_role("tab", name="Architecture").click()
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


def image_box(page, selector: str) -> list:
    """[width, height] on screen, image-rendering, and the natural [width, height] of the <img> under `selector`."""
    return page.eval_on_selector(f"{selector} img", "img => [img.getBoundingClientRect().width,"
                                 " img.getBoundingClientRect().height, getComputedStyle(img).imageRendering,"
                                 " img.naturalWidth, img.naturalHeight]")


def shot(page, name: str, selector: str | None = None) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    target = page.locator(selector) if selector else page
    target.screenshot(path=str(ARTIFACTS / f"{name}.png"), **({} if selector else {"full_page": True}))


def test_the_variants_side_by_side_and_a_new_seed(page):
    for selector in ("#architecture-samples", "#architecture-reverse"):
        wait_rendered(page, selector)
        width, height, rendering, *_ = image_box(page, selector)
        assert min(width, height) >= 240 and rendering == "pixelated", (selector, width, height, rendering)
    wait_text(page, "#architecture-caption", "seed 0")
    wait_plotted(page, "#architecture-loss")
    wait_plotted(page, "#architecture-heldout")
    assert "no_skip_connections" in page.locator("#architecture-table").inner_text()
    assert "Skip connections" in page.locator("#architecture-explanation").inner_text()
    page.locator("#architecture-samples").scroll_into_view_if_needed()
    shot(page, "architecture-results", "#architecture-samples")
    before = page.eval_on_selector("#architecture-samples img", "img => img.src")
    page.locator("#architecture-seed input").fill("7")
    page.locator("#architecture-seed input").press("Enter")
    wait_text(page, "#architecture-caption", "seed 7")
    page.wait_for_function("old => document.querySelector('#architecture-samples img').src !== old", arg=before)
    wait_rendered(page, "#architecture-samples")
    shot(page, "architecture")


def test_the_diagram_is_drawn_from_the_config_and_legible(page):
    wait_rendered(page, "#unet-diagram")
    width, height, _, natural_width, _ = image_box(page, "#unet-diagram")
    assert min(width, height) >= 240
    # drawn at 100 dpi in DIAGRAM_FONT_PT type: shown this wide, the type is still at least 12 pt
    assert DIAGRAM_FONT_PT * width / natural_width >= 12, (width, natural_width)
    page.locator("#unet-diagram").scroll_into_view_if_needed()
    shot(page, "architecture-diagram", "#unet-diagram")
