"""The app in a real browser: Debian's Chromium (`apt-get install -y chromium`) driven by Playwright.

Never `playwright install`: the tests use /usr/bin/chromium and skip when it is missing. One server for the
module; the desktop tests share one page and run in file order (load and loop, pause, modes and the views
that follow them, seed typing, clamping, downloads, gallery, then the 3D model), then a phone-sized page. Every test that looks
at the page also checks that no console error or page error happened so far. Screenshots go to
SCREENSHOTS (printed), to be looked at.
"""
import json
import os
import time
from pathlib import Path

import pytest
from PIL import Image

from actiongen.app_logic import ActionGenService
from test_app import launch, write_random_bundle

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(os.environ.get("ACTIONGEN_SCREENSHOTS", "/tmp/actiongen_screenshots"))
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.is_file(),
                       reason="Debian's Chromium is not at /usr/bin/chromium (apt-get install -y chromium)"),
]
sync_api = pytest.importorskip("playwright.sync_api")

# The main view's state, read in the page: what the player shows and has shown.
MAIN = "() => { const v = window.actiongenPlayer.views.skeleton; return {revision: v.revision, shown: v.shown, wraps: v.wraps}; }"
# Counts the views the page asks for from now on (each event's view calls commit once).
COUNT_COMMITS = """() => { const p = window.actiongenPlayer; p.commits = 0; if (p.counted) return;
                            const commit = p.commit.bind(p); p.counted = true;
                            p.commit = (...args) => { p.commits += 1; return commit(...args); }; }"""


@pytest.fixture(scope="module")
def server(synthetic_data, random_bundle_3d_path, tmp_path_factory):
    bundle = write_random_bundle(tmp_path_factory.mktemp("bundle") / "model.json", synthetic_data.stats)
    demo, url = launch(ActionGenService(bundle, device="cpu", work_dir=tmp_path_factory.mktemp("work"),
                                        checkpoint_3d=random_bundle_3d_path))
    yield url
    demo.close()


@pytest.fixture(scope="module")
def browser():
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    print(f"screenshots in {SCREENSHOTS}")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-renderer-backgrounding"])
        yield browser
        browser.close()


def open_page(browser, url: str, viewport: dict):
    page = browser.new_page(viewport=viewport, accept_downloads=True)
    page.set_default_timeout(60_000)  # a machine busy with other jobs can be slow to answer
    page.problems = []  # console errors and page errors, checked by every test
    page.on("console", lambda message: page.problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: page.problems.append(str(error)))
    page.goto(url)
    wait_for_main(page, "actiongen_walking_seed7_50f")
    return page


@pytest.fixture(scope="module")
def page(browser, server):
    page = open_page(browser, server, {"width": 1400, "height": 1000})
    yield page
    page.close()


def wait_for_main(page, revision: str, timeout: float = 60_000) -> None:
    page.wait_for_function("(r) => window.actiongenPlayer && window.actiongenPlayer.views.skeleton"
                           " && window.actiongenPlayer.views.skeleton.revision === r", arg=revision, timeout=timeout)


def revision_of(page, view: str) -> str:
    return page.evaluate(f"() => window.actiongenPlayer.views[{view!r}].revision")


def wait_for_view(page, view: str, part: str) -> None:
    page.wait_for_function(f"(p) => (window.actiongenPlayer.views[{view!r}].revision || '').includes(p)",
                           arg=part, timeout=60_000)


def line_paths(page, view: str) -> list[str]:
    return page.eval_on_selector_all(f"#{view} path.ag-line", "paths => paths.map(p => p.getAttribute('d'))")


def points(d: str) -> list[tuple[float, float]]:
    return [tuple(map(float, p.split(","))) for p in d.replace("M", "L").split("L") if p]


def choose(page, elem_id: str, option: str) -> None:
    page.click(f"#{elem_id} input")
    page.get_by_role("option", name=option, exact=True).click()


def pick_mode(page, label: str) -> None:
    page.locator("#mode label", has_text=label).click()


def type_number(page, selector: str, text: str) -> None:
    page.fill(selector, "")
    page.type(selector, text, delay=60)


