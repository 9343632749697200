"""BVH export and the fixed-length skeleton: written with pybvh, read back with bvhio (an independent parser
and Euler convention) and forward kinematics written out here, compared with the .npz export."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import bvhio
import glm
import numpy as np
import pytest

from actiongen import render
from actiongen.bvh import root_positions, save_bvh
from actiongen.cli import main as cli_main
from actiongen.generator import Generator
from actiongen.skeleton import HIP, JOINT_NAMES, NUM_JOINTS, bone_lengths, fit_fixed_lengths

# The End Site of these BVH joints is the tip of their bone: that H3.6M joint's position.
END_SITE_JOINTS = {"RKnee": "RFoot", "LKnee": "LFoot", "Neck": "Head", "LElbow": "LWrist", "RElbow": "RWrist"}


def read_bvh_positions(path) -> tuple[np.ndarray, int, float]:
    """(T, 16, 3) world mm (z up) of the H3.6M joints by forward kinematics over bvhio's parse, the frame
    count and the frame time."""
    container = bvhio.readAsBvh(str(path))
    positions: dict[str, list] = {}

    def walk(joint, frame, parent_position, parent_rotation):
        pose = joint.Keyframes[frame]
        position = parent_position + parent_rotation * pose.Position
        rotation = parent_rotation * pose.Rotation
        positions.setdefault(joint.Name, []).append(position)
        if not joint.Children:
            positions.setdefault(END_SITE_JOINTS[joint.Name], []).append(position + rotation * joint.EndSite)
        for child in joint.Children:
            walk(child, frame, position, rotation)

    for frame in range(container.FrameCount):
        walk(container.Root, frame, glm.vec3(0), glm.quat())
    bvh_metres = np.array([[list(p) for p in positions[name]] for name in JOINT_NAMES]).transpose(1, 0, 2)
    # BVH (x, y up, z) in metres -> world (x, y, z up) in mm
    world = np.stack([bvh_metres[..., 0], -bvh_metres[..., 2], bvh_metres[..., 1]], axis=-1) * 1000.0
    return world, container.FrameCount, container.FrameTime


def assert_round_trip(bvh_path, joints: np.ndarray, root: np.ndarray, max_mm: float = 10.0) -> float:
    read, frames, frame_time = read_bvh_positions(bvh_path)
    assert frames == len(joints)
    assert frame_time == pytest.approx(0.06, abs=1e-9)
    error = np.linalg.norm(read - (joints + root[:, None]), axis=-1)
    assert error.max() <= max_mm, f"max round-trip error {error.max():.3f} mm"
    return float(error.max())


@pytest.fixture(scope="module")
def generator_3d(random_bundle_3d_path) -> Generator:
    return Generator.load(random_bundle_3d_path, device="cpu")


def test_bvh_of_a_generated_clip_reproduces_the_npz_export(generator_3d, tmp_path):
    clip = generator_3d.sample("Walking", seed=4, frames=300)
    render.export(clip, tmp_path / "walk.bvh")
    render.export(clip, tmp_path / "walk.npz")
    with np.load(tmp_path / "walk.npz") as npz:
        assert npz["joints"].shape == (300, NUM_JOINTS, 3)
        assert list(npz["joint_names"]) == list(JOINT_NAMES)
        error = assert_round_trip(tmp_path / "walk.bvh", npz["joints"], npz["root_position"])
    assert error < 0.1  # exact up to the file's 6 decimals (1 micrometre)


BLENDER = shutil.which("blender")


@pytest.mark.skipif(BLENDER is None, reason="Blender not installed (apt-get install -y blender)")
def test_blender_imports_the_bvh_upright_at_the_npz_positions(generator_3d, tmp_path):
    """What a user does with the file: Blender's own importer, default options. Blender is z up like the
    world frame, so the joints must land at the .npz positions (mm -> m), feet on the floor, every frame."""
    clip = generator_3d.sample("Walking", seed=4, frames=60)
    render.export(clip, tmp_path / "walk.bvh")
    render.export(clip, tmp_path / "walk.npz")
    script = Path(__file__).with_name("blender_bvh_positions.py")
    subprocess.run([BLENDER, "-b", "--factory-startup", "--python-exit-code", "1", "--python", str(script), "--",
                    str(tmp_path / "walk.bvh"), str(tmp_path / "blender.json"), json.dumps(END_SITE_JOINTS)],
                   check=True, capture_output=True,
                   timeout=120)
    imported = json.loads((tmp_path / "blender.json").read_text())
    assert imported["fps"] == pytest.approx(50 / 3, rel=1e-6)
    blender_mm = np.array([[frame[name] for name in JOINT_NAMES] for frame in imported["frames"]]) * 1000.0
    with np.load(tmp_path / "walk.npz") as npz:
        expected = npz["joints"] + npz["root_position"][:, None]
    assert blender_mm.shape == expected.shape == (60, NUM_JOINTS, 3)
    assert np.linalg.norm(blender_mm - expected, axis=-1).max() <= 10.0
    assert blender_mm[..., 2].min(axis=1) == pytest.approx(0.0, abs=1.0)  # the lowest joint on the floor


def awkward_clip() -> np.ndarray:
    """Poses a solver can get wrong: a knee folded straight back on the thigh (opposite bone directions),
    the hip line parallel to the spine (no twist reference), a spinning torso, and jitter on every joint."""
    rng = np.random.default_rng(3)
    t = np.linspace(0, 4 * np.pi, 120)
    rest = np.array([[0, 0, 0], [-130, 0, 0], [-130, 0, -440], [-130, 0, -890], [130, 0, 0], [130, 0, -440],
                     [130, 0, -890], [0, 0, 230], [0, 0, 490], [0, 0, 680], [150, 0, 470], [400, 0, 470],
                     [650, 0, 470], [-150, 0, 470], [-400, 0, 470], [-650, 0, 470]], dtype=float)
    spin = np.stack([np.stack([np.cos(t), -np.sin(t), 0 * t], -1), np.stack([np.sin(t), np.cos(t), 0 * t], -1),
                     np.broadcast_to([0, 0, 1.0], (len(t), 3))], axis=1)
    clip = np.einsum("tij,nj->tni", spin, rest) + rng.normal(0, 20, (len(t), NUM_JOINTS, 3))
    clip[10, 3] = clip[10, 2] + (clip[10, 2] - clip[10, 1])  # RFoot folded onto the thigh
    clip[20, 1], clip[20, 4] = (0, 0, -130), (0, 0, 130)  # hip line along the spine
    clip[:, HIP] = 0
    return clip.astype(np.float32)


def test_bvh_round_trip_survives_folded_and_degenerate_poses(tmp_path):
    clip = awkward_clip()
    fit = save_bvh(clip, tmp_path / "awkward.bvh", fps=50 / 3)
    assert_round_trip(tmp_path / "awkward.bvh", fit.joints, root_positions(fit.joints), max_mm=0.1)


def test_bvh_angles_run_on_through_full_turns(tmp_path):
    save_bvh(awkward_clip(), tmp_path / "spin.bvh", fps=50 / 3)  # the torso turns twice around
    lines = (tmp_path / "spin.bvh").read_text().splitlines()
    motion = np.loadtxt(lines[lines.index("MOTION") + 3:])
    heading = motion[:, 5]  # the Hip's Yrotation, after 3 positions and Zrotation, Xrotation
    assert np.abs(np.diff(heading)).max() < 180  # wrapped to [-180, 180] a turn would jump by about 350
    assert heading.max() - heading.min() > 600


def test_fit_keeps_directions_sets_mean_lengths_and_reports_the_move():
    clip = awkward_clip()
    fit = fit_fixed_lengths(clip)
    lengths = bone_lengths(fit.joints)
    np.testing.assert_allclose(lengths, np.broadcast_to(bone_lengths(clip).mean(0), lengths.shape), rtol=1e-4)
    raw_dirs = np.diff(clip[:, [0, 1]], axis=1)[:, 0]
    fit_dirs = np.diff(fit.joints[:, [0, 1]], axis=1)[:, 0]
    cos = np.sum(raw_dirs * fit_dirs, -1) / np.linalg.norm(raw_dirs, axis=-1) / np.linalg.norm(fit_dirs, axis=-1)
    np.testing.assert_allclose(cos, 1, atol=1e-5)
    moved = np.linalg.norm(fit.joints - clip, axis=-1)
    assert fit.displacement_mean_mm == pytest.approx(moved.mean(), rel=1e-4)
    assert fit.displacement_max_mm == pytest.approx(moved.max(), rel=1e-4) and fit.displacement_max_mm > 10
    again = fit_fixed_lengths(fit.joints)  # already fixed-length: nothing moves
    assert again.displacement_max_mm < 0.01


def test_root_position_puts_the_lowest_joint_on_the_floor():
    clip = awkward_clip()
    root = root_positions(clip)
    assert root.shape == (len(clip), 3) and np.all(root[:, :2] == 0)
    np.testing.assert_allclose((clip + root[:, None])[..., 2].min(axis=1), 0, atol=1e-3)


def test_3d_samples_come_on_the_fixed_length_skeleton_and_say_how_far_it_moved_the_network(generator_3d):
    clip = generator_3d.sample("Eating", seed=2, frames=40)
    raw = generator_3d.sample("Eating", seed=2, frames=40, fixed_bones=False)
    assert raw.fit_displacement_mm is None
    fit = fit_fixed_lengths(raw.joints)
    assert bone_lengths(raw.joints).std(axis=0).max() > 0.3  # the untrained network's bones stretch (mm)
    np.testing.assert_allclose(clip.joints, fit.joints, atol=1e-4)
    np.testing.assert_allclose(clip.fit_displacement_mm, [fit.displacement_mean_mm, fit.displacement_max_mm],
                               rtol=1e-5)
    batch = generator_3d.sample_many(["Eating", "Walking"], [2, 5], frames=40)
    np.testing.assert_allclose(batch[0].joints, clip.joints, atol=1e-5)
    np.testing.assert_allclose(batch[0].fit_displacement_mm, clip.fit_displacement_mm, rtol=1e-5)
    assert batch.fit_displacement_mm.shape == (2, 2)
    np.testing.assert_allclose(bone_lengths(batch.joints).std(axis=1), 0, atol=1e-3)


@pytest.mark.parametrize("fixed_bones", [True, False])
def test_3d_data_exports_hold_the_fixed_length_skeleton_in_mm(generator_3d, tmp_path, fixed_bones):
    clip = generator_3d.sample("Eating", seed=2, frames=40, fixed_bones=fixed_bones)
    raw = generator_3d.sample("Eating", seed=2, frames=40, fixed_bones=False)
    fit = fit_fixed_lengths(raw.joints)
    render.export(clip, tmp_path / "c.json")
    doc = json.loads((tmp_path / "c.json").read_text())
    np.testing.assert_allclose(np.array(doc["joints"]), fit.joints, atol=1e-3)
    assert doc["joint_names"] == list(JOINT_NAMES) and doc["units"].startswith("millimetres")
    # Either way the file says how far the skeleton moved the network's joints, not a refit's 0.
    assert doc["fit_displacement_max_mm"] == pytest.approx(fit.displacement_max_mm, rel=1e-5)
    assert doc["fit_displacement_mean_mm"] == pytest.approx(fit.displacement_mean_mm, rel=1e-5)
    assert np.array(doc["root_position"]).shape == (40, 3)


def test_3d_clips_render_as_gif_and_strip(generator_3d, tmp_path):
    from PIL import Image

    clip = generator_3d.sample("Walking", seed=1, frames=12)
    render.export(clip, tmp_path / "c.gif", size=64)
    with Image.open(tmp_path / "c.gif") as gif:
        assert gif.size == (64, 64) and gif.n_frames == 12
    strip = generator_3d.interpolation_strip("Walking", 1, 2, steps=3, frames=12)
    render.export(strip, tmp_path / "s.png", size=64)
    with Image.open(tmp_path / "s.png") as png:
        assert png.size == (8 * 64, 3 * 64)
    with pytest.raises(ValueError, match="a BVH file holds one clip"):
        render.export(strip, tmp_path / "s.bvh")


def test_cli_writes_bvh_for_a_3d_model_and_refuses_it_for_a_2d_one(random_bundle_3d_path, random_bundle_path,
                                                                    tmp_path, capsys):
    out = tmp_path / "walk.bvh"
    assert cli_main(["sample", "--checkpoint", str(random_bundle_3d_path), "--device", "cpu", "--action", "Walking",
                     "--frames", "30", "--out", str(out)]) == 0
    assert read_bvh_positions(out)[1] == 30
    assert "fixed-length skeleton moved joints by" in capsys.readouterr().out
    assert cli_main(["sample", "--checkpoint", str(random_bundle_path), "--device", "cpu", "--action", "Walking",
                     "--out", str(tmp_path / "flat.bvh")]) == 2
    assert "BVH export needs a 3D clip" in capsys.readouterr().err
    assert not (tmp_path / "flat.bvh").exists()


def test_cli_model_choice_is_checked(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["sample", "--model", "4d", "--action", "Walking", "--out", str(tmp_path / "x.bvh")])
    assert exit_info.value.code == 2
    assert "invalid choice: '4d' (choose from '2d', '3d')" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["sample", "--model", "3d", "--checkpoint", "x.json", "--action", "Walking", "--out",
                  str(tmp_path / "x.bvh")])
    assert "not allowed with argument" in capsys.readouterr().err


def test_cli_refuses_bvh_it_cannot_write_before_generating(random_bundle_path, tmp_path, capsys, monkeypatch):
    from actiongen.generator import Generator

    def no_sampling(*args, **kwargs):
        raise AssertionError("clips were generated before the BVH export was refused")

    monkeypatch.setattr(Generator, "sample", no_sampling)
    monkeypatch.setattr(Generator, "sample_many", no_sampling)
    monkeypatch.setattr(Generator, "interpolation_strip", no_sampling)
    base = ["--checkpoint", str(random_bundle_path), "--device", "cpu", "--action", "Walking"]
    assert cli_main(["sample", *base, "--out", str(tmp_path / "flat.bvh")]) == 2
    assert "BVH export needs a 3D clip" in capsys.readouterr().err
    assert cli_main(["interpolate", *base, "--to-seed", "2", "--out", str(tmp_path / "strip.bvh")]) == 2
    assert "a BVH file holds one clip" in capsys.readouterr().err
    assert cli_main(["sample-all", "--checkpoint", str(random_bundle_path), "--device", "cpu", "--per-class", "1",
                     "--format", "bvh", "--out", str(tmp_path / "clips")]) == 2
    assert "BVH export needs a 3D clip" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
