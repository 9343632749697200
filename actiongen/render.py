"""Exports of generated clips: animated GIF and MP4, a PNG filmstrip, and NPZ / JSON data files.

Skeletons are drawn with Pillow at twice the output size and halved (anti-aliased lines), left limbs
in blue and right limbs in red. The view is a fixed window around the hip (which is the origin of
every pose), so a figure never jumps between frames and every clip is drawn at the same scale.
Several clips (an interpolation strip) are drawn side by side and animated together.

3D clips (joints (T, 16, 3), world millimetres) are drawn in the fixed oblique view of
`actiongen.views.oblique_view`; their data files hold the fixed-length skeleton of `actiongen.skeleton` (the
same one a BVH file of the clip has), and `.bvh` writes the clip for Blender, Maya or Unity.
"""
from __future__ import annotations

import contextlib
import io
import itertools
import json
import subprocess
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Sequence, Union

import imageio_ffmpeg
import numpy as np
from PIL import Image, ImageDraw

from . import bvh
from .generator import FPS, Sample, SampleBatch, check_int
from .skeleton import BONES, JOINT_NAMES, NUM_JOINTS, fit_fixed_lengths
from .views import drawable

SIDE_COLORS: dict[str, str] = {"left": "#1f6fd1", "right": "#d6332a", "center": "#3c3c3c"}
BACKGROUND = "#ffffff"
SEPARATOR = "#d0d0d0"  # the line between clips drawn side by side
# Half the width of the view in dataset units; real poses stay within about +-200 of the hip.
VIEW_HALF_EXTENT = 215.0
SUPERSAMPLE = 2
SAMPLE_FORMAT = "actiongen-sample/1"
UNITS = "dataset units (depth-normalised camera pixels), hip at the origin, y pointing down"
UNITS_3D = ("millimetres, world frame, hip at the origin, z up; root_position (T, 3) puts the hip above the "
            "floor")
EXPORT_SUFFIXES = (".gif", ".mp4", ".png", ".npz", ".json", ".bvh")
MIN_SIZE, MAX_SIZE = 16, 2048  # pixels per clip panel
# Pixels of one export, all frames and panels together: a GIF holds them all at once (1-2 bytes a pixel),
# a filmstrip too (4), so no size, length and strip width together can ask for much more than 1 GB.
MAX_RENDER_PIXELS = 250_000_000
FILMSTRIP_FRAMES = 8

Clips = Union[Sample, Sequence[Sample], np.ndarray]


def _joint_sides() -> list[str]:
    sides = ["center"] * NUM_JOINTS
    for _, child, side in BONES:
        sides[child] = side
    return sides


JOINT_SIDES = _joint_sides()


def as_joints(clips: Clips) -> np.ndarray:
    """(K, T, 16, 2) drawing coordinates of a Sample, a list of Samples (same length), or a (T|K,T, 16, 2|3)
    array; 3D joints in the oblique view."""
    if isinstance(clips, Sample):
        joints = clips.joints[None]
    elif isinstance(clips, np.ndarray):
        joints = clips[None] if clips.ndim == 3 else clips
    elif not clips:
        raise ValueError("no clips to draw")
    else:
        lengths = {s.frames for s in clips}
        if len(lengths) != 1:
            raise ValueError(f"clips drawn together need the same number of frames; got {sorted(lengths)}")
        joints = np.stack([s.joints for s in clips])
    if joints.ndim != 4 or joints.shape[2:] not in ((NUM_JOINTS, 2), (NUM_JOINTS, 3)) or joints.shape[1] < 1:
        raise ValueError(f"joints must have shape (T, {NUM_JOINTS}, 2) or (K, T, {NUM_JOINTS}, 2), or 3 "
                         f"coordinates for 3D clips; got {np.shape(clips)}")
    return np.asarray(drawable(joints), dtype=np.float32)


