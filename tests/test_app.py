"""The web app: request handlers in-process, then the real server on 127.0.0.1 through gradio_client."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no network calls from the servers under test

import imageio_ffmpeg
import numpy as np
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError
from PIL import Image

import app
from actiongen.app_logic import FRAMES_MAX, FRAMES_MIN, SEED_MAX, ActionGenService, LRUCache, Request
from actiongen.checkpoint import CheckpointError
from actiongen.skeleton import ACTIONS
from synthetic_h36m import write_random_bundle

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(service: ActionGenService):
    """The app's Blocks for `service`, served on a free port of 127.0.0.1; returns (demo, url)."""
    demo = app.build_demo(service)
    demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                ssr_mode=False)
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


# ----------------------------------------------------------------------------- in-process handlers

def test_generate_returns_an_animated_skeleton_a_latent_path_and_probabilities(service):
    result = service.generate("walking", 5, 40)
    assert result.request == Request("Walking", 5, 40)
    assert result.sample.joints.shape == (40, 16, 2)
    skeleton = json.loads(result.skeleton)
    assert len(skeleton["frames"]) == 40 and len(skeleton["data"]) == 3
    assert skeleton["layout"]["datarevision"] == result.request.slug()
    first_hip = skeleton["frames"][0]["data"][0]["x"][0], skeleton["frames"][0]["data"][0]["y"][0]
    assert first_hip == (0.0, 0.0), "the hip is the origin of every pose"
    latent = json.loads(result.latent_path)
    assert len(latent["data"][1]["x"]) == 40
    bars = json.loads(result.probabilities)["data"][0]
    assert bars["y"] == list(ACTIONS)
    assert sum(bars["x"]) == pytest.approx(1.0, abs=1e-3)
    assert "Walking" in result.summary and "seed 5" in result.summary


def test_results_are_deterministic_and_cached(service, bundle_path, tmp_path):
    first = service.generate("Eating", 11, 30)
    assert service.generate("EATING", 11.0, "30") is first, "same request after parsing: served from the cache"
    fresh = ActionGenService(bundle_path, device="cpu", work_dir=tmp_path).generate("Eating", 11, 30)
    assert fresh.skeleton == first.skeleton and fresh.probabilities == first.probabilities
    other = service.generate("Eating", 12, 30)
    assert not np.allclose(other.sample.joints, first.sample.joints)


def test_interpolate_has_a_strip_and_its_ends_are_the_two_seeds(service):
    result = service.interpolate("Phoning", 1, 2, 0.25, 4, 30)
    strip = json.loads(result.strip)
    assert len(strip["frames"]) == 30
    assert [a["text"] for a in strip["layout"]["annotations"]] == ["\u03b1 = 0.00", "\u03b1 = 0.33",
                                                                 "\u03b1 = 0.67", "\u03b1 = 1.00"]
    spine = strip["frames"][0]["data"][2]["x"]
    assert sum(1 for x, prev in zip(spine, [None] + spine[:-1]) if prev is None and x is not None) == 4
    assert result.sample.alpha == 0.25 and result.sample.seed_b == 2
    at_a = service.interpolate("Phoning", 1, 2, 0.0, 4, 30).sample.joints
    at_b = service.interpolate("Phoning", 1, 2, 1.0, 4, 30).sample.joints
    np.testing.assert_allclose(at_a, service.generate("Phoning", 1, 30).sample.joints, atol=1e-5)
    np.testing.assert_allclose(at_b, service.generate("Phoning", 2, 30).sample.joints, atol=1e-5)


