"""BVH export of 3D clips on the fixed-length skeleton that every 3D export shares.

A BVH file can only hold one length per bone. A 3D model's clips come on a fixed-length skeleton already
(`skeleton.fit_fixed_lengths`: bone directions kept, each bone at its mean length over the clip, from the
hip outwards); the export fits again, which leaves those clips as they are and also takes the network's raw
output (`Generator.sample(..., fixed_bones=False)`), so every 3D export (BVH, NPZ, JSON) holds one skeleton.

The BVH hierarchy is rooted at the hip and carries the H3.6M joint names, plus five joints of zero offset
that let each bone rotate on its own where a joint has several children: RPelvis and LPelvis (the two
halves of the pelvis, at the hip), and Neck, LCollar and RCollar (at the thorax). The 16 positions are
then reproduced exactly up to the file's 6 decimals. Rotations are solved from the positions: the Hip and
Thorax get a full frame (their main bone, Spine or Head, plus the twist that puts the left-right hip or
shoulder line across), every other joint the smallest swing from its parent's frame that aims its bone.

Axes and units follow the BVH convention that Blender, Maya and MotionBuilder import without options:
Y up, metres (world x -> BVH x, world z (up) -> BVH y, world y -> BVH -z), rest pose a T-pose facing +Z.
The clips carry no travel across the floor (the model is hip-centred), so the root translation is
vertical only: each frame's lowest joint touches the floor (`root_positions`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pybvh import Bvh, write_bvh_file
from pybvh.bvhnode import BvhEndSite, BvhJoint, BvhRoot
from pybvh.rotations import rotmat_to_euler

from .skeleton import BONES, HIP, JOINT_NAMES, NUM_JOINTS, WORLD_UP, FittedClip, fit_fixed_lengths

MM_PER_BVH_UNIT = 1000.0  # BVH files are written in metres
EULER_ORDER = "ZXY"  # channels Zrotation Xrotation Yrotation: the most common BVH order (CMU, Blender)
# world (x, y, z up) -> BVH (x, y up, z): a proper rotation, so handedness and left/right are kept
WORLD_TO_BVH = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])

_X, _Y = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
_j = JOINT_NAMES.index
# Rest direction (BVH axes, T-pose facing +Z, the person's left at +X) of the bone ending at each joint.
REST_DIRECTION: dict[int, np.ndarray] = {
    _j("RHip"): -_X, _j("RKnee"): -_Y, _j("RFoot"): -_Y,
    _j("LHip"): _X, _j("LKnee"): -_Y, _j("LFoot"): -_Y,
    _j("Spine"): _Y, _j("Thorax"): _Y, _j("Head"): _Y,
    _j("LShoulder"): _X, _j("LElbow"): _X, _j("LWrist"): _X,
    _j("RShoulder"): -_X, _j("RElbow"): -_X, _j("RWrist"): -_X,
}


@dataclass(frozen=True)
class BvhBone:
    """One rotating BVH joint: it sits at joint `at` and its rotation aims the bone from `at` to `tip`
    (an End Site when `tip_is_end_site`). `across` = (right, left) joints whose line sets the twist of a
    joint that carries several bones (Hip, Thorax); other joints take the smallest swing."""

    name: str
    parent: int | None  # index into BVH_BONES; they are listed parents first, in file order
    at: int
    tip: int
    tip_is_end_site: bool = False
    across: tuple[int, int] | None = None


BVH_BONES: tuple[BvhBone, ...] = (
    BvhBone("Hip", None, HIP, _j("Spine"), across=(_j("RHip"), _j("LHip"))),
    BvhBone("RPelvis", 0, HIP, _j("RHip")),
    BvhBone("RHip", 1, _j("RHip"), _j("RKnee")),
    BvhBone("RKnee", 2, _j("RKnee"), _j("RFoot"), tip_is_end_site=True),
    BvhBone("LPelvis", 0, HIP, _j("LHip")),
    BvhBone("LHip", 4, _j("LHip"), _j("LKnee")),
    BvhBone("LKnee", 5, _j("LKnee"), _j("LFoot"), tip_is_end_site=True),
    BvhBone("Spine", 0, _j("Spine"), _j("Thorax")),
    BvhBone("Thorax", 7, _j("Thorax"), _j("Head"), across=(_j("RShoulder"), _j("LShoulder"))),
    BvhBone("Neck", 8, _j("Thorax"), _j("Head"), tip_is_end_site=True),
    BvhBone("LCollar", 8, _j("Thorax"), _j("LShoulder")),
    BvhBone("LShoulder", 10, _j("LShoulder"), _j("LElbow")),
    BvhBone("LElbow", 11, _j("LElbow"), _j("LWrist"), tip_is_end_site=True),
    BvhBone("RCollar", 8, _j("Thorax"), _j("RShoulder")),
    BvhBone("RShoulder", 13, _j("RShoulder"), _j("RElbow")),
    BvhBone("RElbow", 14, _j("RElbow"), _j("RWrist"), tip_is_end_site=True),
)


def root_positions(joints: np.ndarray) -> np.ndarray:
    """(..., T, 16, 3) hip-centred joints (mm, z up) -> (..., T, 3) hip position above the floor: each
    frame's lowest joint on the floor (z = 0), no horizontal travel (the model does not generate any)."""
    root = np.zeros((*joints.shape[:-2], 3), dtype=np.float32)
    root[..., 2] = -joints[..., 2].min(axis=-1)
    return root


# ----------------------------------------------------------------------------- rotations