# The 3D view: the skeleton traces' drawn coordinates and the camera plotly.js draws with.
DRAWN_3D = "() => window.actiongenPlayer.views.skeleton.plot.data.slice(0, 3).map(t => [t.x, t.y, t.z])"
CAMERA_EYE = "() => window.actiongenPlayer.views.skeleton.plot._fullLayout.scene._scene.getCamera().eye"


def pick_model(page, label: str) -> None:
    page.locator("#model label", has_text=label).click()


def assert_no_problems(page) -> None:
    assert page.problems == [], "console or page errors"


def test_the_clip_plays_by_itself_and_loops(page):
    before = page.evaluate(MAIN)
    page.wait_for_function("() => window.actiongenPlayer.views.skeleton.wraps >= 2", timeout=40_000)
    assert page.evaluate(MAIN)["revision"] == before["revision"]
    spine = points(line_paths(page, "skeleton")[2])  # hip, spine, thorax, head
    assert spine[-1][1] < spine[0][1] - 50, "the head is drawn above the hip (people stand upright)"
    assert_no_problems(page)


def test_the_skeleton_fills_its_view(page):
    box = page.eval_on_selector("#skeleton svg", "s => s.getBoundingClientRect().toJSON()")
    drawn = page.eval_on_selector("#skeleton svg", """s => {
        const boxes = Array.from(s.querySelectorAll('path.ag-line'), p => p.getBoundingClientRect());
        return {top: Math.min(...boxes.map(b => b.top)), bottom: Math.max(...boxes.map(b => b.bottom))}; }""")
    assert drawn["bottom"] - drawn["top"] > 0.6 * box["height"], "tight axes: the skeleton is big"


def test_pause_holds_the_pose_and_play_goes_on(page):
    page.click("#skeleton .ag-play >> text=Pause")
    held = page.evaluate(MAIN)["shown"]
    time.sleep(0.6)
    assert page.evaluate(MAIN)["shown"] == held
    page.fill("#skeleton .ag-seek", "10")  # dragging the frame slider while paused shows that frame
    page.wait_for_function("() => window.actiongenPlayer.views.skeleton.shown === 10")
    page.click("#skeleton .ag-play >> text=Play")
    page.wait_for_function("() => window.actiongenPlayer.views.skeleton.shown > 12")
    assert_no_problems(page)


def test_every_view_follows_every_change_of_the_state(page):
    pick_mode(page, "Interpolate seed \u2192 seed B")
    wait_for_view(page, "strip", "strip-actiongen_walking_seed7_50f_to42")
    assert page.locator("#strip .ag-caption").count() == 5
    choose(page, "action", "Eating")  # the main clip, the strip and the gallery all change
    wait_for_main(page, "actiongen_eating_seed7_50f_to42_alpha0.500")
    wait_for_view(page, "strip", "strip-actiongen_eating_seed7")
    wait_for_view(page, "gallery", "gallery-actiongen_eating_seed0_50f")
    type_number(page, "#seed-b input", "43")
    page.press("#seed-b input", "Enter")  # seed B changes the strip and the main clip at once
    wait_for_main(page, "actiongen_eating_seed7_50f_to43_alpha0.500")
    wait_for_view(page, "strip", "_to43_")
    page.fill("#steps input[type=number]", "3")
    page.press("#steps input[type=number]", "Enter")
    page.wait_for_function("() => document.querySelectorAll('#strip .ag-caption').length === 3", timeout=30_000)
    pick_mode(page, "Blend A + B")
    wait_for_main(page, "actiongen_eating_seed7_50f_blend_phoning_mix0.500")
    assert page.locator("#strip svg").is_hidden(), "no strip outside interpolation"
    choose(page, "action", "Walking")  # the blend stays: the page shows what the state says
    wait_for_main(page, "actiongen_walking_seed7_50f_blend_phoning_mix0.500")
    wait_for_view(page, "gallery", "gallery-actiongen_walking_seed0_50f_blend_phoning")
    assert "->" not in page.inner_text("body"), "one arrow style"
    pick_mode(page, "One action")
    wait_for_main(page, "actiongen_walking_seed7_50f")
    assert_no_problems(page)


