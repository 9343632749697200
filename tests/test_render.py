"""Exports: GIF / MP4 / PNG decode with the right frames, timing, size, framing and colours;
NPZ and JSON round-trip everything needed to reuse or regenerate a clip."""
import io
import json
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
from PIL import Image

from actiongen import render
from actiongen.generator import Generator
from actiongen.skeleton import ACTIONS, BONES, JOINT_NAMES
from synthetic_h36m import random_bundle


@pytest.fixture(scope="module")
def gen(synthetic_data) -> Generator:
    return Generator(random_bundle(synthetic_data.stats))


@pytest.fixture(scope="module")
def clip(gen):
    return gen.sample("Walking", 3, frames=24)


@pytest.fixture(scope="module")
def real_pose(synthetic_data) -> np.ndarray:
    """A (16, 2) pose from the data, hip at the origin."""
    return synthetic_data.sequences[0].joints[0]


def rgb(colour: str) -> np.ndarray:
    return np.array(Image.new("RGB", (1, 1), colour).getpixel((0, 0)))


def to_pixel(point: np.ndarray, size: int) -> tuple[int, int]:
    scale = size / (2 * render.VIEW_HALF_EXTENT)
    return tuple(int(v) for v in np.round((point + render.VIEW_HALF_EXTENT) * scale))


def test_gif_frames_duration_and_size(clip, tmp_path):
    path = render.save_gif(clip, tmp_path / "sub" / "walk.gif", size=128)
    with Image.open(path) as im:
        assert im.size == (128, 128) and im.n_frames == clip.frames and im.info["loop"] == 0
        durations = []
        for k in range(im.n_frames):
            im.seek(k)
            durations.append(im.info["duration"])
    assert durations == [60] * clip.frames  # 50/3 fps
    assert render.gif_bytes(clip.joints, size=64).startswith(b"GIF89a")


def test_gif_durations_keep_the_clock_for_any_fps():
    durations = render.frame_durations_ms(30, fps=30.0)
    assert all(d % 10 == 0 for d in durations) and sum(durations) == 1000
    with Image.open(io.BytesIO(render.gif_bytes(np.zeros((5, 16, 2), np.float32), fps=25.0, size=32))) as im:
        assert im.info["duration"] == 40


def test_strip_is_drawn_side_by_side(gen, tmp_path):
    strip = gen.interpolation_strip("Walking", 1, 2, steps=3, frames=10)
    with Image.open(render.save_gif(strip, tmp_path / "strip.gif", size=64)) as im:
        assert im.size == (3 * 64, 64) and im.n_frames == 10
    with Image.open(render.save_filmstrip_png(strip, tmp_path / "strip.png", frames=4, size=64)) as im:
        assert im.size == (4 * 64, 3 * 64)
    with pytest.raises(ValueError, match="same number of frames"):
        render.as_joints([gen.sample("Walking", 1, frames=10), gen.sample("Walking", 1, frames=11)])


def test_fixed_framing_and_side_colours(real_pose):
    """The hip is always the panel centre and the scale is fixed: a figure twice as big is drawn twice as big,
    not zoomed to fit; limbs are drawn in their side's colour."""
    size = 200
    normal = np.asarray(render.render_frame(real_pose[None], size))
    assert np.abs(normal[to_pixel(np.zeros(2), size)[::-1]] - rgb(render.SIDE_COLORS["center"])).max() < 40

    def extent(image: np.ndarray) -> np.ndarray:
        ys, xs = np.nonzero((image != rgb(render.BACKGROUND)).any(axis=-1))
        return np.array([xs.min(), xs.max(), ys.min(), ys.max()]) - size / 2

    big = np.asarray(render.render_frame(0.5 * real_pose[None], size))
    assert np.allclose(extent(normal), 2 * extent(big), atol=6)
    expected = np.array([to_pixel(real_pose.min(0), size)[0], to_pixel(real_pose.max(0), size)[0],
                         to_pixel(real_pose.min(0), size)[1], to_pixel(real_pose.max(0), size)[1]]) - size / 2
    assert np.allclose(extent(normal), expected, atol=6)
    for parent, child, side in BONES:
        if side != "center":
            middle = to_pixel((real_pose[parent] + real_pose[child]) / 2, size)
            assert np.abs(normal[middle[::-1]] - rgb(render.SIDE_COLORS[side])).max() < 40, (parent, child)


