"""The 3D (world-frame) configuration of the data layer, the 2D views of 3D poses, 3D bundles and the
3D training run, on synthetic archives."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import actiongen.data as data_module
from actiongen.checkpoint import CheckpointError, load_bundle
from actiongen.data import DataConfig, NormStats, joints_to_vectors, load_cameras, load_pose_data, project_points
from actiongen.generator import Generator
from actiongen.skeleton import ACTIONS, H36M_INDICES, HIP, NUM_JOINTS
from actiongen.views import camera_view, oblique_view
from synthetic_h36m import write_archive
from train import stage1_pose, stage2_sequence
from train.common import load_state


def world_joints(root: Path, subject: int, take: str) -> np.ndarray:
    """(N, 16, 3) world positions of the skeleton joints, read straight from the file."""
    with h5py.File(Path(root) / f"S{subject}" / "MyPoses" / "3D_positions" / f"{take}.h5", "r") as f:
        return np.asarray(f["3D_positions"]).T.reshape(-1, 32, 3)[:, list(H36M_INDICES)]


def test_3d_joints_are_hip_centred_world_millimetres(synthetic_root, synthetic_data_3d):
    seq = next(s for s in synthetic_data_3d.sequences if s.subject == 5 and s.take == "Walking 1")
    world = world_joints(synthetic_root, 5, "Walking 1")
    assert seq.joints.shape == (len(world), NUM_JOINTS, 3) and seq.joints.dtype == np.float32
    np.testing.assert_allclose(seq.joints, world - world[:, HIP:HIP + 1], atol=1e-3)
    head, foot = seq.joints[:, 9, 2], seq.joints[:, 3, 2]
    assert (head > 600).all() and (foot < -700).all()  # z up, in mm


def test_3d_vectors_are_45_d_and_standardised_with_training_statistics(synthetic_data_3d):
    stats = synthetic_data_3d.stats
    assert stats.pose_dim == 45 and stats.dims == 3
    train = np.concatenate([joints_to_vectors(s.joints, stats) for s in synthetic_data_3d.split("train")])
    np.testing.assert_allclose(train.mean(0), 0, atol=1e-3)
    np.testing.assert_allclose(train.std(0), 1, atol=1e-3)
    back = data_module.vectors_to_joints(joints_to_vectors(synthetic_data_3d.sequences[0].joints, stats), stats)
    np.testing.assert_allclose(back, synthetic_data_3d.sequences[0].joints, atol=1e-3)


def test_3d_and_2d_data_share_clips_and_hip_depth(synthetic_data, synthetic_data_3d):
    assert [(s.subject, s.take, len(s.joints)) for s in synthetic_data.sequences] == \
        [(s.subject, s.take, len(s.joints)) for s in synthetic_data_3d.sequences]
    assert synthetic_data_3d.stats.mean_hip_depth == pytest.approx(synthetic_data.stats.mean_hip_depth)
    assert synthetic_data.stats.mean_hip_camera is None
    assert synthetic_data_3d.stats.mean_hip_camera[2] == pytest.approx(synthetic_data.stats.mean_hip_depth,
                                                                       rel=1e-6)


def test_3d_cache_has_its_own_file_and_is_read_back(synthetic_root, tmp_path, monkeypatch):
    cfg = DataConfig(root=str(synthetic_root), train_subjects=(1, 5), test_subjects=(11,), cache_dir=str(tmp_path))
    two_d = load_pose_data(cfg)
    three_d = load_pose_data(replace(cfg, dims=3))
    assert sorted(p.name[:7] for p in tmp_path.glob("*.npz")) == ["h36m2d-", "h36m3d-"]

    def refuse(path):
        raise AssertionError(f"read {path} although the cache should have been used")

    monkeypatch.setattr(data_module, "read_sequence", refuse)
    again = load_pose_data(replace(cfg, dims=3))
    for a, b in zip(three_d.sequences, again.sequences):
        np.testing.assert_array_equal(a.joints, b.joints)
    np.testing.assert_array_equal(again.stats.mean_hip_camera, three_d.stats.mean_hip_camera)
    assert two_d.sequences[0].joints.shape[-1] == 2


def test_3d_loading_tolerates_missing_sequences(tmp_path):
    root = write_archive(tmp_path / "h36m", subjects=(1, 11), actions=("Sitting", "Walking"), frames=200,
                         skip=("S1/Walking 1",))
    cfg = DataConfig(root=str(root), actions=("Sitting", "Walking"), train_subjects=(1,), test_subjects=(11,),
                     cache_dir=None, dims=3)
    with pytest.warns(UserWarning, match=r"S1 Walking \(1 of 2 takes\)"):
        data = load_pose_data(cfg)
    assert len(data.sequences) == 7


@pytest.mark.parametrize("dims", [1, 4, "3"])
def test_unknown_dims_lists_the_valid_choices(synthetic_root, dims):
    with pytest.raises(ValueError, match=r"dims must be one of \(2, 3\)"):
        load_pose_data(DataConfig(root=str(synthetic_root), cache_dir=None, dims=dims))


def test_norm_stats_round_trip_keeps_the_3d_hip_position(synthetic_data_3d, tmp_path):
    synthetic_data_3d.stats.save(tmp_path / "s.json")
    loaded = NormStats.load(tmp_path / "s.json")
    assert loaded.dims == 3
    np.testing.assert_array_equal(loaded.mean, synthetic_data_3d.stats.mean)
    np.testing.assert_array_equal(loaded.mean_hip_camera, synthetic_data_3d.stats.mean_hip_camera)
    with pytest.raises(ValueError, match="length 30 or 45"):
        NormStats.from_dict({"mean": [0.0] * 40, "std": [1.0] * 40, "mean_hip_depth": 1.0})


# ----------------------------------------------------------------------------- views

def test_camera_view_is_the_2d_pipeline_for_a_pose_at_the_mean_hip(synthetic_root, synthetic_data_3d):
    """A pose whose hip stands where the statistics place it projects exactly as the 2D data does."""
    camera = load_cameras(synthetic_root)[1]
    world = world_joints(synthetic_root, 1, "Eating")[:5]
    hip_camera = (world[:, HIP] - camera.T) @ camera.R.T
    pixels, depth = project_points(world, camera)
    for t in range(len(world)):
        stats = replace(synthetic_data_3d.stats, mean_hip_camera=hip_camera[t])
        expected = (pixels[t] - pixels[t, HIP]) * depth[t, HIP] / stats.mean_hip_depth
        got = camera_view(world[t] - world[t, HIP], camera, stats)
        np.testing.assert_allclose(got, expected, atol=1e-3)


def test_camera_view_refuses_2d_statistics(synthetic_root, synthetic_data):
    with pytest.raises(ValueError, match="3D data"):
        camera_view(np.zeros((16, 3)), load_cameras(synthetic_root)[1], synthetic_data.stats)


def test_oblique_view_is_upright_and_shows_depth():
    pose = np.zeros((2, 16, 3))
    pose[:, 9] = (0, 0, 700)  # head above the hip
    pose[1, 12] = (0, 500, 0)  # a wrist 0.5 m in front of (away from) the viewer
    view = oblique_view(pose)
    assert view.shape == (2, 16, 2)
    assert view[0, 9, 1] < -100  # y down: the head is drawn above the hip
    assert abs(view[1, 12, 0]) > 10 and view[1, 12, 1] < 0  # depth moves the point sideways and up


# ----------------------------------------------------------------------------- bundles and generator

def test_3d_bundle_says_so_and_generates_millimetres(random_bundle_3d_path):
    doc = json.loads(Path(random_bundle_3d_path).read_text())
    assert doc["dims"] == 3 and len(doc["stats"]["mean"]) == 45 and len(doc["stats"]["mean_hip_camera"]) == 3
    gen = Generator.load(random_bundle_3d_path, device="cpu")
    assert gen.dims == 3
    clip = gen.sample("Walking", seed=1, frames=20)
    assert clip.joints.shape == (20, NUM_JOINTS, 3)
    np.testing.assert_array_equal(clip.joints[:, HIP], 0)
    again = gen.sample("Walking", seed=1, frames=20)
    np.testing.assert_array_equal(clip.joints, again.joints)
    mixed = gen.sample({"Walking": 0.5, "Eating": 0.5}, seed=1, frames=20, to_action="Phoning")
    between = gen.sample("Walking", seed=1, frames=20, seed_b=2, alpha=0.5)
    assert mixed.joints.shape == between.joints.shape == (20, NUM_JOINTS, 3)
    batch = gen.sample_many(["Walking", "Eating"], seeds=[1, 2], frames=20)
    assert batch.joints.shape == (2, 20, NUM_JOINTS, 3)
    np.testing.assert_allclose(batch[0].joints, clip.joints, atol=1e-4)


def test_a_bundle_without_dims_is_2d(random_bundle_path, tmp_path):
    doc = json.loads(Path(random_bundle_path).read_text())
    assert doc.pop("dims") == 2
    (tmp_path / "old.json").write_text(json.dumps(doc))
    (tmp_path / doc["weights"]).write_bytes(Path(random_bundle_path).with_suffix(".safetensors").read_bytes())
    assert load_bundle(tmp_path / "old.json").dims == 2


@pytest.mark.parametrize("dims", [3, 4, "2d"])
def test_dims_that_do_not_match_the_model_are_refused(random_bundle_path, tmp_path, dims):
    doc = json.loads(Path(random_bundle_path).read_text())
    doc["dims"] = dims
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    (tmp_path / doc["weights"]).write_bytes(Path(random_bundle_path).with_suffix(".safetensors").read_bytes())
    with pytest.raises(CheckpointError, match=r"dims .* \(valid: \(2, 3\)\)"):
        load_bundle(tmp_path / "bad.json")


def test_unknown_model_name_lists_the_shipped_models():
    with pytest.raises(CheckpointError, match="unknown model '4d'; valid models: 2d, 3d"):
        Generator.load(model="4d")
    with pytest.raises(ValueError, match="either a bundle path or a model name"):
        Generator.load("x.json", model="3d")


# ----------------------------------------------------------------------------- training

SMALL = ["--steps", "2", "--batch", "8", "--log-every", "1", "--checkpoint-every", "2", "--sample-every", "2",
         "--train-subjects", "1", "5", "--test-subjects", "11"]


@pytest.fixture(scope="module")
def stage1_3d(synthetic_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("stage1-3d")
    stage1_pose.main(["--data-root", str(synthetic_root), "--out", str(out), "--dims", "3", "--hidden", "32",
                      "--refiner-steps", "2", "--refiner-channels", "8", *SMALL])
    return out


def test_stage1_with_dims_3_trains_a_45_d_decoder(stage1_3d):
    state = load_state(stage1_3d)
    assert state["model"]["pose_dim"] == 45 and len(state["stats"]["mean"]) == 45
    output_layer = [w for w in state["decoder"].values() if w.ndim == 2][-1]  # state dicts keep module order
    assert output_layer.shape == (45, 32)
    assert (stage1_3d / "samples_000002.png").stat().st_size > 0


def test_stage2_reads_the_dims_from_stage1_and_exports_a_3d_bundle(synthetic_root, stage1_3d, tmp_path):
    stage2_sequence.main(["--data-root", str(synthetic_root), "--stage1", str(stage1_3d), "--out",
                          str(tmp_path / "s2"), "--export", str(tmp_path / "m3d.json"), "--lstm-hidden", "16",
                          "--head-hidden", "16", "--bone-weight", "10", *SMALL])
    bundle = load_bundle(tmp_path / "m3d.json")
    logged = [json.loads(line) for line in (tmp_path / "s2" / "metrics.jsonl").read_text().splitlines()]
    assert logged[-1]["g_bone"] > 0
    assert bundle.dims == 3 and bundle.meta["data"]["dims"] == 3
    assert (tmp_path / "s2" / "samples_000002.png").stat().st_size > 0
    with torch.no_grad():
        z0, noise = bundle.transition.sample_inputs(2, 10)
        frames, _, _ = bundle.transition(z0, noise, torch.eye(len(ACTIONS))[:2])
    assert frames.shape == (2, 10, 45)


def test_stage2_refuses_dims_other_than_stage1s(synthetic_root, stage1_3d, tmp_path):
    with pytest.raises(SystemExit, match="--dims 2 but the stage-1 decoder was trained on 3D poses"):
        stage2_sequence.main(["--data-root", str(synthetic_root), "--stage1", str(stage1_3d), "--out",
                              str(tmp_path), "--dims", "2", *SMALL])
