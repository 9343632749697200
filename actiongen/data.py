"""Human3.6M 3D mocap -> normalised 2D (or 3D) pose clips, the data the two-stage GAN learns from.

Reads the layout of the `h36m.zip` archive of the 3d-pose-baseline project:
`<root>/cameras.h5` and `<root>/S<n>/MyPoses/3D_positions/<Action>[ <k>].h5`.
Each sequence is projected with one camera (radial and tangential distortion), hip-centred,
and each frame is scaled by hip depth / mean training hip depth so that apparent body size does not
depend on the distance to the camera. The model works on the 15 non-hip joints as a 30-d vector
standardised per dimension with training statistics.

With `DataConfig(dims=3)` the same clips come as 3D joints instead: hip-centred in the world frame (z up,
so the floor stays level), in millimetres, the 15 non-hip joints as a 45-d vector standardised per
dimension with training statistics. Per-dimension standardisation is what the 2D model uses too: every
coordinate gets unit variance, so the vertical axis (the largest spread, legs and spine) does not drown out
the small lateral and forward motions that tell actions apart, and the same networks and learning rates
serve both. Bone lengths are not enforced by this representation (nor by the network); a 3D model's clips
are put on a fixed-length skeleton instead (`actiongen.skeleton.fit_fixed_lengths`, in Generator.sample). In
the real data the lengths are constant except Thorax->Head, which spans the bending neck.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import warnings
import zipfile
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np
import torch
from tqdm.auto import tqdm

from .skeleton import (ACTIONS, EXTRA_ACTIONS, H36M_INDICES, HIP, NUM_JOINTS, SPACE_DIMS, dims_of_pose_dim,
                       pose_dim_of)

CACHE_VERSION = 2  # 2: the second cached array holds the hip's camera coordinates (N, 3), not its depth
SEQUENCE_DATASET = "3D_positions"
TAKES_PER_ACTION = 2  # the archive holds two takes of every action for every subject
SEQUENCE_NAME = re.compile(r"^(?P<action>[A-Za-z]+)(?: (?P<take>\d+))?$")
# The longest take of the archive has about 6,300 frames (50 Hz); two hours is far beyond any real take and
# keeps one file's float64 array under 300 MB.
MAX_SEQUENCE_FRAMES = 360_000


class H36MDataError(ValueError):
    """The Human3.6M directory or one of its files is not what the loader expects."""


def default_data_root() -> Path:
    """`$ACTIONGEN_DATA`, else `../shared/data/h36m` beside the project checkout."""
    env = os.environ.get("ACTIONGEN_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared" / "data" / "h36m"


def default_cache_dir() -> Path:
    """`$ACTIONGEN_CACHE`, else `~/.cache/actiongen`."""
    env = os.environ.get("ACTIONGEN_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "actiongen"


# ----------------------------------------------------------------------------- cameras

@dataclass(frozen=True)
class Camera:
    """Intrinsics and extrinsics of one camera; `R` maps world to camera axes: X_cam = R @ (P - T)."""

    R: np.ndarray
    T: np.ndarray
    f: np.ndarray
    c: np.ndarray
    k: np.ndarray
    p: np.ndarray
    name: str


def load_cameras(root: Path | str, camera_name: str = "55011271") -> dict[int, Camera]:
    """The named camera of every subject in `<root>/cameras.h5`, keyed by subject number."""
    path = Path(root) / "cameras.h5"
    if not path.is_file():
        raise H36MDataError(f"{path}: camera file not found; expected cameras.h5 from the h36m archive")
    cameras: dict[int, Camera] = {}
    try:
        with h5py.File(path, "r") as f:
            for subject_key in f:
                match = re.fullmatch(r"subject(\d+)", subject_key)
                if not match:
                    continue
                for cam_key in f[subject_key]:
                    group = f[subject_key][cam_key]
                    codes = _camera_values(group, "Name", 8)
                    if not ((codes >= 0) & (codes < 128)).all():
                        raise ValueError(f"{group.name}/Name is not 8 ASCII character codes")
                    name = "".join(chr(int(v)) for v in codes)
                    if name != camera_name:
                        continue
                    cameras[int(match.group(1))] = Camera(
                        # The archive stores the transpose of the world-to-camera rotation.
                        R=_camera_values(group, "R", 9).reshape(3, 3).T,
                        T=_camera_values(group, "T", 3),
                        f=_camera_values(group, "f", 2),
                        c=_camera_values(group, "c", 2),
                        k=_camera_values(group, "k", 3),
                        p=_camera_values(group, "p", 2),
                        name=name,
                    )
    except (OSError, KeyError, ValueError) as err:
        raise H36MDataError(f"{path}: cannot read camera parameters ({err}); expected "
                            "subject<S>/camera<C>/{{R,T,f,c,k,p,Name}}") from err
    if not cameras:
        raise H36MDataError(f"{path}: no camera named {camera_name!r} in any subject")
    return cameras


def _camera_values(group: h5py.Group, key: str, size: int) -> np.ndarray:
    """The `size` finite numbers of one camera parameter as a flat float64 array, checked before reading
    (a file declaring a huge array is refused, not allocated)."""
    dataset = group[key]
    if not isinstance(dataset, h5py.Dataset) or dataset.size != size or dataset.dtype.kind not in "iuf":
        raise ValueError(f"{group.name}/{key} is not {size} numbers")
    values = np.asarray(dataset, dtype=np.float64).ravel()
    if not np.isfinite(values).all():
        raise ValueError(f"{group.name}/{key} holds NaN or infinite values")
    return values


def project_points(points: np.ndarray, camera: Camera) -> tuple[np.ndarray, np.ndarray]:
    """Project world points (..., 3) in mm to pixels (..., 2) with distortion; also return depth (...)."""
    cam = (points - camera.T) @ camera.R.T
    depth = cam[..., 2]
    xy = cam[..., :2] / depth[..., None]
    r2 = np.sum(xy**2, axis=-1)
    k1, k2, k3 = camera.k
    p1, p2 = camera.p
    radial = 1.0 + k1 * r2 + k2 * r2**2 + k3 * r2**3
    tangential = p1 * xy[..., 1] + p2 * xy[..., 0]
    distorted = xy * (radial + tangential)[..., None] + np.stack([p2 * r2, p1 * r2], axis=-1)
    return distorted * camera.f + camera.c, depth


# ----------------------------------------------------------------------------- sequences

@dataclass(frozen=True)
class SequenceFile:
    subject: int
    action: str
    take: str  # the file name without extension, e.g. "Walking 1"
    path: Path


def find_sequences(root: Path | str, subjects: tuple[int, ...], actions: tuple[str, ...]) -> list[SequenceFile]:
    """Sequence files of the given subjects and actions; warns about takes missing from the archive.

    Action names match exactly ("Sitting" never picks up "SittingDown 1.h5").
    """
    root = Path(root)
    if not root.is_dir():
        raise H36MDataError(f"{root}: Human3.6M data directory not found; expected the unpacked h36m "
                            "archive with cameras.h5 and S<n>/MyPoses/3D_positions/")
    found: list[SequenceFile] = []
    missing: list[str] = []
    for subject in subjects:
        folder = root / f"S{subject}" / "MyPoses" / "3D_positions"
        per_action: dict[str, list[SequenceFile]] = {a: [] for a in actions}
        if folder.is_dir():
            for path in sorted(folder.glob("*.h5")):
                match = SEQUENCE_NAME.match(path.stem)
                if match and match.group("action") in per_action:
                    per_action[match.group("action")].append(
                        SequenceFile(subject, match.group("action"), path.stem, path))
        for action in actions:
            takes = per_action[action]
            if len(takes) < TAKES_PER_ACTION:
                missing.append(f"S{subject} {action} ({len(takes)} of {TAKES_PER_ACTION} takes)")
            found.extend(takes)
    if not found:
        raise H36MDataError(f"{root}: no sequence files for subjects {list(subjects)} and actions "
                            f"{list(actions)}; expected S<n>/MyPoses/3D_positions/<Action>[ <k>].h5")
    if missing:
        warnings.warn("missing Human3.6M sequences, loading goes on without them: " + "; ".join(missing),
                      stacklevel=2)
    return found


def read_sequence(path: Path) -> np.ndarray:
    """World joint positions (N, 32, 3) in mm from one sequence file. The declared shape and type are
    checked before anything is read, so a file claiming a huge array is refused instead of allocated."""
    try:
        with h5py.File(path, "r") as f:
            dataset = f.get(SEQUENCE_DATASET)
            if not isinstance(dataset, h5py.Dataset):
                raise H36MDataError(f"{path}: no dataset {SEQUENCE_DATASET!r}; found {list(f.keys())[:10]}")
            shape = dataset.shape
            if shape is None or len(shape) != 2 or shape[0] != 96 or not 1 <= shape[1] <= MAX_SEQUENCE_FRAMES:
                raise H36MDataError(f"{path}: dataset {SEQUENCE_DATASET!r} has shape {shape}; expected (96, N) "
                                    f"with 1 <= N <= {MAX_SEQUENCE_FRAMES}: 32 joints x (x, y, z) per frame")
            if dataset.dtype.kind not in "iuf":
                raise H36MDataError(f"{path}: dataset {SEQUENCE_DATASET!r} holds {dataset.dtype}; expected numbers")
            raw = np.asarray(dataset, dtype=np.float64)
    except OSError as err:
        raise H36MDataError(f"{path}: unreadable or corrupt HDF5 file ({err})") from err
    if not np.isfinite(raw).all():
        raise H36MDataError(f"{path}: dataset {SEQUENCE_DATASET!r} holds NaN or infinite positions")
    return raw.T.reshape(-1, 32, 3)


# ----------------------------------------------------------------------------- preprocessing

@dataclass
class NormStats:
    """Per-dimension mean and std of the 30-d (2D) or 45-d (3D) pose vectors, the mean training hip depth
    (mm) and, for 3D data, the mean training hip position in camera coordinates (mm), where
    `actiongen.views.camera_view` places a 3D pose to draw it as the 2D pipeline sees it."""

    mean: np.ndarray
    std: np.ndarray
    mean_hip_depth: float
    mean_hip_camera: np.ndarray | None = None

    @property
    def pose_dim(self) -> int:
        return int(self.mean.shape[0])

    @property
    def dims(self) -> int:
        """2 for camera-view poses, 3 for world-frame poses."""
        return dims_of_pose_dim(self.pose_dim)

    def to_dict(self) -> dict:
        d = {"mean": self.mean.tolist(), "std": self.std.tolist(), "mean_hip_depth": self.mean_hip_depth}
        if self.mean_hip_camera is not None:
            d["mean_hip_camera"] = self.mean_hip_camera.tolist()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "NormStats":
        """Statistics from JSON, refused unless mean and std are 30 (2D) or 45 (3D) finite numbers each, std
        positive, and the hip depth a finite positive number (NaN statistics would turn every generated joint
        to NaN)."""
        if not isinstance(d, dict) or not {"mean", "std", "mean_hip_depth"} <= set(d):
            raise ValueError("normalisation stats need the entries mean, std and mean_hip_depth")
        mean, std = (_number_array(d[key]) for key in ("mean", "std"))
        with np.errstate(over="ignore"):  # a float32 overflow becomes inf, refused below
            mean, std = (None if a is None else a.astype(np.float32) for a in (mean, std))
        sizes = tuple(pose_dim_of(dims) for dims in SPACE_DIMS)
        valid = all(a is not None and a.shape in {(n,) for n in sizes} and np.isfinite(a).all() for a in (mean, std))
        if not valid or mean.shape != std.shape or not (std > 0).all():
            raise ValueError(f"normalisation stats need mean and std as lists of length "
                             f"{' or '.join(map(str, sizes))} of finite numbers, with std > 0")
        depth = _number_array(d["mean_hip_depth"])
        if depth is None or depth.shape != () or not (np.isfinite(depth) and depth > 0):
            raise ValueError("normalisation stats need mean_hip_depth, a finite positive number of mm")
        hip_camera = None if d.get("mean_hip_camera") is None else _number_array(d["mean_hip_camera"])
        if "mean_hip_camera" in d and (hip_camera is None or hip_camera.shape != (3,)
                                       or not np.isfinite(hip_camera).all()):
            raise ValueError("normalisation stats: mean_hip_camera must be 3 finite numbers (mm)")
        return cls(mean, std, float(depth), None if hip_camera is None else hip_camera.astype(np.float64))

    def save(self, path: Path | str) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: Path | str) -> "NormStats":
        return cls.from_dict(json.loads(Path(path).read_text()))


def _number_array(value: object) -> np.ndarray | None:
    """A JSON number or (nested) list of numbers as float64; None for strings, booleans, nulls or ragged lists
    (numpy would turn "1.5" and True into numbers)."""
    try:
        array = np.asarray(value)
    except ValueError:  # ragged
        return None
    if array.dtype.kind not in "iuf":
        return None
    return array.astype(np.float64)


def joints_to_vectors(joints: np.ndarray, stats: NormStats | None = None) -> np.ndarray:
    """(..., 16, D) hip-centred joints -> (..., 15 D) vectors, standardised when `stats` is given."""
    flat = np.delete(joints, HIP, axis=-2).reshape(*joints.shape[:-2], pose_dim_of(joints.shape[-1]))
    return flat if stats is None else (flat - stats.mean) / stats.std


def vectors_to_joints(vectors: np.ndarray | torch.Tensor, stats: NormStats) -> np.ndarray:
    """(..., 15 D) standardised vectors -> (..., 16, D) float32 joints, hip at the origin (D = 2: y pointing
    down; D = 3: world mm, z up)."""
    if isinstance(vectors, torch.Tensor):
        vectors = vectors.detach().cpu().numpy()
    flat = np.asarray(vectors, dtype=np.float32) * stats.std + stats.mean
    joints = np.zeros((*flat.shape[:-1], NUM_JOINTS, stats.dims), dtype=np.float32)
    joints[..., 1:, :] = flat.reshape(*flat.shape[:-1], NUM_JOINTS - 1, stats.dims)
    return joints


@dataclass
class Sequence:
    subject: int
    action: str
    take: str
    joints: np.ndarray  # (N, 16, 2) hip-centred, depth-scaled pixels, or (N, 16, 3) world mm; at 50 Hz


@dataclass(frozen=True)
class DataConfig:
    root: str = field(default_factory=lambda: str(default_data_root()))
    actions: tuple[str, ...] = ACTIONS
    train_subjects: tuple[int, ...] = (1, 5, 6, 7, 8, 9)
    test_subjects: tuple[int, ...] = (11,)
    camera: str = "55011271"
    clip_frames: int = 50
    frame_stride: int = 3
    cache_dir: str | None = field(default_factory=lambda: str(default_cache_dir()))
    dims: int = 2  # 2: the camera view, depth-normalised pixels; 3: world-frame millimetres, z up

    def provenance(self) -> dict:
        d = asdict(self)
        d.pop("root")
        d.pop("cache_dir")
        return d


def _cache_key(files: list[SequenceFile], root: Path, camera: str) -> str:
    parts = [CACHE_VERSION, camera]
    for path in [root / "cameras.h5", *(s.path for s in files)]:
        st = path.stat()
        parts.append([str(path.relative_to(root)), st.st_size, st.st_mtime_ns])
    return hashlib.sha1(json.dumps(parts).encode()).hexdigest()[:16]


def _project_files(files: list[SequenceFile], cameras: dict[int, Camera], dims: int = 2
                   ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Hip-centred joints of each file (unscaled 2D pixels, or 3D world mm) and the hip's camera
    coordinates (N, 3) in mm, with a progress bar."""
    joints, hips = [], []
    for seq in tqdm(files, desc="projecting Human3.6M", unit="seq", leave=False):
        if seq.subject not in cameras:
            raise H36MDataError(f"no camera parameters for subject S{seq.subject} in cameras.h5")
        camera = cameras[seq.subject]
        world = read_sequence(seq.path)[:, list(H36M_INDICES)]
        pixels, depth = project_points(world, camera)
        points = pixels if dims == 2 else world
        joints.append((points - points[:, HIP:HIP + 1]).astype(np.float32))
        hip_camera = (world[:, HIP] - camera.T) @ camera.R.T
        hip_camera[:, 2] = depth[:, HIP]  # the projection's own depths, so 2D statistics stay as they were
        hips.append(hip_camera.astype(np.float32))
    return joints, hips