def test_mix_blends_or_switches_the_class_weights(service):
    walking, phoning = ACTIONS.index("Walking"), ACTIONS.index("Phoning")
    blend = service.mix("Walking", "Phoning", 0.3, "blend", 4, 40).sample.class_weights
    np.testing.assert_allclose(blend[:, walking], 0.7, atol=1e-6)
    np.testing.assert_allclose(blend[:, phoning], 0.3, atol=1e-6)
    switch = service.mix("Walking", "Phoning", 0.3, "transition A -> B", 4, 40).sample.class_weights
    assert switch[0, walking] == 1.0 and switch[-1, phoning] == 1.0
    assert np.all(np.diff(switch[:, phoning]) >= 0)
    assert (switch[:, phoning] > 0.5).mean() == pytest.approx(0.3, abs=0.05)
    plain = service.mix("Walking", "Phoning", 0.0, "blend", 4, 40)
    assert plain.sample.action_label == "Walking"
    np.testing.assert_allclose(plain.sample.joints, service.generate("Walking", 4, 40).sample.joints)


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


def gif_duration_ms(path) -> int:
    """Total play time of a GIF (Pillow merges identical consecutive frames, adding up their durations)."""
    with Image.open(path) as gif:
        assert gif.format == "GIF" and gif.is_animated
        total = 0
        for index in range(gif.n_frames):
            gif.seek(index)
            total += gif.info["duration"]
        return total


def test_export_files_decode_to_the_generated_clip(service):
    result = service.generate("Greeting", 8, 24)
    files = service.export(result.request.to_dict())
    assert {p.suffix for p in files.values()} == {".gif", ".mp4", ".npz", ".json"}
    assert gif_duration_ms(files[".gif"]) == pytest.approx(24 / result.sample.fps * 1000, abs=10)
    reader = imageio_ffmpeg.read_frames(str(files[".mp4"]))
    meta = next(reader)
    assert meta["size"][0] >= 256 and sum(1 for _ in reader) == 24
    with np.load(files[".npz"], allow_pickle=False) as npz:
        np.testing.assert_array_equal(npz["joints"], result.sample.joints)
    np.testing.assert_array_equal(np.asarray(json.loads(files[".json"].read_text())["joints"], dtype=np.float32),
                                  result.sample.joints)
    assert service.export(result.request) is files


def test_export_cache_is_bounded_and_deletes_evicted_files(bundle_path, tmp_path):
    small = ActionGenService(bundle_path, device="cpu", work_dir=tmp_path, export_cache_size=1)
    first = small.export({"action": "Posing", "seed": 1, "frames": 16})
    assert first[".gif"].is_file()
    small.export({"action": "Posing", "seed": 2, "frames": 16})
    assert not first[".gif"].exists()
    assert len(small.exports) == 1


def test_lru_cache_drops_the_least_recently_used():
    evicted = []
    cache = LRUCache(2, on_evict=evicted.append)
    for key in ("a", "b", "a", "c"):
        cache.get_or_compute(key, lambda k=key: k.upper())
    assert evicted == ["B"] and len(cache) == 2
    assert cache.get_or_compute("a", lambda: "recomputed") == "A"