def test_typing_a_seed_draws_once_on_enter_and_an_empty_box_keeps_the_seed(page):
    page.evaluate("() => { window.drawn = []; const v = window.actiongenPlayer.views.skeleton;"
                  " new MutationObserver(() => window.drawn.push(v.revision)).observe(v.svg, {attributes: true}); }")
    type_number(page, "#seed input", "4321")
    time.sleep(1.0)
    assert page.evaluate(MAIN)["revision"] == "actiongen_walking_seed7_50f", "no clip per keystroke"
    page.press("#seed input", "Enter")
    wait_for_main(page, "actiongen_walking_seed4321_50f")
    assert set(page.evaluate("() => window.drawn")) <= {"actiongen_walking_seed7_50f", "actiongen_walking_seed4321_50f"}
    page.fill("#seed input", "")
    page.click("#intro")  # leave the box empty
    time.sleep(1.0)
    assert page.input_value("#seed input") == "4321" and page.locator(".toast-body, .error").count() == 0
    assert_no_problems(page)


def test_clamped_values_are_the_values_used(page):
    type_number(page, "#seed input", "-5")
    page.press("#seed input", "Enter")
    wait_for_main(page, "actiongen_walking_seed0_50f")
    assert page.input_value("#seed input") == "0"
    pick_mode(page, "Interpolate seed \u2192 seed B")
    page.fill("#alpha input[type=number]", "1.5")
    page.press("#alpha input[type=number]", "Enter")
    wait_for_main(page, "actiongen_walking_seed0_50f_to43_alpha1.000")
    assert float(page.input_value("#alpha input[type=number]")) == 1.0
    page.fill("#steps input[type=number]", "20")
    page.press("#steps input[type=number]", "Enter")
    page.wait_for_function("() => document.querySelectorAll('#strip .ag-caption').length === 9", timeout=30_000)
    assert float(page.input_value("#steps input[type=number]")) == 9
    assert page.locator(".toast-body, .error").count() == 0
    assert_no_problems(page)


def test_a_change_never_blanks_the_view_and_downloads_are_never_stale(page, tmp_path):
    page.evaluate("""() => { window.blank = 0; const v = window.actiongenPlayer.views.skeleton;
        const check = () => { if (v.layers.some(l => !l.line.getAttribute('d'))) window.blank += 1;
                               requestAnimationFrame(check); };
        requestAnimationFrame(check); }""")
    page.wait_for_selector("#downloads:not(.ag-stale)", timeout=60_000)  # the last change's files are there
    page.evaluate("""() => { const downloads = document.querySelector('#downloads');
        window.staleness = [downloads.classList.contains('ag-stale')];
        new MutationObserver(() => window.staleness.push(downloads.classList.contains('ag-stale')))
            .observe(downloads, {attributes: true, attributeFilter: ['class']}); }""")
    pick_mode(page, "One action")
    type_number(page, "#seed input", "77")
    page.press("#seed input", "Enter")
    wait_for_main(page, "actiongen_walking_seed77_50f")
    page.wait_for_selector("#downloads:not(.ag-stale)", timeout=60_000)
    staleness = page.evaluate("() => window.staleness")
    assert staleness[0] is False and True in staleness and staleness[-1] is False, "stale while files are made"
    with page.expect_download(timeout=30_000) as download:
        page.click("#download-gif")
    target = tmp_path / download.value.suggested_filename
    download.value.save_as(target)
    assert target.name == "actiongen_walking_seed77_50f.gif"
    with Image.open(target) as gif:
        assert gif.format == "GIF" and gif.is_animated
    assert page.evaluate("() => window.blank") == 0
    assert_no_problems(page)


