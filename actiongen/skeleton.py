"""The 16-joint Human3.6M skeleton (2D camera view or 3D world frame) and the action classes, shared by data, models and exports."""
from __future__ import annotations

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