def clip_fps(clips: Clips, fps: float | None) -> float:
    """An explicit fps, else the Sample's own, else the model's 50/3."""
    if fps is not None:
        if not np.isfinite(fps) or fps <= 0:
            raise ValueError(f"fps must be a positive number; got {fps!r}")
        return float(fps)
    if isinstance(clips, Sample):
        return clips.fps
    if isinstance(clips, Sequence) and clips and isinstance(clips[0], Sample):
        return clips[0].fps
    return FPS


# ----------------------------------------------------------------------------- drawing

def draw_pose(draw: ImageDraw.ImageDraw, joints: np.ndarray, left: float, size: float) -> None:
    """One (16, 2) pose into the square panel of side `size` pixels whose left edge is at `left`."""
    scale = size / (2 * VIEW_HALF_EXTENT)
    points = [(left + (x + VIEW_HALF_EXTENT) * scale, (y + VIEW_HALF_EXTENT) * scale) for x, y in joints]
    width = max(1, round(size / 60))
    radius = width * 0.75
    for parent, child, side in sorted(BONES, key=lambda b: b[2] != "center"):
        draw.line([points[parent], points[child]], fill=SIDE_COLORS[side], width=width)
    for (x, y), side in zip(points, JOINT_SIDES):
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=SIDE_COLORS[side])


