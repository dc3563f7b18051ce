"""The Architecture tab in a real browser (Debian's chromium driven by playwright), against `python app.py`
started as a Space starts it: the U-Net diagram, every variant's samples and reverse process (at least 240 px
on screen, pixelated), the loss curves, the table and the explanation; a new seed draws new pictures.
Screenshots go to test-artifacts/architecture.png, architecture-diagram.png and architecture-results.png."""

import pytest

from browser_app import app_page, image_box, shot, wait_plotted, wait_rendered, wait_text

from ui.settings import DIAGRAM_FONT_PT

pytestmark = pytest.mark.browser


@pytest.fixture
def page(browser, app_url):
    """A fresh page on the app's Architecture tab (see browser_app.app_page)."""
    with app_page(browser, app_url, tab="Architecture") as page:
        yield page


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
