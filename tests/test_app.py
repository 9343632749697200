"""The web app: request handlers in-process, then the real server on 127.0.0.1 through gradio_client."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no network calls from the servers under test

import imageio_ffmpeg
import numpy as np
import pytest
import torch
from gradio_client import Client
from gradio_client.exceptions import AppError
import httpx
from PIL import Image

import app
from actiongen.app_logic import (FRAMES_MAX, FRAMES_MIN, GALLERY_SIZE, MAX_TEXT, SEED_MAX, ActionGenService, LRUCache,
                                 PageState, Request, public_message, use_one_thread_per_request)
from actiongen.checkpoint import CheckpointError
from actiongen.skeleton import ACTIONS
from synthetic_h36m import write_random_bundle

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(service: ActionGenService):
    """The app's Blocks for `service`, served as app.py serves it on a free port of 127.0.0.1; returns
    (demo, url)."""
    os.environ["GRADIO_TEMP_DIR"] = str(service.work_dir)  # as app.py: export files are served in place
    demo = app.build_demo(service)
    demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                **app.launch_options())
    return demo, demo.local_url


@pytest.fixture(scope="module")
def bundle_path(synthetic_data, tmp_path_factory) -> Path:
    return write_random_bundle(tmp_path_factory.mktemp("bundle") / "model.json", synthetic_data.stats)


@pytest.fixture(scope="module")
def service(bundle_path, tmp_path_factory) -> ActionGenService:
    return ActionGenService(bundle_path, device="cpu", work_dir=tmp_path_factory.mktemp("work"))


@pytest.fixture(scope="module")
def server(bundle_path, tmp_path_factory):
    demo, url = launch(ActionGenService(bundle_path, device="cpu", work_dir=tmp_path_factory.mktemp("served")))
    yield url
    demo.close()


@pytest.fixture(scope="module")
def client(server) -> Client:
    return Client(server, verbose=False)


def frames_of(figure_json: str) -> list:
    return json.loads(figure_json)["frames"]


def state(**changes) -> PageState:
    return PageState(**changes)


def values(page_state: PageState) -> tuple:
    """The state's values in the order the page (and /view) sends them."""
    return tuple(page_state.to_dict().values())


# ----------------------------------------------------------------------------- the page state

def test_the_app_computes_each_request_on_one_thread():
    use_one_thread_per_request()  # the conftest fixture restores the count after the test
    in_request_thread = []
    worker = threading.Thread(target=lambda: in_request_thread.append(torch.get_num_threads()))
    worker.start()
    worker.join()
    assert torch.get_num_threads() == 1 and in_request_thread == [1]


def test_the_state_names_the_clip_of_each_mode():
    assert state(mode="one").request() == Request("Walking", 7, 50)
    assert state(mode="blend", share_b=0.3).request() == Request("Walking", 7, 50, "Phoning", 0.3, "blend")
    assert state(mode="transition").request() == Request("Walking", 7, 50, "Phoning", 0.5, "transition")
    assert state(mode="interpolate", alpha=0.25).request() == Request("Walking", 7, 50, seed_b=42, alpha=0.25)
    assert state(mode="interpolate").request(seed=3) == Request("Walking", 3, 50), "gallery clips: no partner"
    assert state(mode="interpolate").strip_steps() == 5 and state(mode="blend").strip_steps() == 0


def test_gallery_seeds_are_the_block_of_nine_that_holds_the_seed():
    assert state(seed=7).gallery_seeds() == list(range(0, 9))
    assert state(seed=22).gallery_seeds() == list(range(18, 27))
    assert state(seed=SEED_MAX).gallery_seeds()[-1] == SEED_MAX and len(state(seed=SEED_MAX).gallery_seeds()) == 9


def test_state_parses_raw_values_and_round_trips_through_json():
    parsed = PageState.parse("walking", "12", 50.0, "Interpolate", "PHONING", "0.5", 3, 0.25, 5.0)
    assert parsed == state(seed=12, mode="interpolate", seed_b=3, alpha=0.25)
    assert PageState.from_dict(json.loads(json.dumps(parsed.to_dict()))) == parsed
    assert PageState.from_dict({"action": "Eating", "seed": 4}) == state(action="Eating", seed=4)