def render_frame(poses: np.ndarray, size: int = 256, progress: float | None = None) -> Image.Image:
    """(K, 16, 2) poses side by side as one RGB image of size (K * size, size), with a bar along the
    bottom edge covering the `progress` share of the width when given."""
    big = size * SUPERSAMPLE
    image = Image.new("RGB", (big * len(poses), big), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for k, pose in enumerate(poses):
        if k:
            draw.line([(k * big, 0), (k * big, big)], fill=SEPARATOR, width=SUPERSAMPLE)
        draw_pose(draw, pose, k * big, big)
    if progress is not None:
        bar = max(2, size // 64) * SUPERSAMPLE
        draw.rectangle([0, big - bar, round(progress * image.width) - 1, big - 1], fill=SEPARATOR)  # inclusive
    return image.reduce(SUPERSAMPLE)


def check_render_size(size: object, panels: int) -> int:
    """`size` (pixels per panel side) in [MIN_SIZE, MAX_SIZE], for an export of `panels` square panels
    (frames x clips) that together must stay within MAX_RENDER_PIXELS."""
    size = check_int(size, "size", MIN_SIZE, MAX_SIZE)
    if panels * size * size > MAX_RENDER_PIXELS:
        largest = int((MAX_RENDER_PIXELS / panels) ** 0.5)
        hint = f"use a size of at most {largest} px" if largest >= MIN_SIZE else "use fewer frames or clips"
        raise ValueError(f"{panels} panels of {size} x {size} px are more than {MAX_RENDER_PIXELS:,} pixels; {hint}")
    return size


def check_export_size(path: Path | str, clips: int, frames: int, size: int) -> None:
    """The writers' size check for `clips` clips of `frames` frames exported to `path`, to be made before
    the clips are generated (which can take much longer than refusing)."""
    suffix = Path(path).suffix.lower()
    if suffix in (".gif", ".mp4"):
        check_render_size(-(-size // 16) * 16 if suffix == ".mp4" else size, clips * frames)
    elif suffix == ".png":
        check_render_size(size, clips * min(frames, FILMSTRIP_FRAMES))


def iter_frames(clips: Clips, size: int = 256) -> Iterator[Image.Image]:
    """One RGB image per time step, drawn when asked for; several clips are drawn side by side. The progress
    bar shows where a looping animation starts and keeps consecutive frames distinct (GIF writers merge
    identical ones)."""
    joints = as_joints(clips)
    count = joints.shape[1]
    size = check_render_size(size, count * joints.shape[0])
    return (render_frame(joints[:, t], size, progress=(t + 1) / count) for t in range(count))


def render_frames(clips: Clips, size: int = 256) -> list[Image.Image]:
    """All frames of `iter_frames` as a list."""
    return list(iter_frames(clips, size))


def _palette_image() -> Image.Image:
    """A fixed 32-entry GIF palette (5-bit codes, small files): the background, the separator grey, and
    blends of the background with each colour at 9 levels (the anti-aliased edges). Quantising every frame
    to one known palette is a fast nearest-colour lookup with no per-frame palette search."""
    def rgb(colour: str) -> np.ndarray:
        return np.array(Image.new("RGB", (1, 1), colour).getpixel((0, 0)), dtype=float)

    background = rgb(BACKGROUND)
    entries = [background, rgb(SEPARATOR)]
    entries += [background + t * (rgb(c) - background) for c in SIDE_COLORS.values() for t in np.linspace(0, 1, 10)[1:]]
    flat = np.clip(np.round(entries), 0, 255).astype(np.uint8).ravel()
    palette = Image.new("P", (1, 1))
    palette.putpalette(flat.tolist())
    return palette


PALETTE = _palette_image()


def frame_durations_ms(count: int, fps: float) -> list[int]:
    """GIF frame durations, whole centiseconds whose running total stays on the exact clock."""
    ticks = np.round(np.arange(count + 1) * 100.0 / fps).astype(int)
    return (np.diff(ticks) * 10).tolist()


def write_gif(clips: Clips, target: Path | BinaryIO, fps: float | None = None, size: int = 256) -> None:
    frames = [f.quantize(palette=PALETTE, dither=Image.Dither.NONE) for f in iter_frames(clips, size)]
    durations = frame_durations_ms(len(frames), clip_fps(clips, fps))
    # optimize=False: the palette is already minimal, and Pillow's per-frame palette pass costs ~2 ms a frame.
    frames[0].save(target, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0,
                   optimize=False)


def gif_bytes(joints: Clips, fps: float | None = None, size: int = 256) -> bytes:
    """An animated GIF in memory (for the web app)."""
    buffer = io.BytesIO()
    write_gif(joints, buffer, fps, size)
    return buffer.getvalue()


def _output_path(path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def save_gif(clips: Clips, path: Path | str, fps: float | None = None, size: int = 256) -> Path:
    """Animated GIF, looping; `fps` defaults to the Sample's (50/3 for arrays)."""
    path = _output_path(path)
    write_gif(clips, path, fps, size)
    return path


def save_mp4(clips: Clips, path: Path | str, fps: float | None = None, size: int = 256) -> Path:
    """H.264 MP4 (yuv420p, plays everywhere); the panel size is rounded up to a multiple of 16. Frames are
    streamed to ffmpeg as they are drawn. OSError with ffmpeg's last message line if it fails."""
    path = _output_path(path)
    frames = iter_frames(clips, -(-check_int(size, "size", MIN_SIZE, MAX_SIZE) // 16) * 16)
    first = next(frames)
    rate = Fraction(clip_fps(clips, fps)).limit_denominator(1000)
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-f", "rawvideo", "-vcodec", "rawvideo",
               "-s", f"{first.width}x{first.height}", "-pix_fmt", "rgb24", "-r", f"{rate.numerator}/{rate.denominator}",
               "-i", "-", "-an", "-vcodec", "libx264", "-pix_fmt", "yuv420p", "-crf", "25", "-v", "error", str(path)]
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log)
        try:
            for frame in itertools.chain([first], frames):
                process.stdin.write(frame.tobytes())
        except BrokenPipeError:
            pass  # ffmpeg has stopped; its exit status and log say why
        except BaseException:
            process.kill()  # interrupted: do not leave ffmpeg waiting for input
            raise
        finally:
            with contextlib.suppress(BrokenPipeError):
                process.stdin.close()
            process.wait()
        if process.returncode != 0:
            log.seek(0)
            lines = [line.strip() for line in log.read().decode(errors="replace").splitlines() if line.strip()]
            # One line, naming the file but neither the server's directories nor the ffmpeg command.
            reason = (lines[-1] if lines else f"exit status {process.returncode}").replace(str(path), path.name)
            if path.is_file():
                path.unlink()  # a half-written video would look like a result
            raise OSError(f"{path.name}: ffmpeg could not write the MP4 ({reason})")
    return path


def save_filmstrip_png(clips: Clips, path: Path | str, frames: int = FILMSTRIP_FRAMES, size: int = 256) -> Path:
    """`frames` evenly spaced time steps left to right; several clips give one row each."""
    joints = as_joints(clips)
    if not 1 <= frames <= joints.shape[1]:
        raise ValueError(f"a filmstrip of this clip can show 1 to {joints.shape[1]} frames; got {frames}")
    size = check_render_size(size, frames * len(joints))
    steps = np.linspace(0, joints.shape[1] - 1, frames).round().astype(int)
    sheet = Image.new("RGB", (frames * size, len(joints) * size), BACKGROUND)
    for row, clip in enumerate(joints):
        sheet.paste(render_frame(clip[steps], size), (0, row * size))
        if row:
            ImageDraw.Draw(sheet).line([(0, row * size), (frames * size, row * size)], fill=SEPARATOR)
    path = _output_path(path)
    sheet.save(path, format="PNG")
    return path


# ----------------------------------------------------------------------------- data files

def skeleton_record(dims: int = 2) -> dict[str, Any]:
    return {
        "format": SAMPLE_FORMAT,
        "units": UNITS if dims == 2 else UNITS_3D,
        "joint_names": list(JOINT_NAMES),
        "bones": np.array([(parent, child) for parent, child, _ in BONES], dtype=np.int64),
        "bone_sides": [side for _, _, side in BONES],
    }


def fixed_length_record(joints: np.ndarray, displacement_mm: np.ndarray | None = None) -> dict[str, Any]:
    """The data-file entries of 3D clips (..., T, 16, 3): `joints` on the fixed-length skeleton that the BVH
    export uses, its bone lengths, each clip's `root_position` and how far the fit moved the network's joints:
    `displacement_mm`, the generator's (..., 2) mean and max for clips it put on the skeleton, or else this
    fit's own."""
    fit = fit_fixed_lengths(joints)
    mean, largest = ((fit.displacement_mean_mm, fit.displacement_max_mm) if displacement_mm is None else
                     (float(np.mean(displacement_mm[..., 0])), float(np.max(displacement_mm[..., 1]))))
    return {"joints": fit.joints, "root_position": bvh.root_positions(fit.joints), "bone_lengths_mm": fit.bone_lengths,
            "fit_displacement_mean_mm": mean, "fit_displacement_max_mm": largest}


def joints_record(joints: np.ndarray, displacement_mm: np.ndarray | None = None) -> dict[str, Any]:
    """The positions entries of a data file: 2D joints as generated, 3D ones on a fixed-length skeleton."""
    return {"joints": joints} if joints.shape[-1] == 2 else fixed_length_record(joints, displacement_mm)


def sample_record(sample: Sample) -> dict[str, Any]:
    """Everything needed to use a clip elsewhere or to generate it again."""
    return {
        **skeleton_record(sample.joints.shape[-1]),
        **joints_record(sample.joints, sample.fit_displacement_mm),
        "latents": sample.latents,
        "class_weights": sample.class_weights,
        "probabilities": sample.probabilities,
        "actions": list(sample.actions),
        "action_label": sample.action_label,
        "fps": sample.fps,
        "frames": sample.frames,
        "seed": sample.seed,
        "seed_b": sample.seed_b,
        "alpha": sample.alpha,
    }


def strip_record(samples: Sequence[Sample]) -> dict[str, Any]:
    """Several clips (e.g. an interpolation strip): per-clip entries stacked or listed in order."""
    records = [sample_record(s) for s in samples]
    record = dict(records[0])
    for key, value in records[0].items():
        if isinstance(value, np.ndarray) and key != "bones":
            record[key] = np.stack([r[key] for r in records])
        elif key in ("action_label", "seed", "seed_b", "alpha", "fit_displacement_mean_mm",
                     "fit_displacement_max_mm"):
            record[key] = [r[key] for r in records]
    return record


def batch_record(batch: SampleBatch) -> dict[str, Any]:
    """A SampleBatch: `poses` (N, T, 16, 2|3), `labels` (N,) class indices into `actions`."""
    positions = joints_record(batch.joints, batch.fit_displacement_mm)
    return {
        **skeleton_record(batch.joints.shape[-1]),
        **{k: v for k, v in positions.items() if k != "joints"},
        "poses": positions["joints"],
        "labels": batch.labels,
        "actions": list(batch.actions),
        "latents": batch.latents,
        "class_weights": batch.class_weights,
        "probabilities": batch.probabilities,
        "seeds": batch.seeds,
        "action_labels": batch.action_labels,
        "fps": batch.fps,
    }


DataItem = Union[Sample, Sequence[Sample], SampleBatch]


def record_of(item: DataItem) -> dict[str, Any]:
    if isinstance(item, Sample):
        return sample_record(item)
    if isinstance(item, SampleBatch):
        return batch_record(item)
    return strip_record(item)


def save_npz(item: DataItem, path: Path | str) -> Path:
    """NPZ readable without pickle: strings become unicode arrays, missing values (None) are left out."""
    record = {k: np.asarray(v) for k, v in record_of(item).items()
              if v is not None and not (isinstance(v, list) and None in v)}
    path = _output_path(path)
    with open(path, "wb") as f:
        np.savez_compressed(f, **record)
    return path


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def save_json(item: DataItem, path: Path | str) -> Path:
    """JSON with nested lists; float32 values are written exactly, so loading gives the same arrays."""
    path = _output_path(path)
    path.write_text(json.dumps({k: _plain(v) for k, v in record_of(item).items()}))
    return path


BVH_ONE_CLIP = "a BVH file holds one clip; export strips of several clips as .gif .mp4 .png .npz or .json"
BVH_NEEDS_3D = ("BVH export needs a 3D clip (a 3D model: --model 3d, Generator.load(model='3d')); this clip is "
                "2D")


def check_bvh_export(path: Path | str, clips: int, dims: int | None = None) -> None:
    """save_bvh's refusals for `clips` clips of `dims` coordinates (None: not known yet) exported to `path`,
    to be made before the clips are generated."""
    if Path(path).suffix.lower() != ".bvh":
        return
    if clips != 1:
        raise ValueError(BVH_ONE_CLIP)
    if dims is not None and dims != 3:
        raise ValueError(BVH_NEEDS_3D)


def save_bvh(sample: Sample, path: Path | str) -> Path:
    """A BVH file of one 3D clip, on the same fixed-length skeleton as the clip's .npz and .json."""
    if not isinstance(sample, Sample):
        raise ValueError(BVH_ONE_CLIP)
    check_bvh_export(".bvh", 1, sample.joints.shape[-1])
    path = _output_path(path)
    bvh.save_bvh(sample.joints, path, sample.fps)
    return path


def export(item: Sample | Sequence[Sample], path: Path | str, size: int = 256) -> Path:
    """Write a clip (or clips side by side) in the format named by the suffix of `path`."""
    suffix = Path(path).suffix.lower()
    if suffix == ".bvh":
        return save_bvh(item, path)
    if suffix == ".gif":
        return save_gif(item, path, size=size)
    if suffix == ".mp4":
        return save_mp4(item, path, size=size)
    if suffix == ".png":
        return save_filmstrip_png(item, path, size=size)
    if suffix == ".npz":
        return save_npz(item, path)
    if suffix == ".json":
        return save_json(item, path)
    raise ValueError(f"unknown export format {suffix or '(no suffix)'!r} of {path}; "
                     f"valid: {', '.join(EXPORT_SUFFIXES)}")
