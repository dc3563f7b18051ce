"""The Reverse-process tab's player and all-ten filmstrip in a real browser (Debian's chromium driven by
playwright, `python app.py` started as a Space starts it): play, pause, frame by frame, speed, loop, the
frame slider, and the filmstrip. Screenshots go to test-artifacts/."""

import pytest

from browser_app import app_page, shot

from diffusion.requests import DEFAULT_STEPS
from ui import settings
from ui.rendering import FILMSTRIP_TILE, filmstrip_cell

pytestmark = pytest.mark.browser

SHOWN = "() => [...document.querySelectorAll('#player .frame')].findIndex(f => !f.hidden)"  # the frame on show


@pytest.fixture
def page(browser, app_url):
    """A fresh page on the app's Reverse process tab (see browser_app.app_page)."""
    with app_page(browser, app_url, tab="Reverse process") as page:
        yield page


def shown(page) -> int:
    return page.evaluate(SHOWN)


def wait_until_shown(page, condition: str, arg) -> None:
    """Wait until `condition` (JS, of the shown frame `i` and `arg`) holds."""
    page.wait_for_function(f"arg => {{ const i = ({SHOWN})(); return {condition}; }}", arg=arg)


def caption(page) -> str:
    return page.locator("#player .frame:not([hidden]) figcaption").inner_text()


def button(page, action: str):
    return page.locator(f"#player [data-action={action}]")


def test_the_player_plays_pauses_steps_loops_and_follows_the_slider(page):
    steps = DEFAULT_STEPS
    page.get_by_role("button", name="Run the reverse process").click()
    page.wait_for_function("() => document.querySelector('#step-counter').innerText.includes('first recognises')")
    page.wait_for_selector("#player .frame", state="attached")
    assert page.locator("#player .frame").count() == steps + 1  # every frame, in the page
    # Every frame is shown at once in the player: x_t and x̂₀ (28 px, pixelated) at least 240 px wide.
    # (each a tile showing its cell of the run's sheet of frames, scaled so one 28-px cell fills the tile: 100%)
    sizes = page.eval_on_selector_all("#player .frame:not([hidden]) .tile", """tiles => tiles.map(t => {
        const style = getComputedStyle(t), columns = Number(t.closest('.player').dataset.columns);
        return [t.clientWidth, t.clientHeight, parseFloat(style.backgroundSize) / columns, style.imageRendering,
                style.backgroundImage.includes('gradio_api/file=')]; })""")
    assert len(sizes) == 2, sizes
    for width, height, cell_shown, rendering, has_sheet in sizes:
        assert width >= 240 and height == width and cell_shown == 100 and rendering == "pixelated" and has_sheet
    # … and the sheets load (the app serves them): columns × 28 px wide
    loaded = page.evaluate("""async () => {
        const player = document.querySelector('#player .player');
        const urls = ['--x-t-sheet', '--x0-sheet'].map(name =>
            getComputedStyle(player).getPropertyValue(name).trim().replace(/^url\\(["']?|["']?\\)$/g, ''));
        return Promise.all(urls.map(url => new Promise(done => {
            const image = new Image();
            image.onload = () => done(image.naturalWidth);
            image.onerror = () => done(-1);
            image.src = url; })));
    }""")
    columns = int(page.locator("#player .player").get_attribute("data-columns"))
    assert loaded == [columns * 28] * 2, loaded
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
