"""The safetensors + JSON bundle: round trip, and clear refusals of corrupt or mismatched files."""
from __future__ import annotations

import json
import os
import stat

import pytest
import torch

from actiongen.checkpoint import CheckpointError, load_bundle, save_bundle
from actiongen.models import ModelConfig
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