def _load_projected(cfg: DataConfig, files: list[SequenceFile]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Projection results, from the cache when the source files and settings are unchanged and the cache
    file is sound; a damaged one is reported and rebuilt."""
    root = Path(cfg.root)
    cache_path = None
    if cfg.cache_dir:
        cache_path = Path(cfg.cache_dir) / f"h36m{cfg.dims}d-{_cache_key(files, root, cfg.camera)}.npz"
        if cache_path.is_file():
            try:
                return _read_cache(cache_path, len(files), cfg.dims)
            except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile, zlib.error) as err:
                warnings.warn(f"the Human3.6M cache {cache_path.name} is damaged ({type(err).__name__}: {err}); "
                              "rebuilding it", stacklevel=3)
    joints, hips = _project_files(files, load_cameras(root, cfg.camera), cfg.dims)
    if cache_path is not None:
        _write_cache(cache_path, joints, hips)
    return joints, hips


def _read_cache(path: Path, sequences: int, dims: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The per-sequence joints and hip camera coordinates of a cache file; ValueError unless it holds
    exactly `sequences` sequences of (n, 16, dims) joints and (n, 3) hips."""
    archive = np.load(path, allow_pickle=False)
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError("not an .npz archive")
    with archive:
        lengths, joints, hips = archive["lengths"], archive["joints"], archive["hips"]
    frames = int(lengths.sum()) if lengths.dtype.kind in "iu" else -1
    if (lengths.shape != (sequences,) or frames < 0 or (lengths < 1).any()
            or joints.shape != (frames, NUM_JOINTS, dims) or hips.shape != (frames, 3)
            or joints.dtype != np.float32 or hips.dtype != np.float32):
        raise ValueError(f"holds lengths {lengths.shape}, joints {joints.shape} and hips {hips.shape}; "
                         f"expected {sequences} sequences")
    bounds = np.cumsum(lengths)[:-1]
    return np.split(joints, bounds), np.split(hips, bounds)


def _write_cache(path: Path, joints: list[np.ndarray], hips: list[np.ndarray]) -> None:
    """Write the cache atomically under a temporary name unique to this process, so that processes
    building the same cache at once never see or remove each other's file. A cache that cannot be
    written is reported and skipped: it only saves time."""
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, joints=np.concatenate(joints), hips=np.concatenate(hips),
                     lengths=np.array([len(j) for j in joints]))
        os.chmod(tmp, 0o644)  # as readable as a cache written with open(); mkstemp makes it owner-only
        os.replace(tmp, path)
    except OSError as err:
        warnings.warn(f"cannot write the Human3.6M cache {path.name} ({err}); going on without it", stacklevel=3)
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)  # still there only when writing or renaming failed


