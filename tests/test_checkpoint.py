"""The safetensors + JSON bundle: round trip, and clear refusals of corrupt or mismatched files."""
from __future__ import annotations

import json
import math
import os
import stat
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import actiongen.checkpoint as checkpoint_module
from actiongen.checkpoint import DEFAULT_BUNDLES, CheckpointError, load_bundle, save_bundle
from actiongen.data import NormStats
from actiongen.models import ModelConfig
from actiongen.recognizer import ActionRecognizer, Recognizer, RecognizerConfig, load_recognizer, save_recognizer
from actiongen.skeleton import ACTIONS, POSE_DIM
from synthetic_h36m import random_bundle


@pytest.fixture
def saved(synthetic_data, tmp_path):
    bundle = random_bundle(synthetic_data.stats)
    bundle.meta = {"training": {"stage2": {"steps": 7}}}
    json_path, weights_path = save_bundle(tmp_path / "m.json", bundle)
    return bundle, json_path, weights_path


def test_round_trip_restores_weights_stats_and_meta(saved):
    bundle, json_path, weights_path = saved
    loaded = load_bundle(json_path)
    for name, tensor in bundle.transition.state_dict().items():
        assert torch.equal(loaded.transition.state_dict()[name], tensor), name
    for name, tensor in bundle.classifier.state_dict().items():
        assert torch.equal(loaded.classifier.state_dict()[name], tensor), name
    assert loaded.config == bundle.config and loaded.actions == bundle.actions
    assert (loaded.stats.mean == bundle.stats.mean).all() and loaded.meta == bundle.meta
    assert not loaded.decoder.training and not loaded.classifier.training
    assert load_bundle(json_path.parent).config == bundle.config  # a directory holding one bundle works too
    assert stat.S_IMODE(os.stat(weights_path).st_mode) == 0o644  # readable by the user serving it


def test_per_class_guidance_round_trips(tmp_path):
    shipped = load_bundle(DEFAULT_BUNDLES["2d"])
    weights = tuple(float(i) / 4 for i in range(shipped.config.num_classes))
    shipped.config = replace(shipped.config, diffusion_class_guidance=weights)
    json_path, _ = save_bundle(tmp_path / "guided.json", shipped)
    assert json.loads(json_path.read_text())["model"]["diffusion_class_guidance"] == list(weights)
    assert load_bundle(json_path).transition.cfg.diffusion_class_guidance == weights


def test_missing_files_name_the_path(saved, tmp_path):
    _, json_path, weights_path = saved
    with pytest.raises(CheckpointError, match="checkpoint config not found"):
        load_bundle(tmp_path / "absent.json")
    weights_path.unlink()
    with pytest.raises(CheckpointError, match=f"{weights_path.name}: weights file not found"):
        load_bundle(json_path)


def test_corrupt_files_are_refused(saved):
    _, json_path, weights_path = saved
    weights_path.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="corrupt or unreadable safetensors"):
        load_bundle(json_path)
    json_path.write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_bundle(json_path)


def _edit_json(json_path, **changes) -> None:
    doc = json.loads(json_path.read_text())
    doc.update(changes)
    json_path.write_text(json.dumps(doc))


@pytest.mark.parametrize("changes, message", [
    (dict(format="something-else/9"), "format 'something-else/9'"),
    (dict(joints=["Hip"] * 16), "joint order"),
    (dict(actions=["Walking"]), "1 action names for 10 classes"),
    (dict(stats={"mean": [0.0] * 3, "std": [1.0] * 3, "mean_hip_depth": 1.0}), "bad or missing config entry"),
    (dict(model={"latent_dim": 12, "wings": 2}), "unknown model config keys"),
    (dict(model={**ModelConfig().to_dict(), "pose_refiner": True}),
     "pose_refiner is for the diffusion transition; the lstm transition has none"),
])
def test_mismatched_config_is_refused(saved, changes, message):
    _, json_path, _ = saved
    _edit_json(json_path, **changes)
    with pytest.raises(CheckpointError, match=message):
        load_bundle(json_path)


def test_weights_of_another_architecture_are_refused(saved):
    _, json_path, _ = saved
    _edit_json(json_path, model=ModelConfig(lstm_hidden=128).to_dict())
    with pytest.raises(CheckpointError, match="tensor shapes do not match the config"):
        load_bundle(json_path)
    _edit_json(json_path, model=ModelConfig(head="flatten").to_dict())
    with pytest.raises(CheckpointError, match="shapes do not match"):
        load_bundle(json_path)


# ----------------------------------------------------------------------------- hostile files

def load_error(json_path, load=load_bundle) -> str:
    """The message of the CheckpointError that loading raises: one line, naming no absolute server path."""
    with pytest.raises(CheckpointError) as err:
        load(json_path)
    message = str(err.value)
    assert "\n" not in message and str(json_path.parent) not in message, message
    return message


