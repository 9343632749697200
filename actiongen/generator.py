"""The one way to generate motion: `Generator.load()` then `sample()`, `sample_many()` or
`interpolation_strip()`.

Every random number of a clip comes from a `torch.Generator` seeded with that clip's seed (z_0 first, then
the per-step noise), so the same arguments give the same clip on every call, in every process and thread,
and no global RNG state is touched. The network itself runs batched; a row of `sample_many` depends only on
its own action and seed.

Class weights may change per time step, so one code path serves plain actions, mixes
({"Walking": 0.5, "Phoning": 0.5}) and A -> B transitions over a frame range.
"""
from __future__ import annotations

import math
import numbers
import operator
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence, Union

import numpy as np
import torch
from tqdm.auto import tqdm

from .checkpoint import Bundle, CheckpointError, bundle_paths, default_bundle, load_bundle
from .data import NormStats, vectors_to_joints
from .skeleton import ACTIONS, action_index, fit_fixed_lengths

FPS = 50.0 / 3.0  # 50 Hz mocap, every third frame
MIN_FRAMES, MAX_FRAMES = 2, 1000
SEED_LIMIT = 2**32
MAX_STRIP_STEPS = 64
# Frames of all clips of one sample_many call: its arrays take about 600 bytes a frame at their peak, so
# this keeps a call under about 600 MB (e.g. 20,000 clips of 50 frames).
MAX_BATCH_FRAMES = 1_000_000
INT_TEXT = re.compile(r"[+-]?[0-9]+")
MAX_ACTION_NAME = 64  # characters; the names of Human3.6M actions have at most 12
# Rows per network call in sample_many: keeps the decoder's (rows * T, 1024) activations cache-sized.
CHUNK_ROWS = 128

ActionSpec = Union[str, Mapping[str, float]]


@dataclass
class Sample:
    """One generated clip. `probabilities` is None only when sampled with classify=False."""

    # (T, 16, 2) float32, dataset units, hip at the origin, y pointing down; from a 3D model (T, 16, 3)
    # world-frame millimetres, hip at the origin, z up, on a fixed-length skeleton (unless fixed_bones=False)
    joints: np.ndarray
    latents: np.ndarray  # (T, latent_dim) float32, the path z_0..z_{T-1}
    class_weights: np.ndarray  # (T, num_classes) float32, each row sums to 1
    probabilities: np.ndarray | None  # (num_classes,) float32, the model classifier's softmax
    fps: float
    action_label: str
    seed: int
    frames: int
    seed_b: int | None = None  # set for a latent interpolation towards seed_b
    alpha: float = 0.0
    actions: tuple[str, ...] = ACTIONS  # the names of the class_weights and probabilities columns
    # (2,) mean and max mm that putting a 3D clip on its fixed-length skeleton moved the network's joints;
    # None for a 2D model or with fixed_bones=False
    fit_displacement_mm: np.ndarray | None = None


@dataclass
class SampleBatch:
    """Many clips of the same length; row i is what `sample(actions[i], seeds[i], frames)` returns."""

    joints: np.ndarray  # (N, T, 16, 2), or (N, T, 16, 3) from a 3D model
    latents: np.ndarray  # (N, T, latent_dim)
    class_weights: np.ndarray  # (N, T, num_classes)
    probabilities: np.ndarray | None  # (N, num_classes)
    labels: np.ndarray  # (N,) int64, index of each row's largest class weight
    seeds: np.ndarray  # (N,) int64
    action_labels: list[str]
    fps: float
    actions: tuple[str, ...] = ACTIONS
    fit_displacement_mm: np.ndarray | None = None  # (N, 2), as Sample's

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> Sample:
        return Sample(self.joints[i], self.latents[i], self.class_weights[i],
                      None if self.probabilities is None else self.probabilities[i],
                      self.fps, self.action_labels[i], int(self.seeds[i]), self.joints.shape[1],
                      actions=self.actions,
                      fit_displacement_mm=None if self.fit_displacement_mm is None else self.fit_displacement_mm[i])


# ----------------------------------------------------------------------------- input checks