@dataclass
class PoseData:
    """All loaded sequences in dataset units, the normalisation statistics and the settings."""

    config: DataConfig
    sequences: list[Sequence]
    stats: NormStats

    def split(self, which: str) -> list[Sequence]:
        subjects = {"train": self.config.train_subjects, "test": self.config.test_subjects}
        if which not in subjects:
            raise ValueError(f"unknown split {which!r}; valid splits: train, test")
        return [s for s in self.sequences if s.subject in subjects[which]]


def load_pose_data(cfg: DataConfig | None = None) -> PoseData:
    """Load (or read from cache) every sequence of the configured subjects and actions."""
    cfg = cfg or DataConfig()
    unknown = [a for a in cfg.actions if a not in ACTIONS + EXTRA_ACTIONS]
    if unknown:
        raise ValueError(f"unknown Human3.6M actions {unknown} in DataConfig.actions; valid actions (as spelled "
                         f"in the file names): {', '.join(ACTIONS + EXTRA_ACTIONS)}")
    if cfg.dims not in SPACE_DIMS:
        raise ValueError(f"DataConfig.dims must be one of {SPACE_DIMS} (2: camera view, 3: world frame); "
                         f"got {cfg.dims!r}")
    subjects = tuple(dict.fromkeys(cfg.train_subjects + cfg.test_subjects))
    files = find_sequences(cfg.root, subjects, cfg.actions)
    if not (Path(cfg.root) / "cameras.h5").is_file():
        raise H36MDataError(f"{Path(cfg.root) / 'cameras.h5'}: camera file not found; expected cameras.h5 "
                            "from the h36m archive")
    joints, hips = _load_projected(cfg, files)
    train_hips = [h for s, h in zip(files, hips) if s.subject in cfg.train_subjects]
    if not train_hips:
        raise H36MDataError(f"{cfg.root}: no sequences of the training subjects {list(cfg.train_subjects)}")
    mean_hip_depth = float(np.concatenate([h[:, 2] for h in train_hips]).mean())
    if cfg.dims == 2:
        sequences = [Sequence(s.subject, s.action, s.take, j * (h[:, 2] / mean_hip_depth)[:, None, None])
                     for s, j, h in zip(files, joints, hips)]
    else:
        sequences = [Sequence(s.subject, s.action, s.take, j) for s, j in zip(files, joints)]
    # Summed in float64: float32 accumulation over the ~300k training frames drifts by ~1e-3 std.
    train_vectors = np.concatenate([joints_to_vectors(s.joints) for s in sequences
                                    if s.subject in cfg.train_subjects]).astype(np.float64)
    mean_hip_camera = None
    if cfg.dims == 3:
        mean_hip_camera = np.concatenate(train_hips).astype(np.float64).mean(0)
    stats = NormStats(train_vectors.mean(0).astype(np.float32),
                      train_vectors.std(0).astype(np.float32), mean_hip_depth, mean_hip_camera)
    return PoseData(cfg, sequences, stats)