@pytest.fixture
def no_network_built(monkeypatch):
    """Fails a test whose loader builds a real (allocating) network: only meta-device builds are allowed."""
    build = checkpoint_module.build_models

    def build_on_meta_only(cfg):
        assert torch.get_default_device().type == "meta", f"built a network for {cfg} before checking it"
        return build(cfg)

    monkeypatch.setattr(checkpoint_module, "build_models", build_on_meta_only)


@pytest.mark.parametrize("changes, message", [
    (dict(weights=None), "'weights' must be the file name"),
    (dict(weights=5), "'weights' must be the file name of the .safetensors file beside the JSON; got 5"),
    (dict(weights="w" * 10**5), "got a long string"),
    (dict(weights="m.json"), "got 'm.json'"),
    (dict(weights=""), "got ''"),
    (dict(format="x" * 10**5), "format a long string; expected 'actiongen-bundle/1'"),
    (dict(joints=["Hip"] * 10**5), "joint order an array of 100000 entries differs"),
    (dict(weights="../m.safetensors"), "'weights' must be the file name"),
    (dict(weights="/etc/passwd"), "'weights' must be the file name"),
    (dict(model=None), "'model' must be a JSON object; got null"),
    (dict(model=[1, 2]), "'model' must be a JSON object; got an array of 2 entries"),
    (dict(actions=None), "'actions' must be a JSON array; got null"),
    (dict(actions=[1] * 10), "non-empty list of distinct action names"),
    (dict(actions=["Walking"] * 10), "non-empty list of distinct action names"),
    (dict(stats=None), "'stats' must be a JSON object"),
    (dict(stats={"mean": [0.0] * 30}), "need the entries mean, std and mean_hip_depth"),
    (dict(joints=5), "joint order 5 differs"),
    (dict(model={"lstm_hidden": "256"}), "'lstm_hidden' must be an integer in [1, 65536]; got '256'"),
    (dict(model={"lstm_hidden": True}), "'lstm_hidden' must be an integer in [1, 65536]; got True"),
    (dict(model={"lstm_hidden": 0}), "'lstm_hidden' must be an integer in [1, 65536]; got 0"),
    (dict(model={"latent_dim": 12.0}), "'latent_dim' must be an integer"),
    (dict(model={"latent_boundary": 1}), "'latent_boundary' must be a str; got 1"),
    (dict(model={"latent_boundary": "bounce"}), "valid: clamp, reflect, none"),
    (dict(model={"head": None}), "'head' must be a str; got null"),
    (dict(model={"head": "wings"}), "unknown head 'wings'; valid heads: flatten, pool"),
    (dict(model={"pose_dim": 31}), "pose size 31"),
    (dict(model={"diffusion_class_guidance": 0.5}), "'diffusion_class_guidance' must be a list of finite numbers; got 0.5"),
    (dict(model={"diffusion_class_guidance": ["1"]}), "must be a list of finite numbers; got an array of 1 entries"),
])
def test_entries_of_the_wrong_type_are_refused_in_one_line(saved, changes, message, no_network_built):
    _, json_path, _ = saved
    _edit_json(json_path, **changes)
    assert message in load_error(json_path)


def test_oversized_or_deeply_nested_json_is_refused(saved, monkeypatch):
    _, json_path, _ = saved
    json_path.write_text("[" * 100_000 + "]" * 100_000)
    assert "not valid JSON (RecursionError" in load_error(json_path)
    monkeypatch.setattr(checkpoint_module, "MAX_JSON_BYTES", 100_000)
    json_path.write_text(json.dumps({"format": "actiongen-bundle/1", "padding": "x" * 100_000}))
    assert "100,047 bytes; a bundle's JSON has at most 100,000" in load_error(json_path)


def test_missing_entry_is_named(saved):
    _, json_path, _ = saved
    doc = json.loads(json_path.read_text())
    del doc["stats"]
    json_path.write_text(json.dumps(doc))
    assert "missing entry 'stats'" in load_error(json_path)


@pytest.mark.parametrize("model, message", [
    (dict(lstm_hidden=10**12), "'lstm_hidden' must be an integer in [1, 65536]; got 1000000000000"),
    (dict(lstm_hidden=2**14), "GiB of weights; at most 1 GiB"),  # 4.3 GB of LSTM weights
    (dict(head="flatten", clip_frames=5000), "GiB of weights; at most 1 GiB"),
    (dict(lstm_hidden=2048), "tensor shapes do not match the config"),  # fits the cap, not the file
])
def test_huge_or_mismatched_layer_sizes_are_refused_before_building_a_network(saved, model, message,
                                                                              no_network_built):
    _, json_path, _ = saved
    _edit_json(json_path, model={**ModelConfig().to_dict(), **model})
    assert message in load_error(json_path)


