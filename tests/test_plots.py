import json

import numpy as np
import pytest

from actiongen.plots import (CHAINS, FLOOR_STEP_MM, SIDE_NAMES, figure_json, latent_path_figure, pca_2d,
                             probability_figure, side_chains, skeleton_figure, skeleton_figure_3d, view_bounds)
from actiongen.render import SIDE_COLORS
from actiongen.skeleton import ACTIONS, BONES, JOINT_NAMES


def walking_joints(frames: int, seed: int = 0) -> np.ndarray:
    """(T, 16, 2) poses: a standing figure (hip at the origin, head up = negative y) with swinging limbs."""
    rng = np.random.default_rng(seed)
    rest = np.array([[0, 0], [-20, 0], [-20, 90], [-20, 180], [20, 0], [20, 90], [20, 180], [0, -60],
                     [0, -120], [0, -170], [30, -115], [45, -60], [50, -10], [-30, -115], [-45, -60], [-50, -10]],
                    dtype=np.float32)
    swing = 25 * np.sin(np.linspace(0, 2 * np.pi, frames))[:, None]
    joints = np.repeat(rest[None], frames, axis=0)
    joints[:, [12, 3], 0] += swing
    joints[:, [15, 6], 0] -= swing
    joints[:, 1:] += rng.normal(0, 0.5, joints[:, 1:].shape).astype(np.float32)
    return joints


def segments_of(trace: dict) -> set[tuple]:
    """The drawn two-point segments of a polyline trace (None separates strokes)."""
    points = list(zip(trace["x"], trace["y"]))
    return {(a, b) for a, b in zip(points, points[1:]) if None not in a and None not in b}


def test_side_chains_draw_every_bone_once_on_its_side():
    chains = side_chains(BONES)
    assert set(chains) == {"left", "right", "center"}
    for side, chain in chains.items():
        bones = {(p, c) for p, c, s in BONES if s == side}
        drawn = {(a, b) for a, b in zip(chain, chain[1:]) if a >= 0 and b >= 0}
        assert drawn == bones
        strokes = chain.count(-1) + 1
        assert len(chain) - chain.count(-1) == len(bones) + strokes, "no joint drawn twice within a side"
        assert strokes == (1 if side == "center" else 2)


def test_skeleton_figure_has_one_frame_per_time_step_and_three_traces():
    joints = walking_joints(40)
    figure = skeleton_figure(joints, fps=50 / 3, title="Walking", revision="r1")
    assert len(figure["data"]) == 3
    assert [t["name"] for t in figure["data"]] == ["right side", "left side", "spine / head"]
    assert len(figure["frames"]) == 40
    assert all(len(f["data"]) == 3 and f["traces"] == [0, 1, 2] for f in figure["frames"])
    assert [f["name"] for f in figure["frames"]] == [str(t) for t in range(40)]
    assert figure["layout"]["datarevision"] == "r1"
    assert figure["layout"]["meta"] == {"fps": pytest.approx(50 / 3), "frames": 40, "columns": 1, "rows": 1,
                                        "selected": None}
    assert "updatemenus" not in figure["layout"], "the page plays every figure on one clock"


def test_skeleton_frames_hold_the_rounded_joints_of_each_time_step():
    joints = walking_joints(12)
    figure = skeleton_figure(joints, fps=50 / 3)
    for t in (0, 5, 11):
        for side_index, (side, chain) in enumerate(CHAINS.items()):
            trace = figure["frames"][t]["data"][side_index]
            expected = [None if j < 0 else round(float(joints[t, j, 0]), 1) for j in chain]
            assert trace["x"] == expected
            assert all(v is None or v == round(v, 1) for v in trace["y"])
            for parent, child, bone_side in BONES:
                if bone_side == side:
                    segment = (tuple(np.round(joints[t, parent].astype(np.float64), 1)),
                               tuple(np.round(joints[t, child].astype(np.float64), 1)))
                    assert segment in segments_of(trace)
    assert figure["data"][0]["x"] == figure["frames"][0]["data"][0]["x"]


def test_skeleton_axes_are_fixed_equal_and_upright():
    joints = walking_joints(30)
    layout = skeleton_figure(joints, fps=50 / 3)["layout"]
    y_range, x_range = layout["yaxis"]["range"], layout["xaxis"]["range"]
    assert layout["yaxis"]["scaleanchor"] == "x" and layout["yaxis"]["scaleratio"] == 1
    assert y_range[0] > y_range[1], "image y points down: the axis must be reversed so heads are on top"
    assert layout["xaxis"]["fixedrange"] and layout["yaxis"]["fixedrange"]
    xs, ys = joints[..., 0], joints[..., 1]
    assert x_range[0] <= xs.min() and xs.max() <= x_range[1]
    assert y_range[1] <= ys.min() and ys.max() <= y_range[0]