BAD_STATES = [
    ({"action": "Jumping"}, "valid actions: Directions, Discussion"),
    ({"action": 3}, "action must be one of"),
    ({"seed": -1}, "seed must be a whole number from 0 to 4294967295"),
    ({"seed": SEED_MAX + 1}, "seed must be a whole number"),
    ({"seed": 1.5}, "seed must be a whole number"),
    ({"seed": "abc"}, "got 'abc'"),
    ({"seed": "5_0"}, "seed must be a whole number"),
    ({"seed": True}, "seed must be"),
    ({"seed": None}, "seed must be"),
    ({"frames": 0}, "frames must be a whole number from 16 to 300"),
    ({"frames": 10**9}, "frames must be a whole number from 16 to 300"),
    ({"frames": float("nan")}, "frames must be"),
    ({"mode": "shuffle"}, "mode must be one of one, blend, transition, interpolate"),
    ({"action_b": "Flying"}, "unknown action_b 'Flying'"),
    ({"share_b": -0.1}, "share_b must be a number from 0.0 to 1.0"),
    ({"alpha": 1.5}, "alpha must be a number from 0.0 to 1.0"),
    ({"steps": 20}, "steps must be a whole number from 3 to 9"),
    ({"action": "W" * 50_000}, f"action is too long (50000 characters; at most {MAX_TEXT})"),
]


@pytest.mark.parametrize("change, message", BAD_STATES)
def test_bad_values_raise_a_short_value_error_naming_what_is_valid(change, message):
    raw = {**PageState().to_dict(), **change}
    with pytest.raises(ValueError) as err:
        PageState.parse(*raw.values())
    assert message in str(err.value) and len(str(err.value)) < 300