def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def swing(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """(..., 3, 3) smallest rotations taking unit vectors u to unit vectors v (half a turn about an axis
    perpendicular to u where they are opposite)."""
    axis = np.cross(u, v)
    cos = np.sum(u * v, axis=-1)[..., None, None]
    k = np.zeros(axis.shape[:-1] + (3, 3))
    k[..., 0, 1], k[..., 0, 2], k[..., 1, 2] = -axis[..., 2], axis[..., 1], -axis[..., 0]
    k -= np.swapaxes(k, -1, -2)
    opposite = cos[..., 0, 0] < -1 + 1e-9
    rotation = np.eye(3) + k + k @ k / np.where(opposite[..., None, None], 1.0, 1.0 + cos)
    if opposite.any():
        least_aligned = np.eye(3)[np.argmin(np.abs(u[opposite]), axis=-1)]
        w = _unit(np.cross(u[opposite], least_aligned))
        rotation[opposite] = 2 * w[..., :, None] * w[..., None, :] - np.eye(3)
    return rotation


def frame(primary: np.ndarray, across: np.ndarray) -> np.ndarray:
    """(..., 3, 3) orthonormal frames, columns (across', primary, across' x primary): `primary` exactly and
    `across` made perpendicular to it (any perpendicular where the two are parallel)."""
    y = _unit(primary)
    x = across - np.sum(across * y, axis=-1, keepdims=True) * y
    degenerate = np.linalg.norm(x, axis=-1) < 1e-9
    if degenerate.any():
        x[degenerate] = np.cross(y[degenerate], np.eye(3)[np.argmin(np.abs(y[degenerate]), axis=-1)])
    x = _unit(x)
    return np.stack([x, y, np.cross(x, y)], axis=-1)


def rest_positions(lengths: np.ndarray) -> np.ndarray:
    """(16, 3) T-pose joint positions in BVH axes for 15 bone lengths (skeleton.BONES order), hip at 0."""
    rest = np.zeros((NUM_JOINTS, 3))
    for (parent, child, _), length in zip(BONES, lengths):
        rest[child] = rest[parent] + REST_DIRECTION[child] * length
    return rest


def local_rotations(positions: np.ndarray) -> np.ndarray:
    """(T, 16, 3) fixed-length positions in BVH axes -> (T, len(BVH_BONES), 3, 3) rotations of each BVH
    joint relative to its parent, so that forward kinematics from the T-pose gives the positions back."""
    world = np.empty((len(positions), len(BVH_BONES), 3, 3))
    identity = np.broadcast_to(np.eye(3), (len(positions), 3, 3))

    def parent_world(bone: BvhBone) -> np.ndarray:
        return identity if bone.parent is None else world[:, bone.parent]

    for i, bone in enumerate(BVH_BONES):
        direction = _unit(positions[:, bone.tip] - positions[:, bone.at])
        rest = REST_DIRECTION[bone.tip]
        if bone.across is not None:
            right, left = bone.across
            current = frame(direction, positions[:, left] - positions[:, right])
            world[:, i] = current @ frame(rest, _X).T
        else:
            world[:, i] = swing(parent_world(bone) @ rest, direction) @ parent_world(bone)
    parents = np.stack([parent_world(bone) for bone in BVH_BONES], axis=1)
    return np.swapaxes(parents, -1, -2) @ world


# ----------------------------------------------------------------------------- the file

def build_bvh(joints: np.ndarray, fps: float) -> tuple[Bvh, FittedClip]:
    """A pybvh `Bvh` of one clip (T, 16, 3) of hip-centred world joints in mm (z up), and the fit."""
    joints = np.asarray(joints)
    if joints.ndim != 3 or joints.shape[1:] != (NUM_JOINTS, 3):
        raise ValueError(f"a BVH needs one 3D clip of shape (T, {NUM_JOINTS}, 3); got {joints.shape}")
    if not np.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be a positive number; got {fps!r}")
    fit = fit_fixed_lengths(joints)
    to_bvh = WORLD_TO_BVH / MM_PER_BVH_UNIT
    positions = fit.joints.astype(np.float64) @ to_bvh.T
    rest = rest_positions(fit.bone_lengths.astype(np.float64) / MM_PER_BVH_UNIT)

    nodes: list = []  # in file order: each joint, then its End Site; pybvh's angle columns follow it
    joints_of_bones: list[BvhJoint] = []
    for bone in BVH_BONES:
        if bone.parent is None:
            node = BvhRoot(bone.name, [0.0, 0.0, 0.0], rot_channels=list(EULER_ORDER))
        else:
            parent = joints_of_bones[bone.parent]
            node = BvhJoint(bone.name, rest[bone.at] - rest[BVH_BONES[bone.parent].at],
                            rot_channels=list(EULER_ORDER), parent=parent)
            parent.children = [*parent.children, node]
        joints_of_bones.append(node)
        nodes.append(node)
        if bone.tip_is_end_site:
            end = BvhEndSite(f"{JOINT_NAMES[bone.tip]}_end", rest[bone.tip] - rest[bone.at], parent=node)
            node.children = [*node.children, end]
            nodes.append(end)
    # Unwrapped over time: a turn past 180 degrees continues instead of jumping by 360, so tools that
    # interpolate between frames (resampling, blending) do not spin the joint the long way round.
    angles = np.unwrap(rotmat_to_euler(local_rotations(positions), EULER_ORDER), axis=0)
    root = root_positions(fit.joints).astype(np.float64) @ to_bvh.T
    return Bvh(nodes, root, angles, frame_time=1.0 / fps, world_up="+y"), fit


def save_bvh(joints: np.ndarray, path: Path | str, fps: float) -> FittedClip:
    """Write one 3D clip (T, 16, 3), hip-centred world mm, as a BVH file; returns the skeleton fit."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    bvh, fit = build_bvh(joints, fps)
    write_bvh_file(bvh, path)
    return fit