def test_gallery_plays_nine_seeds_in_sync_and_a_click_opens_one(page):
    type_number(page, "#seed input", "0")
    page.press("#seed input", "Enter")
    wait_for_view(page, "gallery", "gallery-actiongen_walking_seed0_50f-0")
    assert page.eval_on_selector_all("#gallery .ag-caption", "t => t.map(e => e.textContent)") == \
        [f"seed {s}" for s in range(9)]
    shown = page.evaluate("() => [window.actiongenPlayer.views.gallery.shown, window.actiongenPlayer.views.skeleton.shown]")
    assert abs(shown[0] - shown[1]) <= 1, "one clock for every view"
    page.locator("#gallery").scroll_into_view_if_needed()
    box = page.eval_on_selector("#gallery svg", "s => s.getBoundingClientRect().toJSON()")
    time.sleep(0.5)
    page.screenshot(path=str(SCREENSHOTS / "gallery.png"), clip=box)
    cells = page.eval_on_selector_all("#gallery .ag-caption", "t => t.map(e => e.getBoundingClientRect().toJSON())")
    page.focus("#seed input")
    page.evaluate(COUNT_COMMITS)
    page.mouse.click(cells[5]["x"] + cells[5]["width"] / 2, cells[5]["y"] + 60)
    wait_for_main(page, "actiongen_walking_seed5_50f")
    assert page.input_value("#seed input") == "5"
    wait_for_view(page, "gallery", "gallery-actiongen_walking_seed0_50f-5")
    assert page.evaluate("() => window.actiongenPlayer.commits") == 1, \
        "one view per click: the seed box losing focus must not start a second one for the old seed"
    assert_no_problems(page)


def test_views_play_together_at_real_speed(page):
    pick_mode(page, "Interpolate seed \u2192 seed B")
    wait_for_view(page, "strip", "strip-actiongen_walking_seed5")
    page.evaluate("""() => { window.advanced = 0; let last = -1; const v = window.actiongenPlayer.views.skeleton;
        const count = () => { if (v.shown !== last) { window.advanced += 1; last = v.shown; }
                              requestAnimationFrame(count); };
        requestAnimationFrame(count); }""")
    time.sleep(3.0)
    assert page.evaluate("() => window.advanced") >= 0.8 * 3.0 * 50 / 3, "about 16.7 frames per second"
    time.sleep(0.5)
    page.screenshot(path=str(SCREENSHOTS / "desktop.png"), full_page=True)
    with Image.open(SCREENSHOTS / "desktop.png") as image:
        assert image.width == 1400
    assert_no_problems(page)


def test_controls_are_explained_and_the_random_seed_is_the_main_button(page):
    assert page.locator("button.primary").all_inner_texts() == ["Random seed"]
    assert page.locator("#seed input").count() == 1
    assert page.locator("#controls input[type=range]").count() == 4, "frames, share, alpha, strip: no seed slider"
    assert "after the switch to B" in page.inner_text("#share-b")
    assert "non-commercial research only" in page.inner_text("#licence")
    before = revision_of(page, "skeleton")
    page.focus("#seed input")
    page.evaluate(COUNT_COMMITS)
    page.click("#random-seed")
    page.wait_for_function("(r) => window.actiongenPlayer.views.skeleton.revision !== r", arg=before,
                           timeout=30_000)
    assert page.input_value("#seed input") in page.evaluate(MAIN)["revision"]
    assert page.evaluate("() => window.actiongenPlayer.commits") == 1, "one view per click, none for the old seed"
    assert_no_problems(page)


def test_frames_second_action_share_and_examples_change_the_clip(page):
    pick_mode(page, "Switch A \u2192 B")
    choose(page, "action-b", "Sitting")
    page.fill("#share-b input[type=number]", "0.3")
    page.press("#share-b input[type=number]", "Enter")
    page.fill("#frames input[type=number]", "80")
    page.press("#frames input[type=number]", "Enter")
    seed = page.input_value("#seed input")
    wait_for_main(page, f"actiongen_walking_seed{seed}_80f_transition_sitting_mix0.300")
    wait_for_view(page, "gallery", "_80f_transition_sitting_mix0.300")
    page.get_by_text("Eating blended with Smoking").click()
    wait_for_main(page, "actiongen_eating_seed11_80f_blend_smoking_mix0.400")
    assert page.input_value("#seed input") == "11"
    assert_no_problems(page)