def shown(value: object, limit: int = 40) -> str:
    """repr(value) cut to `limit` characters, so that a huge argument is never echoed back in full."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def check_int(value: object, name: str, low: int, high: int) -> int:
    """`value` as an int in [low, high]; bools and non-integers are refused with the valid range."""
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer in [{low}, {high}]; got {shown(value)}") from None
    if not low <= number <= high:
        raise ValueError(f"{name} must be in [{low}, {high}]; got {number}")
    return number


def int_from_text(text: str, name: str, low: int, high: int) -> int:
    """An int in [low, high] from text of ASCII digits with an optional sign. Stricter than int(), which
    also reads "5_0" as 50 and accepts non-ASCII digits."""
    stripped = text.strip() if isinstance(text, str) else text
    if not isinstance(stripped, str) or not INT_TEXT.fullmatch(stripped) or len(stripped) > 40:
        raise ValueError(f"{name} must be a whole number in [{low}, {high}]; got {shown(text)}")
    return check_int(int(stripped), name, low, high)


def check_number(value: object, name: str) -> float:
    """A finite real number (not a bool or a string) as a float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number; got {shown(value)}")
    return float(value)


def check_seed(seed: object, name: str = "seed") -> int:
    return check_int(seed, name, 0, SEED_LIMIT - 1)


def check_frames(frames: object) -> int:
    return check_int(frames, "frames", MIN_FRAMES, MAX_FRAMES)


def check_alpha(alpha: object, seed_b: int | None) -> float:
    try:
        value = check_number(alpha, "alpha")
    except ValueError:
        raise ValueError(f"alpha must be a number in [0, 1]; got {shown(alpha)}") from None
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"alpha must be in [0, 1]; got {alpha!r}")
    if seed_b is None and value != 0.0:
        raise ValueError("alpha needs seed_b, the seed to interpolate towards")
    return value


def check_transition(transition: object, frames: int) -> tuple[int, int]:
    valid = f"transition must be (start, end) frames with 0 <= start <= end <= {frames - 1}"
    try:
        start, end = (operator.index(v) for v in transition)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ValueError(f"{valid}; got {shown(transition)}") from None
    if not 0 <= start <= end <= frames - 1:
        raise ValueError(f"{valid}; got ({start}, {end})")
    return start, end


def check_batch(items: object, name: str, frames: int) -> Sequence:
    """A list, tuple, range or 1-d array of one item per clip, with at most MAX_BATCH_FRAMES frames in all."""
    if isinstance(items, (str, bytes)) or not (isinstance(items, Sequence)
                                               or isinstance(items, np.ndarray) and items.ndim == 1):
        raise ValueError(f"{name} must be a sequence with one entry per clip, e.g. a list or range(5); "
                         f"got {type(items).__name__} {shown(items)}")
    if len(items) * frames > MAX_BATCH_FRAMES:
        raise ValueError(f"{len(items)} clips of {frames} frames are too many for one call; at most "
                         f"{MAX_BATCH_FRAMES // frames} clips of {frames} frames ({MAX_BATCH_FRAMES:,} frames in all)")
    return items