def test_view_is_the_tightest_window_around_every_pose_with_a_margin():
    joints = walking_joints(10)
    x0, x1, y0, y1 = view_bounds(joints)
    lo, hi = joints.reshape(-1, 2).min(axis=0), joints.reshape(-1, 2).max(axis=0)
    margin = 0.06 * max(hi - lo)
    assert (x0, x1, y0, y1) == pytest.approx((lo[0] - margin, hi[0] + margin, lo[1] - margin, hi[1] + margin))
    wide = walking_joints(10)
    wide[3, 12, 0] = 400.0
    assert view_bounds(wide)[1] > 400.0


def test_gallery_grid_puts_every_clip_in_a_cell_of_the_same_size():
    clips = np.stack([walking_joints(12, seed=k) for k in range(9)])
    figure = skeleton_figure(clips, fps=50 / 3, captions=[f"seed {k}" for k in range(9)], columns=3, selected=4)
    meta, layout = figure["layout"]["meta"], figure["layout"]
    assert (meta["columns"], meta["rows"], meta["selected"]) == (3, 3, 4)
    width = (layout["xaxis"]["range"][1] - layout["xaxis"]["range"][0]) / 3
    height = (layout["yaxis"]["range"][0] - layout["yaxis"]["range"][1]) / 3
    assert width >= 0.6 * height - 0.2, "cells wide enough for their captions"
    spine = figure["frames"][0]["data"][2]
    hips = [(x, y) for x, y, prev in zip(spine["x"], spine["y"], [None] + spine["x"][:-1])
            if prev is None and x is not None]
    assert hips[4][0] - hips[3][0] == pytest.approx(width, abs=0.2)
    assert hips[3][1] - hips[0][1] == pytest.approx(height, abs=0.2)


def test_strip_draws_clips_side_by_side_in_one_animation():
    clips = np.stack([walking_joints(20, seed=k) for k in range(4)])
    figure = skeleton_figure(clips, fps=50 / 3, captions=["a", "b", "c", "d"])
    assert len(figure["frames"]) == 20 and len(figure["data"]) == 3
    center = figure["frames"][7]["data"][2]
    hips = [x for x, prev in zip(center["x"], [None] + center["x"][:-1]) if prev is None and x is not None]
    assert len(hips) == 4, "one spine stroke per clip"
    step = hips[1] - hips[0]
    assert step > 100 and np.allclose(np.diff(hips), step, atol=0.11)
    assert [a["text"] for a in figure["layout"]["annotations"]] == ["a", "b", "c", "d"]
    x_range = figure["layout"]["xaxis"]["range"]
    assert x_range[1] - x_range[0] == pytest.approx(4 * step, abs=0.5)


def test_pca_2d_finds_the_plane_of_a_planar_path():
    t = np.linspace(0, 1, 60)
    plane = np.linalg.qr(np.random.default_rng(1).normal(size=(12, 2)))[0]
    path2 = np.stack([3 * np.cos(2 * np.pi * t), np.sin(2 * np.pi * t)], axis=1)
    projected, explained = pca_2d(path2 @ plane.T)
    assert explained.sum() == pytest.approx(1.0)
    assert explained[0] > explained[1]
    # distances between points are preserved by a projection onto the path's own plane
    d_in = np.linalg.norm(path2[:, None] - path2[None], axis=-1)
    d_out = np.linalg.norm(projected[:, None] - projected[None], axis=-1)
    assert np.allclose(d_in, d_out, atol=1e-9)
    flipped, _ = pca_2d(-(path2 @ plane.T))
    assert np.allclose(np.abs(flipped), np.abs(projected))


def test_pca_2d_of_a_still_path_is_finite():
    projected, explained = pca_2d(np.ones((10, 12)))
    assert projected.shape == (10, 2) and np.isfinite(projected).all() and np.isfinite(explained).all()


def test_latent_path_figure_marks_start_and_end_and_colours_by_time():
    latents = np.cumsum(np.random.default_rng(0).normal(size=(50, 12)), axis=0)
    figure = latent_path_figure(latents, fps=50 / 3)
    line, points, start, end = figure["data"]
    assert len(points["x"]) == 50
    assert points["marker"]["color"] == sorted(points["marker"]["color"])
    assert points["marker"]["color"][-1] == pytest.approx(49 / (50 / 3), abs=0.01)
    assert (start["x"][0], start["y"][0]) == (points["x"][0], points["y"][0])
    assert (end["x"][0], end["y"][0]) == (points["x"][-1], points["y"][-1])
    assert start["name"] == "start" and end["name"] == "end"
    assert "12-d" in figure["layout"]["title"]["text"]
    assert "24-d" in latent_path_figure(np.zeros((50, 24)), fps=50 / 3)["layout"]["title"]["text"]


def test_probability_figure_highlights_the_requested_actions():
    probabilities = np.full(10, 0.05)
    probabilities[9] = 0.55
    requested = np.zeros(10)
    requested[[4, 9]] = 0.5
    bar = probability_figure(probabilities, ACTIONS, requested)["data"][0]
    assert bar["y"] == list(ACTIONS) and bar["x"][9] == pytest.approx(0.55)
    colors = bar["marker"]["color"]
    assert colors[4] == colors[9]
    assert {c for i, c in enumerate(colors) if i not in (4, 9)} == {colors[0]} != {colors[9]}


