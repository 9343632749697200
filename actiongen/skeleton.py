"""The 16-joint Human3.6M skeleton (2D camera view or 3D world frame) and the action classes, shared by data, models and exports."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

JOINT_NAMES: tuple[str, ...] = (
    "Hip", "RHip", "RKnee", "RFoot", "LHip", "LKnee", "LFoot", "Spine", "Thorax", "Head",
    "LShoulder", "LElbow", "LWrist", "RShoulder", "RElbow", "RWrist",
)
# Positions of JOINT_NAMES among the 32 joints of the Human3.6M mocap files.
H36M_INDICES: tuple[int, ...] = (0, 1, 2, 3, 6, 7, 8, 12, 13, 15, 17, 18, 19, 25, 26, 27)
NUM_JOINTS = len(JOINT_NAMES)
HIP = 0
POSE_DIM = 2 * (NUM_JOINTS - 1)  # the model sees the 15 non-hip joints, x and y each
SPACE_DIMS: tuple[int, ...] = (2, 3)  # coordinates per joint: the 2D camera view or the 3D world frame


def pose_dim_of(dims: int) -> int:
    """Length of the model's pose vector for joints of `dims` coordinates (30 in 2D, 45 in 3D)."""
    if dims not in SPACE_DIMS:
        raise ValueError(f"joints have {dims} coordinates; valid: {', '.join(map(str, SPACE_DIMS))}")
    return dims * (NUM_JOINTS - 1)


def dims_of_pose_dim(pose_dim: int) -> int:
    """Coordinates per joint of a model pose vector of length `pose_dim` (30 -> 2, 45 -> 3)."""
    valid = {pose_dim_of(d): d for d in SPACE_DIMS}
    if pose_dim not in valid:
        raise ValueError(f"pose vectors have {pose_dim} entries; valid: {', '.join(map(str, valid))}")
    return valid[pose_dim]

# (parent, child, side) in JOINT_NAMES indices; side is "left", "right" or "center".
BONES: tuple[tuple[int, int, str], ...] = (
    (0, 1, "right"), (1, 2, "right"), (2, 3, "right"),
    (0, 4, "left"), (4, 5, "left"), (5, 6, "left"),
    (0, 7, "center"), (7, 8, "center"), (8, 9, "center"),
    (8, 10, "left"), (10, 11, "left"), (11, 12, "left"),
    (8, 13, "right"), (13, 14, "right"), (14, 15, "right"),
)

WORLD_UP = np.array([0.0, 0.0, 1.0])  # the 3D world frame is z up

ACTIONS: tuple[str, ...] = (
    "Directions", "Discussion", "Eating", "Greeting", "Phoning",
    "Posing", "Sitting", "SittingDown", "Smoking", "Walking",
)
# The other Human3.6M actions, available to the data loader on request.
EXTRA_ACTIONS: tuple[str, ...] = ("Photo", "Purchases", "Waiting", "WalkDog", "WalkTogether")


def action_index(name: str, actions: tuple[str, ...] = ACTIONS) -> int:
    """Index of an action name (case-insensitive); ValueError naming the valid choices otherwise."""
    lowered = {a.lower(): i for i, a in enumerate(actions)}
    key = str(name).strip().lower()
    if key not in lowered:
        raise ValueError(f"unknown action {name!r}; valid actions: {', '.join(actions)}")
    return lowered[key]


# ----------------------------------------------------------------------------- fixed-length skeleton
# Real bones are rigid (their length varies 0.2 % within a real 3D clip); the 3D network's vary about 6 %, and a
# BVH file holds one length per bone. So a 3D model's clips (Generator.sample) and every 3D export are put on a
# fixed-length skeleton: bone directions kept, each bone at its mean length over the clip.

@dataclass
class FittedClip:
    """A clip on a fixed-length skeleton and how far the fit moved its joints from the input."""

    joints: np.ndarray  # (..., T, 16, 3) float32 mm, hip-centred, each bone at its clip-mean length
    bone_lengths: np.ndarray  # (..., 15) mm, in BONES order
    displacement: np.ndarray  # (..., T, 16) float32 mm, |fitted - input| of every joint in every frame

    @property
    def displacement_mean_mm(self) -> float:
        return float(self.displacement.mean())

    @property
    def displacement_max_mm(self) -> float:
        return float(self.displacement.max())


def bone_lengths(joints: np.ndarray) -> np.ndarray:
    """(..., 16, 3) joints -> (..., 15) lengths of skeleton.BONES."""
    parents, children = [p for p, _, _ in BONES], [c for _, c, _ in BONES]
    return np.linalg.norm(joints[..., children, :] - joints[..., parents, :], axis=-1)


def fit_fixed_lengths(joints: np.ndarray) -> FittedClip:
    """Keep each bone's direction, set its length to its mean over the clip (axis -3), from the hip
    outwards (BONES lists parents before children). (..., T, 16, 3) in, same shape out."""
    raw = np.asarray(joints, dtype=np.float64)
    if raw.ndim < 3 or raw.shape[-2:] != (NUM_JOINTS, 3):
        raise ValueError(f"fit_fixed_lengths needs 3D clips of shape (..., T, {NUM_JOINTS}, 3); got {raw.shape}")
    lengths = bone_lengths(raw).mean(axis=-2)  # (..., 15)
    fitted = np.zeros_like(raw)
    fitted[..., HIP, :] = raw[..., HIP, :]
    for b, (parent, child, _) in enumerate(BONES):
        bone = raw[..., child, :] - raw[..., parent, :]
        norm = np.linalg.norm(bone, axis=-1, keepdims=True)
        direction = np.where(norm > 0, bone / np.maximum(norm, 1e-12), WORLD_UP)  # a collapsed bone points up
        fitted[..., child, :] = fitted[..., parent, :] + lengths[..., None, b, None] * direction
    displacement = np.linalg.norm(fitted - raw, axis=-1)
    return FittedClip(fitted.astype(np.float32), lengths.astype(np.float32), displacement.astype(np.float32))