def test_constant_pose_frames_differ_only_in_the_progress_bar(real_pose, tmp_path):
    frames = [np.asarray(f) for f in render.render_frames(np.repeat(real_pose[None], 4, axis=0), size=64)]
    bar = max(2, 64 // 64)
    assert all(np.array_equal(frames[0][:-bar], f[:-bar]) for f in frames)
    assert [int((f[-1] != rgb(render.BACKGROUND)).any(axis=-1).sum()) for f in frames] == [16, 32, 48, 64]
    with Image.open(render.save_gif(np.repeat(real_pose[None], 4, axis=0), tmp_path / "still.gif", size=64)) as im:
        assert im.n_frames == 4  # not merged into one frame


def test_mp4_is_readable_with_all_frames(clip, tmp_path):
    path = render.save_mp4(clip, tmp_path / "walk.mp4", size=100)  # rounded up to 112 for the codec
    reader = imageio.get_reader(path, format="FFMPEG")
    try:
        frames = [frame for frame in reader]
        assert reader.get_meta_data()["fps"] == pytest.approx(50 / 3, abs=0.01)
    finally:
        reader.close()
    assert len(frames) == clip.frames and frames[0].shape == (112, 112, 3)


def test_filmstrip_png(clip, tmp_path):
    with Image.open(render.export(clip, tmp_path / "walk.png")) as im:
        assert im.size == (8 * 256, 256) and im.format == "PNG"
    with pytest.raises(ValueError, match="1 to 24 frames"):
        render.save_filmstrip_png(clip, tmp_path / "x.png", frames=30)


def test_npz_and_json_round_trip(gen, tmp_path):
    s = gen.sample({"Walking": 1, "Phoning": 1}, 9, frames=12, seed_b=10, alpha=0.25)
    with np.load(render.export(s, tmp_path / "s.npz"), allow_pickle=False) as z:
        npz = {k: z[k] for k in z.files}
    data = json.loads(render.export(s, tmp_path / "s.json").read_text())
    for loaded in (npz, data):
        assert np.array_equal(np.asarray(loaded["joints"], dtype=np.float32), s.joints)
        assert np.array_equal(np.asarray(loaded["class_weights"], dtype=np.float32), s.class_weights)
        assert np.array_equal(np.asarray(loaded["probabilities"], dtype=np.float32), s.probabilities)
        assert list(loaded["joint_names"]) == list(JOINT_NAMES) and list(loaded["actions"]) == list(ACTIONS)
        assert np.asarray(loaded["bones"]).tolist() == [[p, c] for p, c, _ in BONES]
        assert list(loaded["bone_sides"]) == [side for _, _, side in BONES]
        assert float(loaded["fps"]) == s.fps and str(loaded["action_label"]) == s.action_label
        assert int(loaded["seed"]) == 9 and int(loaded["seed_b"]) == 10 and float(loaded["alpha"]) == 0.25
    # The recorded arguments regenerate the clip.
    weights = dict(zip(data["actions"], data["class_weights"][0]))
    again = gen.sample(weights, data["seed"], data["frames"], seed_b=data["seed_b"], alpha=data["alpha"])
    assert np.array_equal(again.joints, s.joints)


def test_batch_npz_holds_poses_labels_and_actions(gen, tmp_path):
    batch = gen.sample_many(["Eating", "Walking", "Eating"], [1, 2, 3], frames=10)
    with np.load(render.save_npz(batch, tmp_path / "all.npz"), allow_pickle=False) as z:
        assert z["poses"].shape == (3, 10, 16, 2) and np.array_equal(z["poses"], batch.joints)
        assert z["labels"].tolist() == [2, 9, 2] and list(z["actions"]) == list(ACTIONS)


def test_export_rejects_unknown_formats_and_bad_shapes(clip, tmp_path):
    with pytest.raises(ValueError, match=r"valid: \.gif, \.mp4, \.png, \.npz, \.json"):
        render.export(clip, tmp_path / "walk.avi")
    with pytest.raises(ValueError, match=r"shape \(T, 16, 2\)"):
        render.gif_bytes(np.zeros((5, 15, 2)))
    assert not any(Path(tmp_path).iterdir())


@pytest.mark.parametrize("size, message", [(15, "size must be in [16, 2048]; got 15"),
                                           (20000, "size must be in [16, 2048]; got 20000"),
                                           (256.0, "size must be an integer in [16, 2048]; got 256.0")])
def test_panel_size_outside_the_valid_range_is_refused(clip, tmp_path, size, message):
    for write in (render.gif_bytes, lambda c, size: render.save_mp4(c, tmp_path / "x.mp4", size=size),
                  lambda c, size: render.save_filmstrip_png(c, tmp_path / "x.png", size=size)):
        with pytest.raises(ValueError) as err:
            write(clip, size=size)
        assert message in str(err.value)


def test_exports_too_large_for_memory_are_refused_before_drawing(tmp_path, monkeypatch):
    monkeypatch.setattr(render, "render_frame", lambda *args, **kwargs: pytest.fail("drew a frame"))
    strip = np.zeros((64, 1000, 16, 2), np.float32)  # 64 clips of 1000 frames side by side
    with pytest.raises(ValueError, match=r"64000 panels of 256 x 256 px are more than 250,000,000 pixels; "
                                         r"use a size of at most 62 px"):
        render.gif_bytes(strip)
    with pytest.raises(ValueError, match="use fewer frames or clips"):
        still = np.broadcast_to(np.zeros((1, 1, 16, 2), np.float32), (64, 20000, 16, 2))  # no memory
        render.save_mp4(still, tmp_path / "x.mp4", size=16)
    with pytest.raises(ValueError, match="512 panels of 2048 x 2048 px"):
        render.save_filmstrip_png(strip, tmp_path / "x.png", frames=8, size=2048)
    assert not any(tmp_path.iterdir())


def test_mp4_write_failure_is_one_line_without_the_ffmpeg_command(clip, tmp_path):
    target = tmp_path / "walk.mp4"
    target.mkdir()  # ffmpeg cannot open a directory for writing
    with pytest.raises(OSError) as err:
        render.save_mp4(clip, target, size=64)
    message = str(err.value)
    assert message.startswith("walk.mp4: ffmpeg could not write the MP4 (") and "Is a directory" in message
    assert "\n" not in message and "-vcodec" not in message and str(tmp_path) not in message


def test_failed_mp4_encoding_leaves_no_half_written_file(clip, tmp_path, monkeypatch):
    fake_ffmpeg = tmp_path / "ffmpeg"
    fake_ffmpeg.write_text('#!/bin/sh\ncat > /dev/null\nfor out; do :; done\necho partial > "$out"\n'
                           'echo "Conversion failed while writing $out" >&2\nexit 1\n')
    fake_ffmpeg.chmod(0o755)
    monkeypatch.setattr(render.imageio_ffmpeg, "get_ffmpeg_exe", lambda: str(fake_ffmpeg))
    target = tmp_path / "videos" / "walk.mp4"
    with pytest.raises(OSError) as err:
        render.save_mp4(clip, target, size=32)
    assert str(err.value) == "walk.mp4: ffmpeg could not write the MP4 (Conversion failed while writing walk.mp4)"
    assert not target.exists()