def test_figure_json_is_compact_strict_json():
    text = figure_json(skeleton_figure(walking_joints(50), fps=50 / 3))
    assert json.loads(text)["frames"][49]["name"] == "49"
    assert "NaN" not in text and ", " not in text
    assert len(text) < 40_000, "a 50-frame skeleton should stay a small payload"


def test_one_clip_and_a_strip_of_one_clip_draw_the_same():
    joints = walking_joints(16)
    one = skeleton_figure(joints, fps=50 / 3)
    many = skeleton_figure(joints[None], fps=50 / 3)
    assert one["frames"] == many["frames"]


def walking_joints_3d(frames: int) -> np.ndarray:
    """(T, 16, 3) world poses in mm, z up: the 2D walker stood up in the x-z plane (feet about 900 mm below
    the hip), its limbs also swinging along y, and the whole body bobbing up and down."""
    flat = walking_joints(frames).astype(np.float64) * 5.0
    joints = np.stack([flat[..., 0], np.zeros_like(flat[..., 0]), -flat[..., 1]], axis=-1)
    joints[:, [12, 3], 1] += 150 * np.sin(np.linspace(0, 2 * np.pi, frames))[:, None]
    joints[..., 2] += 40 * np.cos(np.linspace(0, 4 * np.pi, frames))[:, None]
    return joints


def test_3d_skeleton_has_one_frame_per_time_step_with_the_rounded_joints():
    joints = walking_joints_3d(30)
    figure = skeleton_figure_3d(joints, 16.67, title="Walking", revision="r")
    assert len(figure["frames"]) == 30
    assert [trace["type"] for trace in figure["data"]] == ["scatter3d"] * 4
    for t in (0, 17):
        frame = figure["frames"][t]
        assert frame["traces"] == [0, 1, 2], "frames move the skeleton, never the floor"
        for trace, chain in zip(frame["data"], CHAINS.values()):
            expected = [None if j < 0 else np.round(joints[t, j]).astype(int).tolist() for j in chain]
            assert [None if x is None else [x, y, z] for x, y, z in zip(trace["x"], trace["y"], trace["z"])] == expected
    assert figure["layout"]["meta"]["fps"] == 16.67 and figure["layout"]["datarevision"] == "r"
    assert figure["layout"]["uirevision"], "a camera the user turned stays turned when new data comes"


def test_3d_skeleton_colours_each_side():
    figure = skeleton_figure_3d(walking_joints_3d(5), 16.67)
    sides = figure["data"][:3]
    assert [trace["name"] for trace in sides] == [SIDE_NAMES[side] for side in CHAINS]
    assert [trace["line"]["color"] for trace in sides] == [SIDE_COLORS[side] for side in CHAINS]
    assert SIDE_COLORS["left"] != SIDE_COLORS["right"]


def test_3d_scene_has_equal_scale_and_holds_every_pose():
    joints = walking_joints_3d(40)
    scene = skeleton_figure_3d(joints, 16.67)["layout"]["scene"]
    spans = np.array([np.diff(scene[f"{axis}axis"]["range"])[0] for axis in "xyz"], dtype=float)
    ratios = np.array([scene["aspectratio"][axis] for axis in "xyz"])
    assert scene["aspectmode"] == "manual"
    np.testing.assert_allclose(ratios / spans, ratios[0] / spans[0], rtol=1e-3)  # one mm is one mm on every axis
    for k, axis in enumerate("xyz"):
        low, high = scene[f"{axis}axis"]["range"]
        assert low < joints[..., k].min() and joints[..., k].max() < high
    assert spans[2] < np.ptp(joints[..., 2]) * 1.3, "fitted: no room wasted above the head or below the floor"
    assert scene["camera"]["up"] == {"x": 0, "y": 0, "z": 1}, "z is up"


def test_3d_floor_grid_lies_at_the_lowest_foot_and_spans_the_footprint():
    joints = walking_joints_3d(40)
    feet = [JOINT_NAMES.index("LFoot"), JOINT_NAMES.index("RFoot")]
    floor = skeleton_figure_3d(joints, 16.67)["data"][3]
    heights = {z for z in floor["z"] if z is not None}
    assert heights == {round(float(joints[:, feet, 2].min()))}
    xs, ys = [x for x in floor["x"] if x is not None], [y for y in floor["y"] if y is not None]
    assert min(xs) < joints[..., 0].min() and max(xs) > joints[..., 0].max()
    assert min(ys) < joints[..., 1].min() and max(ys) > joints[..., 1].max()
    assert set(np.diff(sorted(set(xs)))) == {FLOOR_STEP_MM}


def test_3d_figure_json_is_lean():
    text = figure_json(skeleton_figure_3d(walking_joints_3d(50), 16.67, title="Walking, seed 7", revision="r"))
    assert ".0," not in text, "whole millimetres, written as integers"
    assert len(text) < 30_000, "50 frames stay a small download"