@pytest.mark.parametrize("raw, message", [
    ("Walking", "must be a JSON object"),
    ({"seed": 1, "speed": 2}, "unknown state keys ['speed']"),
    ({"k" * 10_000: 1}, "unknown state keys"),
])
def test_a_bad_state_object_is_refused(raw, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[")) as err:
        PageState.from_dict(raw)
    assert len(str(err.value)) < 400


def test_error_messages_show_file_names_not_server_paths():
    assert public_message("/srv/app/assets/model.json: not found (see /tmp/x/a.safetensors)") == \
        "model.json: not found (see a.safetensors)"
    assert public_message("frames must be from 16 to 300; got 3/4") == "frames must be from 16 to 300; got 3/4"


# ----------------------------------------------------------------------------- in-process views

def test_view_returns_an_animated_skeleton_a_latent_path_and_probabilities(service):
    result = service.view(state(action="Walking", seed=5, frames=40))
    assert result.request == Request("Walking", 5, 40) and result.strip is None
    assert result.sample.joints.shape == (40, 16, 2)
    skeleton = json.loads(result.skeleton)
    assert len(skeleton["frames"]) == 40 and len(skeleton["data"]) == 3
    assert skeleton["layout"]["datarevision"] == result.request.slug()
    assert skeleton["layout"]["meta"]["fps"] == pytest.approx(50 / 3)
    first_hip = skeleton["frames"][0]["data"][0]["x"][0], skeleton["frames"][0]["data"][0]["y"][0]
    assert first_hip == (0.0, 0.0), "the hip is the origin of every pose"
    assert len(json.loads(result.latent_path)["data"][1]["x"]) == 40
    bars = json.loads(result.probabilities)["data"][0]
    assert bars["y"] == list(ACTIONS) and sum(bars["x"]) == pytest.approx(1.0, abs=1e-3)
    assert "Walking" in result.summary and "seed 5" in result.summary


def test_results_are_deterministic_and_cached(service, bundle_path, tmp_path):
    first = service.view(state(action="Eating", seed=11, frames=30))
    assert service.view(PageState.parse("EATING", 11.0, "30", "one", "Phoning", 0.5, 42, 0.5, 5)) is first
    fresh = ActionGenService(bundle_path, device="cpu", work_dir=tmp_path).view(state(action="Eating", seed=11,
                                                                                      frames=30))
    assert fresh.skeleton == first.skeleton and fresh.probabilities == first.probabilities
    assert not np.allclose(service.view(state(action="Eating", seed=12, frames=30)).sample.joints,
                           first.sample.joints)


def test_interpolation_has_a_strip_whose_ends_are_the_two_seeds(service):
    result = service.view(state(action="Phoning", seed=1, seed_b=2, alpha=0.25, steps=4, frames=30,
                                mode="interpolate"))
    strip = json.loads(result.strip)
    assert len(strip["frames"]) == 30
    assert [a["text"] for a in strip["layout"]["annotations"]] == ["\u03b1 = 0.00", "\u03b1 = 0.33",
                                                                 "\u03b1 = 0.67", "\u03b1 = 1.00"]
    assert result.sample.alpha == 0.25 and result.sample.seed_b == 2
    ends = [service.view(state(action="Phoning", seed=1, seed_b=2, alpha=a, frames=30, mode="interpolate"))
            for a in (0.0, 1.0)]
    for end, seed in zip(ends, (1, 2)):
        np.testing.assert_allclose(end.sample.joints,
                                   service.view(state(action="Phoning", seed=seed, frames=30)).sample.joints,
                                   atol=1e-5)


def test_mix_blends_or_switches_the_class_weights_and_explains_blends(service):
    walking, phoning = ACTIONS.index("Walking"), ACTIONS.index("Phoning")
    blend = service.view(state(mode="blend", share_b=0.3, seed=4, frames=40))
    np.testing.assert_allclose(blend.sample.class_weights[:, walking], 0.7, atol=1e-6)
    np.testing.assert_allclose(blend.sample.class_weights[:, phoning], 0.3, atol=1e-6)
    assert "trained on single actions" in blend.summary
    switch = service.view(state(mode="transition", share_b=0.3, seed=4, frames=40))
    weights = switch.sample.class_weights
    assert weights[0, walking] == 1.0 and weights[-1, phoning] == 1.0 and np.all(np.diff(weights[:, phoning]) >= 0)
    assert (weights[:, phoning] > 0.5).mean() == pytest.approx(0.3, abs=0.05)
    title = json.loads(switch.skeleton)["layout"]["title"]["text"]
    assert "\u2192" in title and "->" not in title, "one arrow style"
    plain = service.view(state(mode="blend", share_b=0.0, seed=4, frames=40))
    np.testing.assert_allclose(plain.sample.joints, service.view(state(seed=4, frames=40)).sample.joints)


@pytest.mark.parametrize("frames", [FRAMES_MIN, 51, FRAMES_MAX])
@pytest.mark.parametrize("mix", [0.05, 0.3, 0.5, 0.7, 1.0])
def test_transition_window_is_centred_so_a_share_mix_of_the_clip_is_b(frames, mix):
    start, end = Request("Walking", 0, frames, "Phoning", mix, "transition").transition_frames()
    assert 0 <= start < end <= frames - 1
    share_b = (frames - 1 - (start + end) / 2) / (frames - 1)
    if 0.2 <= mix <= 0.8:
        assert share_b == pytest.approx(mix, abs=0.05)
    else:  # the window cannot leave the clip: it stops at the first or last frame
        assert start == 0 if mix > 0.8 else end == frames - 1


def test_gallery_shows_nine_labelled_seeds_of_the_states_clip(service):
    page = state(action="Sitting", seed=12, frames=20, mode="blend", share_b=0.4)
    figure = json.loads(service.gallery(page))
    assert figure["layout"]["meta"]["seeds"] == list(range(9, 18))
    assert figure["layout"]["meta"]["selected"] == 3 and figure["layout"]["meta"]["columns"] == 3
    assert [a["text"] for a in figure["layout"]["annotations"]] == [f"seed {s}" for s in range(9, 18)]
    assert len(figure["frames"]) == 20
    spine = figure["frames"][5]["data"][2]
    hips = [(x, y) for x, y, prev in zip(spine["x"], spine["y"], [None] + spine["x"][:-1])
            if prev is None and x is not None]
    assert len(hips) == GALLERY_SIZE, "one spine stroke per seed"
    own = json.loads(service.view(state(action="Sitting", seed=14, frames=20, mode="blend", share_b=0.4)).skeleton)
    own_spine = own["frames"][5]["data"][2]
    dx, dy = hips[5][0] - own_spine["x"][0], hips[5][1] - own_spine["y"][0]
    shifted = [(round(x + dx, 1), round(y + dy, 1)) for x, y in zip(own_spine["x"], own_spine["y"])]
    drawn_points = list(zip(spine["x"], spine["y"]))
    start = drawn_points.index(hips[5])
    drawn = drawn_points[start:start + len(shifted)]
    assert np.allclose(drawn, shifted, atol=0.11), "cell 5 is seed 14's clip, moved into its cell"


def gif_duration_ms(path) -> int:
    """Total play time of a GIF (Pillow merges identical consecutive frames, adding up their durations)."""
    with Image.open(path) as gif:
        assert gif.format == "GIF" and gif.is_animated
        total = 0
        for index in range(gif.n_frames):
            gif.seek(index)
            total += gif.info["duration"]
        return total


def test_export_files_decode_to_the_clip_and_the_json_records_the_request(service):
    page = state(action="Greeting", seed=8, frames=24, mode="transition", action_b="Sitting", share_b=0.4)
    result = service.view(page)
    files = service.export(page)
    assert {p.suffix for p in files.values()} == {".gif", ".mp4", ".npz", ".json"}
    assert all(p.name.startswith(result.request.slug() + ".") for p in files.values())
    assert gif_duration_ms(files[".gif"]) == pytest.approx(24 / result.sample.fps * 1000, abs=10)
    reader = imageio_ffmpeg.read_frames(str(files[".mp4"]))
    meta = next(reader)
    assert meta["size"][0] >= 256 and sum(1 for _ in reader) == 24
    with np.load(files[".npz"], allow_pickle=False) as npz:
        np.testing.assert_array_equal(npz["joints"], result.sample.joints)
    record = json.loads(files[".json"].read_text())
    np.testing.assert_array_equal(np.asarray(record["joints"], dtype=np.float32), result.sample.joints)
    assert record["request"] == {**result.request.to_dict(), "action_b": "Sitting", "mode": "transition",
                                 "mix": 0.4}
    assert service.export(page) is files


def test_export_cache_is_bounded_and_deletes_evicted_files(bundle_path, tmp_path):
    small = ActionGenService(bundle_path, device="cpu", work_dir=tmp_path, export_cache_size=1)
    first = small.export(state(action="Posing", seed=1, frames=16))
    assert first[".gif"].is_file()
    small.export(state(action="Posing", seed=2, frames=16))
    assert not first[".gif"].exists() and len(small.exports) == 1


def test_lru_cache_drops_the_least_recently_used():
    evicted = []
    cache = LRUCache(2, on_evict=evicted.append)
    for key in ("a", "b", "a", "c"):
        cache.get_or_compute(key, lambda k=key: k.upper())
    assert evicted == ["B"] and len(cache) == 2
    assert cache.get_or_compute("a", lambda: "recomputed") == "A"


def test_a_missing_checkpoint_is_reported_and_the_page_still_builds(tmp_path):
    missing = ActionGenService(tmp_path / "nowhere" / "model.json", device="cpu", work_dir=tmp_path)
    status = missing.status()
    assert "model.json: checkpoint config not found" in status and "ACTIONGEN_CHECKPOINT" in status
    assert str(tmp_path) not in status  # the page never shows the server's directories
    with pytest.raises(CheckpointError, match="not found"):
        missing.view(PageState())
    demo = app.build_demo(missing)
    warnings = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "missing-checkpoint"]
    assert len(warnings) == 1 and "ACTIONGEN_CHECKPOINT" in warnings[0].value


@pytest.mark.parametrize("change", [{"weights": None}, {"fps": 0}, {"model": None}])
def test_a_broken_checkpoint_is_explained_and_the_page_still_builds(bundle_path, tmp_path, change):
    broken = tmp_path / "broken.json"
    for sibling in bundle_path.parent.iterdir():
        shutil.copy(sibling, tmp_path / sibling.name.replace(bundle_path.stem, "broken"))
    broken.write_text(json.dumps({**json.loads(bundle_path.read_text()), **change}))
    service = ActionGenService(broken, device="cpu", work_dir=tmp_path / "work")
    status = service.status()
    if change == {"fps": 0} and status is None:
        pytest.skip("this checkpoint loader accepts fps 0")  # the other engineer's validation decides
    assert status.startswith("No 2D model loaded.") and str(tmp_path) not in status
    app.build_demo(service)


@pytest.fixture(scope="module")
def service_3d(bundle_path, random_bundle_3d_path, tmp_path_factory) -> ActionGenService:
    return ActionGenService(bundle_path, device="cpu", work_dir=tmp_path_factory.mktemp("work3d"),
                            checkpoint_3d=random_bundle_3d_path)


def test_the_3d_model_draws_a_3d_figure_and_flat_strip_and_gallery(service_3d):
    page = state(model="3d", mode="interpolate", steps=3, frames=20)
    result = service_3d.view(page)
    skeleton = json.loads(result.skeleton)
    assert skeleton["data"][0]["type"] == "scatter3d" and len(skeleton["frames"]) == 20
    assert result.sample.joints.shape == (20, 16, 3) and skeleton["layout"]["datarevision"].startswith("actiongen3d_")
    assert "oblique view" in result.summary, "the page says how the strip and gallery draw 3D clips"
    for flat in (result.strip, service_3d.gallery(page)):
        assert json.loads(flat)["data"][0]["type"] == "scatter"
    two_d = service_3d.view(replace(page, model="2d"))
    assert json.loads(two_d.skeleton)["data"][0]["type"] == "scatter" and two_d.sample.joints.shape[-1] == 2


def test_3d_mixing_changes_the_clip(service_3d):
    one = service_3d.view(state(model="3d", frames=20)).sample
    blend = service_3d.view(state(model="3d", frames=20, mode="blend", share_b=0.5)).sample
    assert blend.class_weights[0].max() == pytest.approx(0.5) and not np.array_equal(one.joints, blend.joints)


def test_3d_exports_add_a_bvh_file(service_3d):
    files = service_3d.export(state(model="3d", frames=20))
    assert set(files) == {".gif", ".mp4", ".npz", ".json", ".bvh"}
    assert files[".bvh"].name == "actiongen3d_walking_seed7_20f.bvh"
    assert files[".bvh"].read_text().startswith("HIERARCHY") and "Frames: 20" in files[".bvh"].read_text()
    with np.load(files[".npz"], allow_pickle=False) as arrays:
        assert arrays["joints"].shape == (20, 16, 3)


def test_the_api_takes_the_model_choice(service_3d):
    demo, url = launch(service_3d)
    try:
        client = Client(url, verbose=False)
        page = state(model="3d", frames=20, mode="transition")
        skeleton, _, _, _, returned, _ = client.predict(*values(page), api_name="/view")
        assert skeleton == service_3d.view(page).skeleton and returned["model"] == "3d"
        *_, bvh = client.predict(returned, api_name="/export")
        assert Path(bvh).name == f"{page.request().slug()}.bvh"
        assert Path(bvh).read_text().startswith("HIERARCHY")
    finally:
        demo.close()


def test_a_missing_3d_model_is_explained_and_2d_keeps_working(bundle_path, tmp_path):
    service = ActionGenService(bundle_path, device="cpu", work_dir=tmp_path, checkpoint_3d=tmp_path / "none.json")
    assert service.status("2d") is None
    status = service.status("3d")
    assert status.startswith("No 3D model loaded.") and "ACTIONGEN_CHECKPOINT_3D" in status
    with pytest.raises(CheckpointError, match="not found"):
        service.view(state(model="3d"))
    assert service.view(state()).sample.joints.shape[-1] == 2
    demo = app.build_demo(service)
    warnings = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "missing-checkpoint-3d"]
    assert len(warnings) == 1 and "No 3D model loaded" in warnings[0].value
    switch = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "model")
    assert "no 3D model is loaded" in switch.info


