"""The Reverse-process tab's player and all-ten filmstrip in a real browser (Debian's chromium driven by
playwright, `python app.py` started as a Space starts it): play, pause, frame by frame, speed, loop, the
frame slider, and the filmstrip. Screenshots go to test-artifacts/."""
from pathlib import Path

import pytest

from devtools.browser import CHROMIUM, launch_chromium
from devtools.servers import free_port, start_app, stop
from diffusion.requests import DEFAULT_STEPS
from ui import settings
from ui.rendering import FILMSTRIP_TILE, filmstrip_cell

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
WAIT_MS = 120_000  # generous: the suite may share 2 cores with training
SHOWN = "() => [...document.querySelectorAll('#player .frame')].findIndex(f => !f.hidden)"  # the frame on show


@pytest.fixture(scope="module")
def url():
    """`python app.py` on a free port given through $PORT; CLIP pointed at a missing file (unavailable)."""
    port = free_port()
    ARTIFACTS.mkdir(exist_ok=True)
    with open(ARTIFACTS / "app-reverse.log", "w") as log:
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
    """A fresh page on the Reverse-process tab; fails the test on uncaught page errors or requests outside 127.0.0.1."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    errors, outside = [], []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: r.url.startswith(("http://127.0.0.1", "data:", "blob:")) or outside.append(r.url))
    page.set_default_timeout(WAIT_MS)
    page.goto(url)
    page.get_by_role("tab", name="Reverse process").click()
    yield page
    context.close()
    assert errors == [], errors
    assert outside == [], f"the page asked for resources outside the app: {outside}"


def shown(page) -> int:
    return page.evaluate(SHOWN)


def wait_until_shown(page, condition: str, arg) -> None:
    """Wait until `condition` (JS, of the shown frame `i` and `arg`) holds."""
    page.wait_for_function(f"arg => {{ const i = ({SHOWN})(); return {condition}; }}", arg=arg)


def caption(page) -> str:
    return page.locator("#player .frame:not([hidden]) figcaption").inner_text()


def button(page, action: str):
    return page.locator(f"#player [data-action={action}]")


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_the_player_plays_pauses_steps_loops_and_follows_the_slider(page):
    steps = DEFAULT_STEPS
    page.get_by_role("button", name="Run the reverse process").click()
    page.wait_for_function("() => document.querySelector('#step-counter').innerText.includes('first recognises')")
    page.wait_for_selector("#player .frame", state="attached")
    assert page.locator("#player .frame").count() == steps + 1  # every frame, in the page
    # Every frame is shown at once in the player: x_t and x̂₀ (28 px, pixelated) at least 240 px wide.
    sizes = page.eval_on_selector_all("#player .frame:not([hidden]) img",
                                      "imgs => imgs.map(i => [i.complete && i.naturalWidth, i.clientWidth])")
    assert len(sizes) == 2 and all(natural == 28 and width >= 240 for natural, width in sizes)
    # It starts playing by itself from x_T; pause stops it.
    page.wait_for_function("() => document.querySelector('#player [data-action=play]').innerText.includes('Pause')")
    button(page, "play").click()
    assert "Play" in button(page, "play").inner_text()
    paused_at = shown(page)
    page.wait_for_timeout(800)
    assert shown(page) == paused_at
    # One frame back and forward; the caption names the step.
    page.locator("#scrubber input[type=range]").fill("5")  # the slider moves the player (in the browser)
    wait_until_shown(page, "i === arg", 5)
    page.wait_for_function("() => document.querySelector('#step-counter').innerText.includes('step 5 of')")  # and asks
    assert caption(page).startswith(f"step 5 of {steps} ({100 * 5 / steps:.0f}%) · t = ")  # the server for the counter
    button(page, "forward").click()
    assert shown(page) == 6 and caption(page).startswith(f"step 6 of {steps}")
    button(page, "back").click()
    button(page, "back").click()
    assert shown(page) == 4 and caption(page).startswith(f"step 4 of {steps}")
    # The slider follows the player.
    assert page.eval_on_selector("#scrubber input[type=range]", "i => i.value") == "4"
    # Faster; play: the shown frame advances over time, step by step, to the end, and stops there.
    speed = page.locator("#player input[name=fps]")
    speed.fill(str(settings.PLAYER_MAX_FPS))
    assert page.locator("#player output").inner_text() == str(settings.PLAYER_MAX_FPS)
    page.evaluate(f"""() => {{ window.shownFrames = [];  // every frame shown from now on, in order
        new MutationObserver(() => window.shownFrames.push(({SHOWN})()))
            .observe(document.querySelector('#player'), {{subtree: true, attributeFilter: ['hidden']}}); }}""")
    button(page, "play").click()
    assert "Pause" in button(page, "play").inner_text()
    wait_until_shown(page, "i > arg", 4)
    shot(page, "reverse-playback")
    wait_until_shown(page, "i === arg", steps)
    page.wait_for_function("() => document.querySelector('#player [data-action=play]').innerText.includes('Play')")
    seen = page.evaluate("() => window.shownFrames")
    assert [f for k, f in enumerate(seen) if k == 0 or f != seen[k - 1]] == list(range(5, steps + 1))  # none skipped
    assert page.eval_on_selector("#scrubber input[type=range]", "i => i.value") == str(steps)
    # Loop: playing on from the end starts again at x_T and keeps going round.
    page.locator("#player input[name=loop]").check()
    speed.fill("10")
    button(page, "play").click()
    wait_until_shown(page, "i === arg", 0)
    wait_until_shown(page, "i === arg", steps)
    wait_until_shown(page, "i < arg", steps)  # round again
    button(page, "play").click()  # pause
    assert "Play" in button(page, "play").inner_text()
    # The same run asked again (the server has it already) plays again from x_T.
    page.get_by_role("button", name="Run the reverse process").click()
    page.wait_for_function("() => document.querySelector('#player [data-action=play]').innerText.includes('Pause')")


def test_all_ten_digits_render_as_one_filmstrip(page):
    page.get_by_role("button", name="All ten digits at once (filmstrip)").click()
    page.wait_for_function("() => { const i = document.querySelector('#all-ten img'); "
                           "return i && i.complete && i.naturalWidth > 0; }")
    bottom, right = filmstrip_cell(9, len(settings.FILMSTRIP_PERCENTS) - 1, True)
    natural = page.eval_on_selector("#all-ten img", "i => [i.naturalWidth, i.naturalHeight, i.clientWidth]")
    assert natural[:2] == [right + FILMSTRIP_TILE, bottom + FILMSTRIP_TILE]
    assert natural[2] >= 240  # shown large
    table = page.locator("#all-ten-table").inner_text()
    assert "recognisable at" in table and all(str(d) in table for d in range(10))
    page.locator("#all-ten").scroll_into_view_if_needed()
    shot(page, "all-ten")