def test_3d_plays_turns_while_playing_and_downloads_bvh(page, tmp_path):
    pick_model(page, "3D")
    wait_for_main(page, "actiongen3d_eating_seed11_80f_blend_smoking_mix0.400")  # the state stays, in 3D
    assert page.locator("#skeleton svg.ag-svg").is_hidden() and page.locator("#skeleton .ag-plot3d").is_visible()
    wait_for_view(page, "gallery", "gallery-actiongen3d_eating")  # drawn flat, in the oblique view
    first = page.evaluate(DRAWN_3D)
    page.wait_for_function(f"() => JSON.stringify(({DRAWN_3D})()) !== {json.dumps(json.dumps(first))}",
                           timeout=20_000)  # the 3D figure animates
    eye = page.evaluate(CAMERA_EYE)
    page.locator("#skeleton").scroll_into_view_if_needed()
    assert page.evaluate("() => window.actiongenPlayer.playing")
    box = page.eval_on_selector("#skeleton .ag-plot3d", "p => p.getBoundingClientRect().toJSON()")
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    for step in range(1, 16):  # a slow drag, so frames are drawn while the user turns the view
        page.mouse.move(x + 12 * step, y + 2 * step)
        time.sleep(0.05)
    page.mouse.up()
    turned = page.evaluate(CAMERA_EYE)
    assert abs(turned["x"] - eye["x"]) + abs(turned["y"] - eye["y"]) > 0.3, "the drag turned the view"
    before = page.evaluate(MAIN)
    drawn = page.evaluate(DRAWN_3D)
    time.sleep(1.5)
    after = page.evaluate(MAIN)
    assert (after["shown"], after["wraps"]) != (before["shown"], before["wraps"]), "it plays on after the turn"
    assert page.evaluate(DRAWN_3D) != drawn, "and the drawn skeleton keeps moving"
    assert page.evaluate(CAMERA_EYE) == pytest.approx(turned, abs=1e-6), "the camera stays where the user put it"
    page.wait_for_selector("#downloads:not(.ag-stale)", timeout=60_000)
    with page.expect_download(timeout=30_000) as download:
        page.click("#download-bvh")
    target = tmp_path / download.value.suggested_filename
    download.value.save_as(target)
    assert target.name == "actiongen3d_eating_seed11_80f_blend_smoking_mix0.400.bvh"
    assert target.read_text().startswith("HIERARCHY")
    page.screenshot(path=str(SCREENSHOTS / "desktop-3d.png"), full_page=True)
    pick_model(page, "2D")
    wait_for_main(page, "actiongen_eating_seed11_80f_blend_smoking_mix0.400")
    assert page.locator("#skeleton svg.ag-svg").is_visible() and page.locator("#download-bvh").is_hidden()
    assert page.evaluate("() => window.actiongenPlayer.errors") == []
    assert_no_problems(page)


def test_phone_layout_puts_the_skeleton_first_and_nothing_overlaps(browser, server):
    phone = open_page(browser, server, {"width": 390, "height": 844})
    try:
        box = phone.eval_on_selector("#skeleton svg", "s => s.getBoundingClientRect().toJSON()")
        assert box["y"] < 200 and box["width"] > 0.8 * 390, "the first skeleton is near the top"
        transport = phone.eval_on_selector("#skeleton .ag-transport", "t => t.getBoundingClientRect().toJSON()")
        assert transport["y"] >= box["y"] + box["height"] - 1, "play and the slider sit under the skeleton"
        assert phone.evaluate("() => document.documentElement.scrollWidth") <= 390, "no sideways scrolling"
        phone.wait_for_function("() => window.actiongenPlayer.views.skeleton.wraps >= 1", timeout=20_000)
        phone.screenshot(path=str(SCREENSHOTS / "phone.png"))
        pick_model(phone, "3D")
        wait_for_main(phone, "actiongen3d_walking_seed7_50f")
        plot = phone.eval_on_selector("#skeleton .ag-plot3d", "p => p.getBoundingClientRect().toJSON()")
        assert plot["width"] > 0.8 * 390 and plot["height"] > 300
        transport = phone.eval_on_selector("#skeleton .ag-transport", "t => t.getBoundingClientRect().toJSON()")
        assert transport["y"] >= plot["y"] + plot["height"] - 1, "the 3D view leaves play and the slider visible"
        assert phone.evaluate("() => document.documentElement.scrollWidth") <= 390
        phone.locator("#skeleton").scroll_into_view_if_needed()
        time.sleep(0.5)
        phone.screenshot(path=str(SCREENSHOTS / "phone-3d.png"))
        assert_no_problems(phone)
    finally:
        phone.close()