@pytest.mark.parametrize("fps", [0, -16.7, float("nan"), float("inf"), 1e9, "16.7", None, True])
def test_bad_fps_is_refused(saved, fps):
    _, json_path, _ = saved
    _edit_json(json_path, fps=fps)
    assert "entry 'fps' must be a number in (0, 1000]" in load_error(json_path)


def test_valid_fps_is_kept(saved):
    _, json_path, _ = saved
    _edit_json(json_path, fps=25)
    assert load_bundle(json_path).meta["fps"] == 25


def stats_with(**changes) -> dict:
    return {"mean": [0.0] * POSE_DIM, "std": [1.0] * POSE_DIM, "mean_hip_depth": 5000.0, **changes}


@pytest.mark.parametrize("stats, message", [
    (stats_with(mean=[float("nan")] * POSE_DIM), "finite numbers, with std > 0"),
    (stats_with(std=[float("inf")] * POSE_DIM), "finite numbers, with std > 0"),
    (stats_with(std=[1e39] * POSE_DIM), "finite numbers, with std > 0"),  # overflows float32
    (stats_with(std=[1.0] * (POSE_DIM - 1) + [0.0]), "finite numbers, with std > 0"),
    (stats_with(std=[-1.0] * POSE_DIM), "finite numbers, with std > 0"),
    (stats_with(mean=["0.5"] * POSE_DIM), "finite numbers, with std > 0"),
    (stats_with(mean=[True] * POSE_DIM), "finite numbers, with std > 0"),
    (stats_with(mean=[[0.0], [0.0, 1.0]]), "finite numbers, with std > 0"),  # ragged
    (stats_with(mean_hip_depth=float("nan")), "mean_hip_depth, a finite positive number"),
    (stats_with(mean_hip_depth=0), "mean_hip_depth, a finite positive number"),
    (stats_with(mean_hip_depth="5000"), "mean_hip_depth, a finite positive number"),
])
def test_bad_statistics_are_refused(saved, stats, message):
    _, json_path, _ = saved
    _edit_json(json_path, stats=stats)
    assert message in load_error(json_path)


def _rewrite_weights(weights_path, change) -> None:
    tensors = load_file(weights_path)
    save_file({k: change(k, v) for k, v in tensors.items()}, weights_path)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool, torch.uint8])
def test_weights_that_are_not_floating_point_are_refused(saved, dtype):
    _, json_path, weights_path = saved
    _rewrite_weights(weights_path, lambda k, v: v.to(dtype) if v.is_floating_point() else v)
    assert "tensor dtypes are not floating point" in load_error(json_path)


def test_half_precision_weights_load_as_float32(saved):
    bundle, json_path, weights_path = saved
    _rewrite_weights(weights_path, lambda k, v: v.half() if v.is_floating_point() else v)
    loaded = load_bundle(json_path)
    for name, tensor in bundle.transition.state_dict().items():
        got = loaded.transition.state_dict()[name]
        assert got.dtype == tensor.dtype and torch.allclose(got.float(), tensor.float(), atol=1e-2), name


def test_non_finite_weights_are_refused_at_load(saved):
    _, json_path, weights_path = saved
    _rewrite_weights(weights_path, lambda k, v: v.fill_(math.inf) if k.endswith("to_shift.bias") else v)
    assert "non-finite values (NaN or infinity) in ['transition.to_shift.bias']" in load_error(json_path)


def test_messages_name_files_not_server_paths(saved, tmp_path):
    _, json_path, weights_path = saved
    assert load_error(tmp_path / "absent.json").startswith("absent.json: checkpoint config not found")
    weights_path.unlink()
    assert load_error(json_path).startswith("m.safetensors: weights file not found (expected next to m.json)")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert load_error(empty).startswith("empty: no bundle .json found")


# ----------------------------------------------------------------------------- the recogniser's JSON

@pytest.fixture
def saved_recognizer(tmp_path):
    stats = NormStats(np.zeros(POSE_DIM, np.float32), np.ones(POSE_DIM, np.float32), 5000.0)
    recognizer = Recognizer(ActionRecognizer(RecognizerConfig(hidden=8, feature_dim=8)), stats, ACTIONS)
    return save_recognizer(tmp_path / "r.json", recognizer)[0]


def test_recognizer_shares_the_checks_of_the_bundle_json(saved_recognizer):
    assert load_recognizer(saved_recognizer).model.cfg.hidden == 8
    for changes, message in [(dict(weights=None), "'weights' must be the file name"),
                             (dict(stats=stats_with(std=[0.0] * POSE_DIM)), "std > 0"),
                             (dict(model={"hidden": 10**9}), "'hidden' must be an integer in [1, 65536]"),
                             (dict(model={"hidden": 2**15}), "GiB of weights; at most 1 GiB"),
                             (dict(model={"hidden": 16}), "tensor shapes do not match the config")]:
        original = saved_recognizer.read_text()
        _edit_json(saved_recognizer, **changes)
        assert message in load_error(saved_recognizer, load_recognizer)
        saved_recognizer.write_text(original)
