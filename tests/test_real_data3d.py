"""The 3D configuration on the real Human3.6M copy in ../shared/data/h36m: the same clips as 2D, physical
units, the camera view against the real 2D data, and a BVH round trip of a real clip."""
from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pytest

from actiongen.bvh import root_positions, save_bvh
from actiongen.data import ClipDataset, DataConfig, load_cameras, load_pose_data, vectors_to_joints
from actiongen.skeleton import bone_lengths
from actiongen.views import camera_view
from test_bvh import read_bvh_positions

pytestmark = pytest.mark.real_data


@pytest.fixture(scope="module")
def real_pair(real_root, tmp_path_factory):
    """The real data as 2D and as 3D, from one fresh cache directory."""
    cfg = DataConfig(root=str(real_root), cache_dir=str(tmp_path_factory.mktemp("real3d_cache")))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the shared copy lacks five takes (tested with the 2D data)
        return load_pose_data(cfg), load_pose_data(replace(cfg, dims=3))


def test_3d_has_the_clips_of_2d_in_millimetres_with_z_up(real_pair):
    flat, deep = real_pair
    assert [(s.subject, s.take, len(s.joints)) for s in flat.sequences] == \
        [(s.subject, s.take, len(s.joints)) for s in deep.sequences]
    for split in ("train", "test"):
        assert len(ClipDataset(flat, split)) == len(ClipDataset(deep, split))
    walking = next(s for s in deep.sequences if s.subject == 1 and s.take == "Walking 1").joints
    assert 800 < -walking[:, 3, 2].mean() < 1000  # the right foot about 0.9 m below the hip
    assert 600 < walking[:, 9, 2].mean() < 800  # the head about 0.7 m above it


def test_real_bone_lengths_hold_within_a_clip_except_the_neck(real_pair):
    deep = real_pair[1]
    clips = vectors_to_joints(ClipDataset(deep, "test", start_step=50).clips, deep.stats)
    lengths = bone_lengths(clips)
    variation = (lengths.std(axis=1) / lengths.mean(axis=1)).mean(axis=0) * 100  # % per bone
    neck = 8  # Thorax -> Head spans the bending neck
    assert variation[neck] > 1 and np.delete(variation, neck).max() < 0.1


def test_camera_view_of_3d_is_close_to_the_real_2d_data(real_pair, real_root):
    flat, deep = real_pair
    cameras = load_cameras(real_root)
    differences = [np.linalg.norm(camera_view(b.joints[::25], cameras[b.subject], deep.stats) - a.joints[::25],
                                  axis=-1).mean() for a, b in zip(flat.sequences, deep.sequences)]
    # The view places every pose at the mean hip position instead of where it stood: about 2 units of
    # ~75 (mean joint distance from the hip) apart.
    assert np.mean(differences) < 4


def test_bvh_round_trip_of_a_real_clip(real_pair, tmp_path):
    clip = next(s for s in real_pair[1].sequences if s.subject == 11 and s.take == "SittingDown").joints[:900:3]
    fit = save_bvh(clip, tmp_path / "sit.bvh", fps=50 / 3)
    read, frames, frame_time = read_bvh_positions(tmp_path / "sit.bvh")
    assert frames == 300 and frame_time == pytest.approx(0.06)
    assert np.linalg.norm(read - (fit.joints + root_positions(fit.joints)[:, None]), axis=-1).max() < 0.1
    assert fit.displacement_max_mm < 50  # real lengths barely vary: the fit hardly moves a real clip


def test_shipped_3d_model_generates_upright_clips_that_export_to_bvh(tmp_path):
    from actiongen.checkpoint import DEFAULT_BUNDLES
    from actiongen.generator import Generator

    if not DEFAULT_BUNDLES["3d"].is_file():
        pytest.skip("no shipped 3D checkpoint in assets/")
    gen = Generator.load(model="3d", device="cpu")
    clip = gen.sample("Walking", seed=3, frames=60)
    assert gen.dims == 3 and clip.joints.shape == (60, 16, 3)
    head_above_feet = clip.joints[:, 9, 2] - clip.joints[:, [3, 6], 2].max(axis=1)
    assert (head_above_feet > 1000).all()  # z up, a standing person's head over a metre above the feet
    lengths = bone_lengths(clip.joints)
    assert 300 < lengths[:, [2, 5]].mean() < 550  # shins (knee to foot) of a real adult, in mm
    fit = save_bvh(clip.joints, tmp_path / "walk.bvh", fps=50 / 3)
    read, frames, _ = read_bvh_positions(tmp_path / "walk.bvh")
    assert frames == 60
    assert np.linalg.norm(read - (fit.joints + root_positions(fit.joints)[:, None]), axis=-1).max() < 10