@pytest.mark.parametrize("call, message", [
    (lambda s: s.generate("Jumping", 1, 50), "valid actions: Directions, Discussion"),
    (lambda s: s.generate(3, 1, 50), "action must be one of"),
    (lambda s: s.generate("Walking", -1, 50), "seed must be a whole number from 0 to 4294967295"),
    (lambda s: s.generate("Walking", SEED_MAX + 1, 50), "seed must be a whole number"),
    (lambda s: s.generate("Walking", 1.5, 50), "seed must be a whole number"),
    (lambda s: s.generate("Walking", "abc", 50), "got 'abc'"),
    (lambda s: s.generate("Walking", 1, 0), "frames must be a whole number from 16 to 300"),
    (lambda s: s.generate("Walking", 1, 10**9), "frames must be a whole number from 16 to 300"),
    (lambda s: s.generate("Walking", 1, float("nan")), "frames must be"),
    (lambda s: s.generate("Walking", 1, None), "frames must be"),
    (lambda s: s.generate("Walking", True, 50), "seed must be"),
    (lambda s: s.interpolate("Walking", 1, 2, 2, 5, 50), "alpha must be a number from 0.0 to 1.0"),
    (lambda s: s.interpolate("Walking", 1, 2, 0.5, 20, 50), "steps must be a whole number from 3 to 9"),
    (lambda s: s.mix("Walking", "Flying", 0.5, "blend", 1, 50), "unknown action_b 'Flying'"),
    (lambda s: s.mix("Walking", "Phoning", -0.1, "blend", 1, 50), "mix must be a number from 0.0 to 1.0"),
    (lambda s: s.mix("Walking", "Phoning", 0.5, "shuffle", 1, 50), "mode must be one of blend, transition"),
    (lambda s: s.export({"action": "Walking"}), "needs at least 'action' and 'seed'"),
    (lambda s: s.export({"action": "Walking", "seed": 1, "speed": 2}), "unknown request keys ['speed']"),
    (lambda s: s.export("Walking"), "must be a JSON object"),
    (lambda s: s.export({"action": "Walking", "seed": 1, "alpha": 0.5}), "alpha needs seed_b"),
    (lambda s: s.export({"action": "Walking", "seed": 1, "mix": 0.5}), "mix needs action_b"),
])
def test_bad_input_raises_a_value_error_naming_what_is_valid(service, call, message):
    with pytest.raises(ValueError) as err:
        call(service)
    assert message in str(err.value)


def test_a_missing_checkpoint_is_reported_and_the_page_still_builds(tmp_path):
    missing = ActionGenService(tmp_path / "nowhere" / "model.json", device="cpu", work_dir=tmp_path)
    status = missing.status()
    assert "model.json: checkpoint config not found" in status and "ACTIONGEN_CHECKPOINT" in status
    assert str(tmp_path) not in status  # the page never shows the server's directories
    with pytest.raises(CheckpointError, match="not found"):
        missing.generate("Walking", 1, 50)
    demo = app.build_demo(missing)
    warnings = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "missing-checkpoint"]
    assert len(warnings) == 1 and "ACTIONGEN_CHECKPOINT" in warnings[0].value


# ----------------------------------------------------------------------------- the server, via gradio_client

