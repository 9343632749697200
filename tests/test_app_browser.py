"""The app in a real browser: Debian's Chromium (`apt-get install -y chromium`) driven by Playwright.

Never `playwright install`: the tests use /usr/bin/chromium and skip when it is missing. They share one page,
loaded once, and run in file order (load, play / pause, change the action, download, interpolate).
"""
import shutil
import time
from pathlib import Path

import pytest
from PIL import Image

from actiongen.app_logic import ActionGenService
from actiongen.render import SIDE_COLORS
from test_app import launch, write_random_bundle

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT_COPY = Path("/tmp/actiongen_screenshot.png")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.is_file(),
                       reason="Debian's Chromium is not at /usr/bin/chromium (apt-get install -y chromium)"),
]
sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def server(synthetic_data, tmp_path_factory):
    bundle = write_random_bundle(tmp_path_factory.mktemp("bundle") / "model.json", synthetic_data.stats)
    demo, url = launch(ActionGenService(bundle, device="cpu", work_dir=tmp_path_factory.mktemp("work")))
    yield url
    demo.close()


@pytest.fixture(scope="module")
def page_errors() -> list:
    return []


@pytest.fixture(scope="module")
def page(server, page_errors):
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1400, "height": 1100}, accept_downloads=True)
        page.on("pageerror", lambda error: page_errors.append(str(error)))
        page.goto(server)
        yield page
        browser.close()


def trace_paths(page, elem_id: str) -> list[str]:
    """The SVG path data of each line trace of a plot (one path per stroke): what the user sees."""
    return page.eval_on_selector_all(
        f"#{elem_id} .scatterlayer .trace",
        "traces => traces.map(t => Array.from(t.querySelectorAll('path.js-line'), p => p.getAttribute('d')).join(' '))")


def trace_colors(page, elem_id: str) -> list[str]:
    return page.eval_on_selector_all(f"#{elem_id} .scatterlayer .trace",
                                     "traces => traces.map(t => t.querySelector('path.js-line').style.stroke)")


def path_points(d: str) -> list[tuple[float, float]]:
    return [tuple(map(float, p.split(","))) for p in d.lstrip("M").replace("M", "L").split("L")]


def distinct_drawings(page, elem_id: str, seconds: float = 1.2) -> int:
    seen = set()
    end = time.time() + seconds
    while time.time() < end:
        seen.add(tuple(trace_paths(page, elem_id)))
        time.sleep(0.1)
    return len(seen)


def attached_frames(page, elem_id: str) -> int:
    return page.evaluate(f"() => document.querySelector('#{elem_id} .js-plotly-plot')._transitionData._frames.length")


def plot_title(page, elem_id: str) -> str:
    return page.eval_on_selector(f"#{elem_id} .gtitle", "t => t.textContent")


def wait_for_plot(page, elem_id: str, frames: int, title_start: str = "") -> None:
    """Until the plot shows a figure whose title starts with `title_start` and its animation frames are back."""
    page.wait_for_function(
        """([id, frames, title]) => {
             const gd = document.querySelector('#' + id + ' .js-plotly-plot');
             const shown = gd && gd.querySelector('.gtitle');
             return shown && shown.textContent.startsWith(title) && gd._transitionData
                    && gd._transitionData._frames.length === frames;
           }""", arg=[elem_id, frames, title_start], timeout=60_000)


def test_page_loads_with_an_upright_skeleton_that_plays_by_itself(page, page_errors):
    wait_for_plot(page, "skeleton", 50, "Walking")
    assert distinct_drawings(page, "skeleton") >= 3, "the animation should run without any click"
    expected = [SIDE_COLORS[side] for side in ("right", "left", "center")]
    assert trace_colors(page, "skeleton") == [f"rgb({int(c[1:3], 16)}, {int(c[3:5], 16)}, {int(c[5:7], 16)})" for c in expected]
    spine = path_points(trace_paths(page, "skeleton")[2])  # hip, spine, thorax, head
    assert spine[-1][1] < spine[0][1] - 50, "the head must be drawn above the hip (people stand upright)"
    assert page_errors == []


def test_pause_holds_the_pose_and_play_advances_it(page):
    page.click("#skeleton .updatemenu-button >> text=Pause")
    time.sleep(0.3)
    assert distinct_drawings(page, "skeleton", 0.8) == 1
    slider = "() => document.querySelector('#skeleton .js-plotly-plot')._fullLayout.sliders[0].active"
    paused_at = page.evaluate(slider)
    page.click("#skeleton .updatemenu-button >> text=Play")
    assert distinct_drawings(page, "skeleton", 1.2) >= 3
    assert page.evaluate(slider) != paused_at


def test_changing_the_action_regenerates_the_clip(page):
    before = trace_paths(page, "skeleton")
    page.click("#action input")
    page.get_by_role("option", name="Eating").click()
    wait_for_plot(page, "skeleton", 50, "Eating")
    assert trace_paths(page, "skeleton") != before
    assert distinct_drawings(page, "skeleton") >= 3, "the new clip's frames are attached and playing"
    page.wait_for_function("() => document.querySelector('#summary').textContent.includes('Eating')")


def test_gif_download_delivers_the_gif_of_the_clip(page, tmp_path):
    page.wait_for_selector("#gif-preview img", timeout=30_000)
    page.wait_for_function("() => document.querySelector('#gif-preview img').src.includes('eating')",
                           timeout=30_000)
    with page.expect_download(timeout=30_000) as download:
        page.click("#download-gif")
    target = tmp_path / download.value.suggested_filename
    download.value.save_as(target)
    assert target.name.startswith("actiongen_eating_seed7_50f") and target.suffix == ".gif"
    with Image.open(target) as gif:
        assert gif.format == "GIF" and gif.is_animated and gif.size == (256, 256)


def test_interpolation_strip_animates_its_clips_together(page, tmp_path, page_errors):
    page.get_by_role("tab", name="Latent interpolation").click()
    page.click("#interpolate")
    page.wait_for_selector("#strip .js-plotly-plot", timeout=60_000)
    wait_for_plot(page, "strip", 50, "Eating: seed 7")
    wait_for_plot(page, "skeleton", 50, "Eating, seeds 7")
    assert len(page.query_selector_all("#strip .annotation")) == 5, "five clips from seed A to seed B"
    assert distinct_drawings(page, "strip") >= 3
    time.sleep(1.0)  # let the figures settle mid-animation for the picture
    screenshot = tmp_path / "actiongen.png"
    page.screenshot(path=str(screenshot), full_page=True)
    shutil.copyfile(screenshot, SCREENSHOT_COPY)
    with Image.open(screenshot) as image:
        assert image.width >= 1400 and image.height > 1100
    assert page_errors == []
