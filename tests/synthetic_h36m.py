"""Writes small Human3.6M-format archives (cameras.h5 + S<n>/MyPoses/3D_positions/*.h5) and randomly
initialised model bundles for tests."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import torch

from actiongen.checkpoint import Bundle, build_models, save_bundle
from actiongen.data import NormStats
from actiongen.models import ModelConfig
from actiongen.skeleton import ACTIONS

CAMERA_NAMES = ("54138969", "55011271", "58860488", "60457274")
# World -> camera rotation of the synthetic camera 55011271: camera x = world x, camera y = -world z
# (image y down, world z up), camera z = world y. The archive stores the transpose.
WORLD_TO_CAMERA = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
CAMERA_POSITION = np.array([0.0, -5000.0, 1000.0])
FOCAL = np.array([1145.0, 1144.0])
CENTER = np.array([512.0, 515.0])
RADIAL = np.array([-0.2, 0.24, -0.0025])
TANGENTIAL = np.array([-0.0015, -0.0009])

# A standing person in world mm (z up), at the 16 skeleton joints of the 32 mocap joints.
REST_POSE = {
    0: (0, 0, 900), 1: (-130, 0, 900), 2: (-130, 0, 480), 3: (-130, 0, 60),
    6: (130, 0, 900), 7: (130, 0, 480), 8: (130, 0, 60), 12: (0, 0, 1150),
    13: (0, 0, 1400), 15: (0, 0, 1600), 17: (170, 0, 1380), 18: (200, 0, 1120),
    19: (220, 0, 880), 25: (-170, 0, 1380), 26: (-200, 0, 1120), 27: (-220, 0, 880),
}


def write_cameras(root: Path, subjects: tuple[int, ...]) -> None:
    with h5py.File(root / "cameras.h5", "w") as f:
        for s in subjects:
            for c, name in enumerate(CAMERA_NAMES, start=1):
                g = f.create_group(f"subject{s}/camera{c}")
                g["R"] = WORLD_TO_CAMERA.T if name == "55011271" else np.eye(3)
                g["T"] = CAMERA_POSITION.reshape(3, 1)
                g["f"] = FOCAL.reshape(2, 1)
                g["c"] = CENTER.reshape(2, 1)
                g["k"] = RADIAL.reshape(3, 1)
                g["p"] = TANGENTIAL.reshape(2, 1)
                g["Name"] = np.array([ord(ch) for ch in name], dtype=np.float64).reshape(8, 1)


def motion(action_index: int, frames: int, rng: np.random.Generator) -> np.ndarray:
    """(frames, 32, 3) world positions: the rest pose, arms and legs swinging at an action-specific rate,
    walking forward along x for the last action, a random phase and a little noise."""
    pose = np.zeros((32, 3))
    for j, xyz in REST_POSE.items():
        pose[j] = xyz
    t = np.arange(frames)[:, None] / 50.0
    freq = 0.3 + 0.25 * action_index
    phase = rng.uniform(0, 2 * np.pi)
    seq = np.repeat(pose[None], frames, axis=0)
    swing = 150.0 * np.sin(2 * np.pi * freq * t + phase)
    for j in (18, 19):
        seq[:, j, 1] += swing[:, 0] * (1 + (j == 19))
    for j in (26, 27):
        seq[:, j, 1] -= swing[:, 0] * (1 + (j == 27))
    for j in (2, 3):
        seq[:, j, 1] += 0.5 * swing[:, 0]
    for j in (7, 8):
        seq[:, j, 1] -= 0.5 * swing[:, 0]
    if action_index == len(ACTIONS) - 1:
        seq[:, :, 0] += 800.0 * t
    seq[:, :, 2] -= 150.0 * (action_index % 3 == 2)  # some actions crouch a little
    return seq + rng.normal(0, 2.0, seq.shape)


def write_sequence(path: Path, world: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f["3D_positions"] = world.reshape(len(world), 96).T


def write_archive(root: Path, subjects: tuple[int, ...] = (1, 5, 11), actions: tuple[str, ...] = ACTIONS,
                  frames: int = 240, seed: int = 0, skip: tuple[str, ...] = ()) -> Path:
    """An archive with two takes ("<Action>" and "<Action> 1") of every action; `skip` omits files by
    "S<n>/<take>" name. Returns `root`."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    write_cameras(root, subjects)
    for s in subjects:
        for a, action in enumerate(actions):
            for take in (action, f"{action} 1"):
                if f"S{s}/{take}" in skip:
                    continue
                write_sequence(root / f"S{s}" / "MyPoses" / "3D_positions" / f"{take}.h5",
                               motion(a, frames, rng))
    return root


def random_bundle(stats: NormStats, cfg: ModelConfig | None = None, seed: int = 0) -> Bundle:
    """A randomly initialised model in eval mode: untrained, but the same shapes and cost as a trained one;
    2D or 3D as the statistics are."""
    cfg = cfg or ModelConfig(pose_dim=stats.pose_dim)
    torch.manual_seed(seed)
    transition, classifier = build_models(cfg)
    return Bundle(cfg, stats, ACTIONS, transition.eval(), classifier.eval(), {})


def write_random_bundle(path: Path, stats: NormStats, cfg: ModelConfig | None = None) -> Path:
    return save_bundle(path, random_bundle(stats, cfg))[0]
