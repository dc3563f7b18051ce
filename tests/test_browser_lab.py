"""The Lab tab in a real browser (Debian's chromium driven by playwright): each experiment run from the
page with small settings, its figures and tables checked to have rendered; screenshots in test-artifacts/."""
from pathlib import Path

import pytest

from devtools.browser import CHROMIUM, launch_chromium
from devtools.servers import free_port, start_app, stop

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
WAIT_MS = 180_000  # generous: the suite may share 2 cores with training


@pytest.fixture(scope="module")
def page():
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")
    port = free_port()
    ARTIFACTS.mkdir(exist_ok=True)
    with open(ARTIFACTS / "app-lab.log", "w") as log, playwright.sync_playwright() as p:
        server, _ = start_app(port, log=log)
        browser = launch_chromium(p)
        context = browser.new_context(viewport={"width": 1366, "height": 768})  # a classroom projector
        page = context.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.set_default_timeout(WAIT_MS)
        page.goto(f"http://127.0.0.1:{port}/")
        page.get_by_role("tab", name="Lab").click()
        yield page
        browser.close()
        stop(server)
        assert errors == [], errors


def wait_image(page, selector: str) -> None:
    page.wait_for_function("sel => [...document.querySelectorAll(sel + ' img')].some(i => i.complete && "
                           "i.naturalWidth > 0)", arg=selector)


def test_recognisability_from_the_page(page):
    page.locator("#recognisability-steps input").fill("10")  # ddpm in 10 steps, 2 runs per digit: quick
    page.locator("#recognisability-seeds input[type=range]").fill("2")
    page.get_by_role("button", name="Measure recognisability").click()
    page.wait_for_function("() => document.querySelector('#recognisability-summary').innerText.includes('of 20 runs')")
    wait_image(page, "#recognisability-plot")
    table = page.locator("#recognisability-table").inner_text()
    assert table.count("of 2") == 10 and "of 10" in table  # ten digits, 2 runs each; steps of 10
    page.locator("#recognisability-plot").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "lab-recognisability.png"), full_page=True)


def test_conditioning_from_the_page(page):
    page.get_by_role("button", name="Sample with and without the label").click()
    page.wait_for_function("() => document.querySelector('#conditioning-caption').innerText.includes('ε(x,c)')")
    for selector in ("#with-label", "#without-label", "#guidance-direction"):
        wait_image(page, selector)
    box = page.locator("#with-label img").bounding_box()
    assert box["width"] >= 240 and box["height"] >= 240  # legible at the back of the room
    page.locator("#guidance-direction").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "lab-conditioning.png"))


def test_why_gradual_and_difficulty_from_the_page(page):
    page.get_by_role("button", name="Denoise in 1, 2, 5, 12, 50, 500 steps").click()
    wait_image(page, "#why-gradual-plot")
    page.wait_for_function("() => document.querySelectorAll('#why-gradual-table tr').length === 7")
    page.locator("#why-gradual-plot").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "lab-why-gradual.png"))
    page.locator("#difficulty-samples input[type=range]").fill("2")
    page.get_by_role("button", name="Sample every digit and judge").click()
    wait_image(page, "#confusion-plot")
    page.wait_for_function("() => document.querySelector('#difficulty-note').innerText.includes('Hardest here')")
    assert "784" in page.locator("#limitations").inner_text()
    page.locator("#confusion-plot").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "lab-difficulty.png"))