def resolve_device(device: str | torch.device) -> torch.device:
    """"auto" -> CUDA when available, else CPU; ValueError for an unknown or unavailable device."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"unknown device {device!r}; valid: auto, cpu, cuda, cuda:<index>") from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use 'cpu' or 'auto'")
    if resolved.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {device!r}; valid: auto, cpu, cuda, cuda:<index>")
    return resolved


def slerp(a: torch.Tensor, b: torch.Tensor, alpha: float) -> torch.Tensor:
    """Spherical interpolation along the last axis; linear where a and b are (anti)parallel and the arc is
    undefined. Exact at alpha 0 and 1: the coefficients are then sin(x) / sin(x) == 1 and sin(0) == 0."""
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1).clamp(-1.0, 1.0)[..., None]
    theta = torch.arccos(cos)
    sin = torch.sin(theta)
    spherical = torch.sin((1.0 - alpha) * theta) / sin * a + torch.sin(alpha * theta) / sin * b
    return torch.where(sin > 1e-6, spherical, (1.0 - alpha) * a + alpha * b)


# ----------------------------------------------------------------------------- the generator

class Generator:
    """A loaded model bundle on one device. Thread-safe: calls share no mutable state."""

    _cache: dict[tuple, "Generator"] = {}
    _cache_lock = threading.Lock()

    def __init__(self, bundle: Bundle, device: str | torch.device = "cpu") -> None:
        self.device = resolve_device(device)
        self.bundle = bundle
        # Eval mode matters: the decoder's BatchNorm must use its running statistics.
        bundle.transition.to(self.device).eval()
        bundle.classifier.to(self.device).eval()
        self.actions: tuple[str, ...] = tuple(bundle.actions)
        self.stats: NormStats = bundle.stats
        self.fps = float(bundle.meta.get("fps", FPS))
        self.dims: int = bundle.dims  # coordinates per joint: 2 (camera view) or 3 (world frame, mm)

    @classmethod
    def load(cls, path: Path | str | None = None, device: str | torch.device = "auto", *,
             model: str | None = None) -> "Generator":
        """The bundle at `path`, or the shipped model named by `model` ("2d": assets/actiongen.json, "3d":
        assets/actiongen3d.json; neither: the 2D one) on `device`, loaded once per process for each resolved
        path, device and file version; CheckpointError if missing or broken, or for an unknown model name."""
        if path is not None and model is not None:
            raise ValueError("give either a bundle path or a model name, not both")
        resolved = resolve_device(device)
        json_path, weights_path = bundle_paths(default_bundle(model) if model is not None else path)
        json_path = json_path.resolve()
        versions = tuple(p.stat().st_mtime_ns if p.is_file() else None for p in (json_path, weights_path))
        key = (json_path, str(resolved), versions)
        with cls._cache_lock:
            if key not in cls._cache:
                cls._cache[key] = cls(load_bundle(json_path, resolved), resolved)
            return cls._cache[key]

    # -- class weights

    def class_weights_of(self, action: ActionSpec) -> np.ndarray:
        """(num_classes,) float64 weights summing to 1 of an action name or a {name: weight} mix."""
        weights = np.zeros(len(self.actions))
        if isinstance(action, str):
            weights[self.index_of(action)] = 1.0
            return weights
        if not isinstance(action, Mapping):
            raise ValueError(f"action must be an action name or a mapping of names to weights; got {shown(action)} "
                             f"(valid actions: {', '.join(self.actions)})")
        for name, weight in action.items():
            index = self.index_of(name)
            weight = check_number(weight, f"mix weight of {shown(name)}")
            if weight < 0:
                raise ValueError(f"mix weights must be finite and non-negative; got {name}={weight}")
            weights[index] += weight
        with np.errstate(over="ignore"):  # an overflowing sum is refused just below
            total = weights.sum()
        if not math.isfinite(total):
            raise ValueError(f"mix weights are too large: their sum overflows ({total}); use relative weights such "
                             "as Walking=0.5, Phoning=0.5")
        if total <= 0:
            raise ValueError(f"mix weights are all zero; give at least one action a positive weight "
                             f"(valid actions: {', '.join(self.actions)})")
        return weights / total

    def index_of(self, name: object) -> int:
        """The column of an action name (case-insensitive); ValueError naming the valid actions, which never
        echoes a long name in full."""
        if isinstance(name, str) and len(name) > MAX_ACTION_NAME:
            raise ValueError(f"unknown action {shown(name)}; valid actions: {', '.join(self.actions)}")
        return action_index(name, self.actions)

    def label_of(self, weights: np.ndarray) -> str:
        """"Walking" for a plain action, "0.67 Phoning + 0.33 Walking" for a mix (largest first)."""
        parts = sorted(((w, a) for a, w in zip(self.actions, weights) if w > 0), key=lambda p: -p[0])
        if len(parts) == 1:
            return parts[0][1]
        return " + ".join(f"{w:.2g} {a}" for w, a in parts)

    def step_weights(self, action: ActionSpec, frames: int, to_action: ActionSpec | None = None,
                     transition: tuple[int, int] | None = None) -> tuple[np.ndarray, str]:
        """(frames, num_classes) per-step class weights and their label. With `to_action` they are those of
        `action` up to frame `start`, those of `to_action` from frame `end` on and linear in between
        (`transition` defaults to the whole clip)."""
        start_weights = self.class_weights_of(action)
        label = self.label_of(start_weights)
        if to_action is None:
            if transition is not None:
                raise ValueError("transition=(start, end) needs to_action, the action to move to")
            return np.broadcast_to(start_weights, (frames, len(self.actions))), label
        end_weights = self.class_weights_of(to_action)
        start, end = check_transition(transition if transition is not None else (0, frames - 1), frames)
        t = np.arange(frames)
        ramp = np.clip((t - start) / (end - start), 0.0, 1.0) if end > start else (t >= start).astype(float)
        weights = (1.0 - ramp)[:, None] * start_weights + ramp[:, None] * end_weights
        return weights, f"{label} -> {self.label_of(end_weights)} (frames {start}-{end})"

    # -- random inputs

    def _inputs(self, seed: int, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        """z_0 (1, d) and step noise (1, T-1, noise_dim) of one seed, drawn on the CPU so that every
        device gets the same numbers."""
        rng = torch.Generator().manual_seed(seed)
        return self.bundle.transition.sample_inputs(1, frames, rng)

    def _interpolated_inputs(self, seed: int, seed_b: int, alpha: float, frames: int
                             ) -> tuple[torch.Tensor, torch.Tensor]:
        """z_0 linear, the step noise spherical per time step (each step's 64-d Gaussian keeps its typical
        norm, which a linear blend would shrink)."""
        z0_a, noise_a = self._inputs(seed, frames)
        z0_b, noise_b = self._inputs(seed_b, frames)
        return (1.0 - alpha) * z0_a + alpha * z0_b, slerp(noise_a, noise_b, alpha)

    # -- the network

    def _class_probabilities(self, frames: torch.Tensor) -> torch.Tensor:
        """Softmax of the model classifier. A "flatten" head reads exactly `clip_frames` frames: other lengths
        are averaged over evenly spaced windows of that length (a short clip holds its last pose)."""
        cfg = self.bundle.config
        window = cfg.clip_frames
        if cfg.head == "pool" or frames.shape[1] == window:
            return torch.softmax(self.bundle.classifier(frames), dim=-1)
        if frames.shape[1] < window:
            frames = torch.cat([frames, frames[:, -1:].expand(-1, window - frames.shape[1], -1)], dim=1)
        count = math.ceil(frames.shape[1] / window)
        starts = np.linspace(0, frames.shape[1] - window, count).round().astype(int)
        windows = torch.stack([frames[:, s:s + window] for s in starts], dim=1)
        logits = self.bundle.classifier(windows.reshape(-1, window, frames.shape[-1]))
        return torch.softmax(logits, dim=-1).reshape(frames.shape[0], count, -1).mean(dim=1)

    def _run(self, z0: torch.Tensor, noise: torch.Tensor, weights: np.ndarray, classify: bool, fixed_bones: bool
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Joints (B, T, 16, dims), latents (B, T, d), probabilities (B, C) or None, and for 3D clips put on
        their fixed-length skeleton the (B, 2) mean and max displacement in mm (otherwise None)."""
        class_weights = torch.from_numpy(np.ascontiguousarray(weights, dtype=np.float32)).to(self.device)
        with torch.inference_mode():
            frames, latents, _ = self.bundle.transition(z0.to(self.device), noise.to(self.device), class_weights)
            probabilities = self._class_probabilities(frames) if classify else None
            finite = torch.isfinite(frames).all() and (probabilities is None or torch.isfinite(probabilities).all())
            if not finite:
                raise CheckpointError("the model produced non-finite poses; its weights are corrupt")
            joints = vectors_to_joints(frames, self.stats)
            latents = latents.cpu().numpy()
            probabilities = None if probabilities is None else probabilities.cpu().numpy()
        if self.dims == 2 or not fixed_bones:
            return joints, latents, probabilities, None
        fit = fit_fixed_lengths(joints)
        moved = fit.displacement.reshape(len(joints), -1)
        return fit.joints, latents, probabilities, np.stack([moved.mean(axis=1), moved.max(axis=1)], axis=1)

    # -- public API

    def sample(self, action: ActionSpec, seed: int, frames: int = 50, *, to_action: ActionSpec | None = None,
               transition: tuple[int, int] | None = None, seed_b: int | None = None, alpha: float = 0.0,
               classify: bool = True, fixed_bones: bool = True) -> Sample:
        """One clip of `action` (a name or a {name: weight} mix), optionally moving to `to_action` over the
        `transition` frame range, optionally interpolated in latent space towards `seed_b` by `alpha`.
        `classify=False` skips the model classifier (probabilities None), which costs more than generating.
        `fixed_bones=False` gives a 3D model's raw joints, whose bone lengths vary within the clip."""
        seed, frames = check_seed(seed), check_frames(frames)
        alpha = check_alpha(alpha, seed_b)
        weights, label = self.step_weights(action, frames, to_action, transition)
        if seed_b is None:
            z0, noise = self._inputs(seed, frames)
        else:
            seed_b = check_seed(seed_b, "seed_b")
            z0, noise = self._interpolated_inputs(seed, seed_b, alpha, frames)
        joints, latents, probabilities, moved = self._run(z0, noise, weights[None], classify, fixed_bones)
        return Sample(joints[0], latents[0], np.asarray(weights, dtype=np.float32),
                      None if probabilities is None else probabilities[0],
                      self.fps, label, seed, frames, seed_b, alpha, self.actions,
                      None if moved is None else moved[0])

    def sample_many(self, actions: ActionSpec | Sequence[ActionSpec], seeds: Sequence[int], frames: int = 50,
                    *, classify: bool = True, fixed_bones: bool = True, workers: int = 1,
                    progress: bool = False) -> SampleBatch:
        """Clips for each (action, seed) pair, batched; `actions` may be one action for all seeds.

        `workers` > 1 runs chunks of rows in that many threads (same results). On a CPU, workers=2 with
        torch.set_num_threads(1) uses two cores better than one call with two intra-op threads, whose
        per-operation synchronisation costs much on small operations and collapses on a busy machine.
        `progress` shows a progress bar on stderr."""
        frames = check_frames(frames)
        seeds = [check_seed(s) for s in check_batch(seeds, "seeds", frames)]
        if isinstance(actions, (str, Mapping)):
            actions = [actions] * len(seeds)
        actions = check_batch(actions, "actions", frames)
        if len(actions) != len(seeds):
            raise ValueError(f"got {len(actions)} actions for {len(seeds)} seeds; give one action per seed "
                             "or a single action for all")
        if not seeds:
            raise ValueError("sample_many needs at least one seed")
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be a positive integer; got {workers!r}")
        per_row = [self.step_weights(a, frames) for a in actions]
        weights = np.stack([w for w, _ in per_row]).astype(np.float32)

        def run_chunk(first: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
            inputs = [self._inputs(s, frames) for s in seeds[first:first + CHUNK_ROWS]]
            z0, noise = torch.cat([z for z, _ in inputs]), torch.cat([n for _, n in inputs])
            return self._run(z0, noise, weights[first:first + CHUNK_ROWS], classify, fixed_bones)

        starts = range(0, len(seeds), CHUNK_ROWS)
        bar = tqdm(total=len(seeds), desc="sampling", unit="clip", disable=None if progress else True,
                   leave=False)  # None: only on a terminal
        chunks = []
        with ThreadPoolExecutor(workers) as pool:
            for chunk in pool.map(run_chunk, starts):
                chunks.append(chunk)
                bar.update(len(chunk[0]))
        bar.close()
        joints, latents, probabilities, moved = zip(*chunks)
        return SampleBatch(
            joints=np.concatenate(joints), latents=np.concatenate(latents), class_weights=weights,
            probabilities=np.concatenate(probabilities) if classify else None,
            labels=weights[:, 0].argmax(axis=-1), seeds=np.asarray(seeds, dtype=np.int64),
            action_labels=[label for _, label in per_row], fps=self.fps, actions=self.actions,
            fit_displacement_mm=None if moved[0] is None else np.concatenate(moved))

    def interpolation_strip(self, action: ActionSpec, seed_a: int, seed_b: int, steps: int = 8,
                            frames: int = 50) -> list[Sample]:
        """`steps` clips from seed_a (alpha 0) to seed_b (alpha 1) at evenly spaced alphas."""
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 2 <= steps <= MAX_STRIP_STEPS:
            raise ValueError(f"steps must be an integer in [2, {MAX_STRIP_STEPS}]; got {steps!r}")
        return [self.sample(action, seed_a, frames, seed_b=seed_b, alpha=float(alpha))
                for alpha in np.linspace(0.0, 1.0, steps)]