def test_a_bundle_of_the_other_kind_is_refused(bundle_path, random_bundle_3d_path, tmp_path):
    swapped = ActionGenService(random_bundle_3d_path, device="cpu", work_dir=tmp_path, checkpoint_3d=bundle_path)
    assert "is a 3D bundle" in swapped.status("2d") and "is a 2D bundle" in swapped.status("3d")


def test_every_server_event_shares_one_concurrency_limit(service):
    demo = app.build_demo(service)
    model_events = [fn for fn in demo.fns.values() if fn.name in ("view", "gallery", "export")]
    assert {fn.name for fn in model_events} == {"view", "gallery", "export"}
    assert {(fn.concurrency_id, fn.concurrency_limit) for fn in model_events} == {("model", "default")}
    assert demo._queue.default_concurrency_limit == app.MODEL_CONCURRENCY


# ----------------------------------------------------------------------------- the server, via gradio_client

def test_api_has_stable_named_endpoints_and_no_internal_ones(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    parameters = {name: [p["parameter_name"] for p in info["parameters"]] for name, info in endpoints.items()}
    assert parameters == {"/view": list(PageState().to_dict()), "/gallery": ["state"], "/export": ["state"]}


def test_view_endpoint_matches_the_in_process_result(client, service):
    page = state(action="Sitting", seed=3, frames=60, mode="interpolate", seed_b=9, steps=3)
    skeleton, summary, latent, probabilities, returned, strip = client.predict(*values(page), api_name="/view")
    expected = service.view(page)
    assert skeleton == expected.skeleton and strip == expected.strip and summary == expected.summary
    assert latent["plot"] == expected.latent_path and probabilities["plot"] == expected.probabilities
    assert returned == page.to_dict()
    assert client.predict(*values(state(seed=3)), api_name="/view")[5] == "", "no strip outside interpolation"


def test_gallery_and_export_endpoints_take_the_state(client, service):
    page = state(action="Smoking", seed=4, frames=20)
    assert client.predict(page.to_dict(), api_name="/gallery") == service.gallery(page)
    preview, gif, mp4, npz, data, bvh = client.predict(page.to_dict(), api_name="/export")
    assert preview == gif and gif_duration_ms(gif) == pytest.approx(20 * 60, abs=10)
    assert Path(mp4).read_bytes()[4:8] == b"ftyp"
    with np.load(npz, allow_pickle=False) as arrays:
        assert arrays["joints"].shape == (20, 16, 2)
    assert json.loads(Path(data).read_text())["seed"] == 4 and bvh is None, "BVH only for 3D"


@pytest.mark.parametrize("args, endpoint, message", [
    (values(state())[:1] + ("Jumping",) + values(state())[2:], "/view", "seed must be a whole number"),
    (("Jumping",) + values(state())[1:], "/view", "valid actions: Directions"),
    (("W" * 5000,) + values(state())[1:], "/view", "action is too long (5000 characters"),
    (values(state())[:7] + (2, 5, "2d"), "/view", "alpha must be a number from 0.0 to 1.0"),
    (({"action": "Walking", "seed": -5},), "/export", "seed must be"),
    (values(state())[:9] + ("4d",), "/view", "model must be one of 2d, 3d"),
    (({"action": "Walking", "speed": 1},), "/gallery", "unknown state keys ['speed']"),
])
def test_bad_api_input_gives_a_readable_error_and_the_server_keeps_serving(server, args, endpoint, message):
    client = Client(server, verbose=False)
    with pytest.raises(Exception) as err:
        client.predict(*args, api_name=endpoint)
    text = str(err.value)
    assert message in text and len(text) < 400 and "W" * 200 not in text
    assert len(frames_of(client.predict(*values(state(frames=16)), api_name="/view")[0])) == 16


def test_a_call_with_the_wrong_number_of_values_gets_a_readable_error(server):
    call = server.rstrip("/") + "/gradio_api/call/view"
    event = httpx.post(call, json={"data": ["Walking", 1, 50]}).json()["event_id"]
    answer = httpx.get(f"{call}/{event}", timeout=60).text
    assert "event: error" in answer and "view takes 10 values (action, seed, frames, mode" in answer


def test_large_bodies_uploads_and_private_endpoints_are_refused(server):
    big = httpx.post(server.rstrip("/") + "/gradio_api/queue/join", content=b"x" * (app.MAX_BODY_BYTES + 1),
                     headers={"content-type": "application/json"})
    assert big.status_code == 413 and len(big.content) < 200
    upload = httpx.post(server.rstrip("/") + "/gradio_api/upload", files={"files": ("a.txt", b"hello")})
    assert upload.status_code == 403
    info = httpx.get(server.rstrip("/") + "/gradio_api/info").json()
    assert set(info["named_endpoints"]) == {"/view", "/gallery", "/export"}


def test_fifty_concurrent_calls_from_several_clients_equal_serial_results(server, bundle_path, tmp_path):
    pages = [state(action=ACTIONS[i % len(ACTIONS)], seed=1000 + i, frames=16 + 2 * i) for i in range(50)]
    clients = [Client(server, verbose=False) for _ in range(5)]
    jobs = [clients[i % len(clients)].submit(*values(page), api_name="/view") for i, page in enumerate(pages)]
    with ThreadPoolExecutor(len(jobs)) as pool:
        answers = list(pool.map(lambda job: job.result(timeout=120), jobs))
    serial = ActionGenService(bundle_path, device="cpu", work_dir=tmp_path)
    for page, answer in zip(pages, answers):
        assert answer[0] == serial.view(page).skeleton and answer[4] == page.to_dict()


def start_app_py(env_changes: dict, port: int) -> subprocess.Popen:
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False"}
    env.pop("GRADIO_SERVER_NAME", None)
    env.pop("GRADIO_TEMP_DIR", None)
    env.update(env_changes)
    return subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def app_temp_folders(temp: Path) -> list[Path]:
    return sorted(temp.glob("actiongen-app-*"))


def test_app_py_starts_without_a_checkpoint_and_removes_its_temp_folder_on_sigterm(tmp_path):
    port = free_port()
    process = start_app_py({"ACTIONGEN_CHECKPOINT": str(tmp_path / "missing.json"), "TMPDIR": str(tmp_path)}, port)
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.time() + 90
        while True:
            try:
                client = Client(url, verbose=False)
                break
            except Exception:
                if process.poll() is not None or time.time() > deadline:
                    raise AssertionError(f"app.py did not come up:\n{process.communicate(timeout=5)[0]}")
                time.sleep(0.5)
        with pytest.raises(AppError, match="missing.json: checkpoint config not found") as err:
            client.predict(*values(state()), api_name="/view")
        assert str(tmp_path) not in str(err.value), "no server paths in errors"
        assert any("ACTIONGEN_CHECKPOINT" in str(c.get("props", {}).get("value", ""))
                   for c in client.config["components"])
        assert len(app_temp_folders(tmp_path)) == 1
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    assert app_temp_folders(tmp_path) == [], "SIGTERM must remove the app's temp folder"


def test_a_failed_start_removes_the_temp_folder(tmp_path):
    # launch fails: there is no such address to serve on
    process = start_app_py({"TMPDIR": str(tmp_path), "GRADIO_SERVER_NAME": "192.0.2.255"}, free_port())
    output = process.communicate(timeout=120)[0]
    assert process.returncode != 0, output
    assert app_temp_folders(tmp_path) == []
