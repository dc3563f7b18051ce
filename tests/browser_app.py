"""What the real-browser tests share: the app started as a Space starts it, Debian's chromium, a fresh page
that fails the test on uncaught page errors or requests outside 127.0.0.1, and waits for what the page draws.
The fixtures `app_url` and `browser` (tests/conftest.py) are built from these."""
from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from devtools.browser import CHROMIUM, launch_chromium
from devtools.servers import free_port, start_app, stop

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"  # screenshots and the app's logs
WAIT_MS = 180_000  # generous: the suite may share 2 cores with training


@contextlib.contextmanager
def running_app(log_name: str):
    """`python app.py` on a free port given through $PORT, CLIP pointed at a missing file; yields its URL.
    Its output goes to test-artifacts/<log_name>.log."""
    port = free_port()
    ARTIFACTS.mkdir(exist_ok=True)
    with open(ARTIFACTS / f"{log_name}.log", "w") as log:
        server, _ = start_app(port, log=log)
        try:
            yield f"http://127.0.0.1:{port}/"
        finally:
            stop(server)


@contextlib.contextmanager
def chromium():
    """A headless chromium (skips the test if playwright or /usr/bin/chromium is missing)."""
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")
    with playwright.sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def app_page(browser, url: str, *, width: int = 1400, height: int = 1000, query: str = "", phone: bool = False,
             tab: str | None = None):
    """A fresh page on the app (opened on `tab`), at width×height (a phone: touch, mobile); on leaving, fails
    the test if the page raised an uncaught error or asked for anything outside the app."""
    context = browser.new_context(viewport={"width": width, "height": height}, is_mobile=phone, has_touch=phone)
    page = context.new_page()
    errors, outside = [], []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: r.url.startswith(("http://127.0.0.1", "data:", "blob:")) or outside.append(r.url))
    page.set_default_timeout(WAIT_MS)
    page.goto(url + query)
    page.wait_for_selector("#clip-status")
    if tab:
        page.get_by_role("tab", name=tab, exact=True).click()
    try:
        yield page
    finally:
        context.close()
    assert errors == [], errors
    assert outside == [], f"the page asked for resources outside the app: {outside}"


def wait_rendered(page, selector: str, at_least: int = 1) -> None:
    """Wait until at least `at_least` <img> under `selector` have loaded with a real size."""
    page.wait_for_function("([sel, n]) => [...document.querySelectorAll(sel + ' img')]"
                           ".filter(i => i.complete && i.naturalWidth > 0).length >= n", arg=[selector, at_least])


def wait_new_image(page, selector: str, old: str | None = None) -> str:
    """Wait for a loaded <img> under `selector` whose src is not `old`; returns its src."""
    page.wait_for_function("([sel, old]) => [...document.querySelectorAll(sel + ' img')].some(i => i.complete && "
                           "i.naturalWidth > 0 && i.src !== old)", arg=[selector, old])
    return image_source(page, selector)


def wait_plotted(page, selector: str) -> None:
    """Wait until the native plot under `selector` (drawn in the browser by Vega) has drawn its marks."""
    page.wait_for_function("sel => document.querySelector(sel + ' canvas, ' + sel + ' svg .mark-line, ' + sel"
                           " + ' svg path') !== null", arg=selector)


def wait_text(page, selector: str, text: str) -> None:
    """Wait until the element `selector` shows `text`."""
    page.wait_for_function("([sel, text]) => { const e = document.querySelector(sel);"
                           " return e !== null && e.innerText.includes(text); }", arg=[selector, text])


def image_box(page, selector: str) -> list:
    """[width, height] on screen, image-rendering, and the natural [width, height] of the <img> under `selector`."""
    return page.eval_on_selector(f"{selector} img", "img => [img.getBoundingClientRect().width,"
                                 " img.getBoundingClientRect().height, getComputedStyle(img).imageRendering,"
                                 " img.naturalWidth, img.naturalHeight]")


def image_source(page, selector: str) -> str:
    return page.eval_on_selector(f"{selector} img", "img => img.src")


def shot(page, name: str, selector: str | None = None) -> None:
    """A screenshot to test-artifacts/<name>.png: the whole page, or the element `selector`."""
    ARTIFACTS.mkdir(exist_ok=True)
    target = page.locator(selector).first if selector else page
    target.screenshot(path=str(ARTIFACTS / f"{name}.png"), **({} if selector else {"full_page": True}))