# ----------------------------------------------------------------------------- clips

class ClipSampler:
    """Random training batches: a class uniformly, then a clip start uniformly among that class's valid
    starts (so longer sequences give proportionally more clips), or a frame uniformly among its frames."""

    def __init__(self, data: PoseData, split: str = "train", seed: int = 0, batch_size: int = 32) -> None:
        cfg = data.config
        self.batch_size = batch_size
        self.clip_frames, self.frame_stride = cfg.clip_frames, cfg.frame_stride
        span = (cfg.clip_frames - 1) * cfg.frame_stride + 1
        self.rng = np.random.default_rng(seed)
        sequences = data.split(split)
        self.vectors = np.concatenate([joints_to_vectors(s.joints, data.stats) for s in sequences]
                                      ).astype(np.float32) if sequences else np.empty((0, data.stats.pose_dim), np.float32)
        self.frame_index: list[np.ndarray] = [[] for _ in cfg.actions]
        self.start_index: list[np.ndarray] = [[] for _ in cfg.actions]
        offset = 0
        for seq in sequences:
            c = cfg.actions.index(seq.action)
            self.frame_index[c].append(np.arange(offset, offset + len(seq.joints)))
            self.start_index[c].append(np.arange(offset, offset + max(len(seq.joints) - span + 1, 0)))
            offset += len(seq.joints)
        self.frame_index = [np.concatenate(i) if i else np.empty(0, np.int64) for i in self.frame_index]
        self.start_index = [np.concatenate(i) if i else np.empty(0, np.int64) for i in self.start_index]
        empty = [a for a, idx in zip(cfg.actions, self.start_index) if len(idx) == 0]
        if empty:
            raise H36MDataError(f"split {split!r} has no sequence of at least {span} frames for: "
                                + ", ".join(empty))

    def _draw(self, pools: list[np.ndarray], batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        labels = self.rng.integers(len(pools), size=batch_size)
        picks = np.empty(batch_size, dtype=np.int64)
        for c in np.unique(labels):
            mask = labels == c
            picks[mask] = pools[c][self.rng.integers(len(pools[c]), size=int(mask.sum()))]
        return picks, labels

    def clip_rows(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """(B, T) rows of `vectors` that make a batch of clips, and (B,) class labels: what `clips` draws, for
        a caller that keeps its own per-frame values beside `vectors` (stage 2's encoded frames)."""
        starts, labels = self._draw(self.start_index, batch_size)
        return starts[:, None] + np.arange(self.clip_frames) * self.frame_stride, labels

    def frame_labels(self) -> np.ndarray:
        """(N,) the class label of every row of `vectors`."""
        labels = np.empty(len(self.vectors), np.int64)
        for c, rows in enumerate(self.frame_index):
            labels[rows] = c
        return labels

    def clips(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, 30) clips and (B,) class labels."""
        rows, labels = self.clip_rows(batch_size)
        return torch.from_numpy(self.vectors[rows]), torch.from_numpy(labels)

    def frames(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 30) single frames and (B,) class labels."""
        picks, labels = self._draw(self.frame_index, batch_size)
        return torch.from_numpy(self.vectors[picks]), torch.from_numpy(labels)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Endless batches of `batch_size` clips, as a torch-style iterator."""
        while True:
            yield self.clips(self.batch_size)


class ClipDataset(torch.utils.data.Dataset):
    """Deterministic enumeration of clips for evaluation: starts every `start_step` raw frames."""

    def __init__(self, data: PoseData, split: str = "test", start_step: int = 10) -> None:
        if start_step < 1:
            raise ValueError(f"start_step must be a positive number of frames; got {start_step}")
        cfg = data.config
        span = (cfg.clip_frames - 1) * cfg.frame_stride + 1
        clips, labels = [], []
        for seq in data.split(split):
            vectors = joints_to_vectors(seq.joints, data.stats).astype(np.float32)
            for start in range(0, len(vectors) - span + 1, start_step):
                clips.append(vectors[start:start + span:cfg.frame_stride])
                labels.append(cfg.actions.index(seq.action))
        self.clips = np.stack(clips) if clips else np.empty((0, cfg.clip_frames, data.stats.pose_dim), np.float32)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.actions = cfg.actions

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(self.clips[i]), int(self.labels[i])

    def per_class(self, max_per_class: int | None = None, seed: int = 0) -> dict[str, np.ndarray]:
        """Clips of each class, a seeded random subset of at most `max_per_class` each."""
        rng = np.random.default_rng(seed)
        out = {}
        for c, action in enumerate(self.actions):
            idx = np.flatnonzero(self.labels == c)
            if max_per_class is not None and len(idx) > max_per_class:
                idx = np.sort(rng.choice(idx, max_per_class, replace=False))
            out[action] = self.clips[idx]
        return out