def test_api_has_stable_named_endpoints(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    parameters = {name: [p["parameter_name"] for p in info["parameters"]] for name, info in endpoints.items()}
    assert parameters == {
        "/generate": ["action", "seed", "frames"],
        "/interpolate": ["action", "seed_a", "seed_b", "alpha", "steps", "frames"],
        "/mix": ["action_a", "action_b", "share_b", "mode", "seed", "frames"],
        "/export": ["request"],
        "/random_seed": [],
    }


def test_generate_endpoint_matches_the_in_process_result(client, service):
    skeleton, latent, probabilities, summary, request = client.predict("Sitting", 3, 60, api_name="/generate")
    expected = service.generate("Sitting", 3, 60)
    assert skeleton == {"type": "plotly", "plot": expected.skeleton}
    assert len(frames_of(skeleton["plot"])) == 60
    assert latent["plot"] == expected.latent_path and probabilities["plot"] == expected.probabilities
    assert summary == expected.summary and request == expected.request.to_dict()


def test_interpolate_endpoint_returns_the_strip(client):
    *_, request, strip = client.predict("Walking", 1, 9, 0.5, 3, 20, api_name="/interpolate")
    assert request["seed_b"] == 9 and request["alpha"] == 0.5
    assert len(frames_of(strip["plot"])) == 20
    assert len(json.loads(strip["plot"])["layout"]["annotations"]) == 3


def test_mix_endpoint(client):
    skeleton, *_, request = client.predict("Walking", "Sitting", 0.5, "transition", 2, 30, api_name="/mix")
    assert request["action_b"] == "Sitting" and request["mode"] == "transition"
    assert "Walking -> Sitting" in json.loads(skeleton["plot"])["layout"]["title"]["text"]


def test_export_endpoint_delivers_decodable_files(client):
    *_, request = client.predict("Smoking", 4, 20, api_name="/generate")
    preview, gif, mp4, npz, data = client.predict(request, api_name="/export")
    assert preview == gif
    assert gif_duration_ms(gif) == pytest.approx(20 * 60, abs=10)
    assert Path(mp4).read_bytes()[4:8] == b"ftyp"
    with np.load(npz, allow_pickle=False) as arrays:
        assert arrays["joints"].shape == (20, 16, 2)
    assert json.loads(Path(data).read_text())["seed"] == 4


def test_random_seed_endpoint(client):
    seeds = {client.predict(api_name="/random_seed") for _ in range(5)}
    assert all(isinstance(s, (int, float)) and 0 <= s <= app.SEED_SLIDER_MAX for s in seeds)
    assert len(seeds) > 1


@pytest.mark.parametrize("args, endpoint, message", [
    (("Jumping", 1, 50), "/generate", "valid actions: Directions"),
    (("Walking", 1, 0), "/generate", "frames must be a whole number from 16 to 300"),
    (("Walking", 1, 1e9), "/generate", "frames must be a whole number from 16 to 300"),
    (("Walking", -1, 50), "/generate", "seed must be a whole number from 0 to 4294967295"),
    (("Walking", "abc", 50), "/generate", "seed must be"),
    (("Walking", 1, None), "/generate", "frames must be"),
    (("Walking", 1, 2, 2, 5, 50), "/interpolate", "alpha must be a number from 0.0 to 1.0"),
    (("Walking", 1, 2, "half", 5, 50), "/interpolate", "alpha must be"),
    (("Walking", "Phoning", 0.5, "shuffle", 1, 50), "/mix", "mode must be one of blend, transition"),
    (({"action": "Walking", "seed": -5},), "/export", "seed must be"),
])
def test_bad_api_input_gives_a_readable_error_and_the_server_keeps_serving(client, args, endpoint, message):
    with pytest.raises(AppError) as err:
        client.predict(*args, api_name=endpoint)
    assert message in str(err.value)
    assert len(frames_of(client.predict("Walking", 1, 16, api_name="/generate")[0]["plot"])) == 16


def test_fifty_concurrent_calls_from_several_clients_equal_serial_results(server, bundle_path, tmp_path):
    calls = [(ACTIONS[i % len(ACTIONS)], 1000 + i, 16 + 2 * i) for i in range(50)]
    clients = [Client(server, verbose=False) for _ in range(5)]
    jobs = [clients[i % len(clients)].submit(*call, api_name="/generate") for i, call in enumerate(calls)]
    with ThreadPoolExecutor(len(jobs)) as pool:
        answers = list(pool.map(lambda job: job.result(timeout=120), jobs))
    serial = ActionGenService(bundle_path, device="cpu", work_dir=tmp_path)
    for call, answer in zip(calls, answers):
        expected = serial.generate(*call)
        assert answer[0]["plot"] == expected.skeleton and answer[4] == expected.request.to_dict()


def test_app_py_starts_without_a_checkpoint_and_says_what_is_missing(tmp_path):
    port = free_port()
    env = {**os.environ, "ACTIONGEN_CHECKPOINT": str(tmp_path / "missing.json"), "GRADIO_SERVER_PORT": str(port),
           "GRADIO_ANALYTICS_ENABLED": "False"}
    env.pop("GRADIO_SERVER_NAME", None)
    process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
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
        with pytest.raises(AppError, match="missing.json: checkpoint config not found"):
            client.predict("Walking", 1, 50, api_name="/generate")
        page_config = client.config
        assert any("ACTIONGEN_CHECKPOINT" in str(c.get("props", {}).get("value", ""))
                   for c in page_config["components"])
    finally:
        process.send_signal(signal.SIGINT)  # like Ctrl-C: gradio shuts down and the app removes its temp folder
        process.wait(timeout=20)
