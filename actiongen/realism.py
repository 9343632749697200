"""Does generated motion look like real motion? Three measurements beside the MMD protocol, which cannot see it:

- a classifier two-sample test (C2ST): a small class-conditioned temporal conv net learns to tell generated
  clips from real clips of some training subjects and is scored on held-out generated clips and a held-out
  training subject (S11, the final test subject, is never used). 0.5 means indistinguishable;
- motion statistics per class (joint speed and acceleration of feet, wrists and all joints, bone-length
  variation, pose spread, Walking's step frequency) as generated / real ratios;
- latent occupancy: how much of the latent path sits at the clamp of the decoder's [-1, 1] prior box.

    python -m actiongen.realism [--checkpoint assets/actiongen.json] [--per-class 1000] [--seeds 0]
                                [--c2st-fits 5] [--skip-frames 0] [--references] [--device cpu] [--threads 1]
                                [--json out.json]

From Python, `evaluate_bundle(path, data, per_class=1000, seed=0)` returns the headline numbers as a flat dict.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .checkpoint import CheckpointError
from .data import (ClipDataset, DataConfig, H36MDataError, PoseData, default_data_root, joints_to_vectors,
                   load_pose_data, vectors_to_joints)
# The module object, not its names: actiongen.evaluate imports this module in turn.
from . import evaluate
from .generator import FPS, MAX_FRAMES, Generator, SampleBatch, check_int
from .metrics import paired_subsets
from .skeleton import BONES, HIP, JOINT_NAMES, NUM_JOINTS

FEET = (JOINT_NAMES.index("RFoot"), JOINT_NAMES.index("LFoot"))
WRISTS = (JOINT_NAMES.index("RWrist"), JOINT_NAMES.index("LWrist"))
BODY = tuple(j for j in range(NUM_JOINTS) if j != HIP)  # the hip is the origin of every frame
CLAMP_LEVEL = 0.99
PRIOR_CLAMP_SHARE = 1.0 - CLAMP_LEVEL  # U[-1, 1], the decoder's training prior
PRIOR_STD = 1.0 / np.sqrt(3.0)
# Lowest step rate looked for: below it, turning on Human3.6M's circular path dominates the foot speeds of a
# 3 s clip (real walking there: 1.3-1.8 steps/s).
STEP_BAND_HZ = 0.7
SPECTRUM_POINTS = 1024  # zero padding: frequency steps of fps / 1024 ~ 0.016 Hz


# ----------------------------------------------------------------------------- motion statistics

def joint_speed(joints: np.ndarray, joints_of_interest: tuple[int, ...] = BODY) -> float:
    """Mean per-frame displacement (dataset units per frame) of some joints of clips (N, T, 16, 2 or 3)."""
    return float(np.linalg.norm(np.diff(joints[..., joints_of_interest, :], axis=1), axis=-1).mean())


def joint_acceleration(joints: np.ndarray, joints_of_interest: tuple[int, ...] = BODY) -> float:
    """Mean norm of the second difference (dataset units per frame²) of some joints of clips (N, T, 16, 2 or 3)."""
    return float(np.linalg.norm(np.diff(joints[..., joints_of_interest, :], n=2, axis=1), axis=-1).mean())


def bone_length_cvs(joints: np.ndarray) -> np.ndarray:
    """(N, bones): the coefficient of variation over time of each bone's length within each clip of clips
    (N, T, 16, 2 or 3); 0 for a rigid skeleton."""
    lengths = np.stack([np.linalg.norm(joints[..., child, :] - joints[..., parent, :], axis=-1)
                        for parent, child, _ in BONES], axis=-1)  # (N, T, bones)
    return lengths.std(axis=1) / np.maximum(lengths.mean(axis=1), 1e-6)


def bone_length_variation(joints: np.ndarray) -> float:
    """bone_length_cvs, mean over bones and clips: 0 for a rigid skeleton."""
    return float(bone_length_cvs(joints).mean())


def pose_spread(joints: np.ndarray) -> float:
    """Std of each joint coordinate over all frames of all clips, mean over the non-hip joints' coordinates:
    how widely the poses of a set spread around its mean pose."""
    return float(joints[..., BODY, :].reshape(-1, len(BODY) * joints.shape[-1]).std(axis=0).mean())


def feet_speeds(joints: np.ndarray) -> np.ndarray:
    """(N, T - 1, 2): each foot's per-frame displacement in clips (N, T, 16, 2 or 3)."""
    return np.linalg.norm(np.diff(joints[:, :, FEET], axis=1), axis=-1)


def step_frequency(joints: np.ndarray, fps: float = FPS) -> float:
    """Steps per second: the median over clips of the dominant frequency of the summed speeds of both feet
    (one peak per step, whichever foot swings), linear trend removed, Hann-windowed, at or above
    STEP_BAND_HZ. On real Human3.6M walking, 3 s clips agree with whole takes within ~0.08 Hz."""
    speeds = feet_speeds(joints).sum(axis=-1)  # (N, T-1)
    time_axis = np.arange(speeds.shape[1], dtype=np.float64)
    design = np.stack([np.ones_like(time_axis), time_axis], axis=1)
    trend = design @ np.linalg.lstsq(design, speeds.T, rcond=None)[0]
    power = np.abs(np.fft.rfft((speeds - trend.T) * np.hanning(len(time_axis)), n=SPECTRUM_POINTS, axis=1)) ** 2
    frequencies = np.fft.rfftfreq(SPECTRUM_POINTS, d=1.0 / fps)
    band = frequencies >= STEP_BAND_HZ
    return float(np.median(frequencies[band][power[:, band].argmax(axis=1)]))


def feet_speed_coupling(joints: np.ndarray) -> float:
    """1 + the median over clips of the within-clip correlation between the two feet's speeds. Walkers' feet
    take turns, one planted while the other swings (real Human3.6M walking: about 0.75); feet that slide
    in mirror image are fastest together as they pass each other (2 for exact mirror images)."""
    speeds = feet_speeds(joints)
    centred = speeds - speeds.mean(axis=1, keepdims=True)
    spread = np.sqrt((centred ** 2).mean(axis=1)) + 1e-9
    correlation = (centred[..., 0] * centred[..., 1]).mean(axis=1) / (spread[:, 0] * spread[:, 1])
    return float(1 + np.median(correlation))


MOTION_STATISTICS = {
    "feet_speed": lambda j: joint_speed(j, FEET),
    "wrist_speed": lambda j: joint_speed(j, WRISTS),
    "all_speed": joint_speed,
    "feet_accel": lambda j: joint_acceleration(j, FEET),
    "wrist_accel": lambda j: joint_acceleration(j, WRISTS),
    "all_accel": joint_acceleration,
    "bone_cv": bone_length_variation,
    "pose_spread": pose_spread,
}
STEP_CLASS = "Walking"


def motion_statistics(joints_by_class: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Every MOTION_STATISTICS entry per class, and the step frequency and feet speed coupling for Walking."""
    out = {}
    for action, joints in joints_by_class.items():
        out[action] = {name: statistic(joints) for name, statistic in MOTION_STATISTICS.items()}
        if action == STEP_CLASS:
            out[action]["step_frequency"] = step_frequency(joints)
            out[action]["feet_speed_coupling"] = feet_speed_coupling(joints)
    return out


def motion_ratios(candidate: dict[str, dict[str, float]], real: dict[str, dict[str, float]]
                  ) -> dict[str, dict[str, float]]:
    """Candidate / real for every statistic of every class both have."""
    return {action: {name: value / real[action][name] for name, value in stats.items() if real[action][name] > 0}
            for action, stats in candidate.items() if action in real}


# ----------------------------------------------------------------------------- latent occupancy

def latent_occupancy(latents: np.ndarray) -> dict:
    """Share of latent coordinates at the clamp (|z| > 0.99) and per-dimension mean and std of latent paths
    (..., d); the U[-1, 1] prior the decoder was trained on has 1 % at the clamp, mean 0 and std 0.577."""
    flat = latents.reshape(-1, latents.shape[-1])
    return {"clamp_share": float((np.abs(flat) > CLAMP_LEVEL).mean()),
            "dim_mean": flat.mean(axis=0).tolist(), "dim_std": flat.std(axis=0).tolist(),
            "prior": {"clamp_share": PRIOR_CLAMP_SHARE, "dim_mean": 0.0, "dim_std": float(PRIOR_STD)}}


# ----------------------------------------------------------------------------- classifier two-sample test

MAX_C2ST_FITS = 100


@dataclass(frozen=True)
class C2STConfig:
    hidden: int = 32
    batch_size: int = 256
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    max_epochs: int = 40
    patience: int = 4  # epochs without a better validation loss before stopping
    validation_share: float = 0.2  # of the fit set, for early stopping
    # Independent fits averaged per seed, each with its own balanced subsets, validation split and initial
    # weights: with the clips held fixed, one fit varies by about +- 0.02 overall and +- 0.05 per class (model
    # card, round 28), as much as a new set of clips does. Fits are cheap next to generating the clips.
    fits: int = 5

    def __post_init__(self) -> None:
        check_int(self.fits, "fits", 1, MAX_C2ST_FITS)


def motion_features(clips: np.ndarray) -> np.ndarray:
    """(N, T, D) normalised poses -> (N, T-2, 3D): pose, velocity and acceleration of frames 2..T-1."""
    velocity = np.diff(clips, axis=1)
    acceleration = np.diff(velocity, axis=1)
    return np.concatenate([clips[:, 2:], velocity[:, 1:], acceleration], axis=-1).astype(np.float32)


class RealFakeClassifier(nn.Module):
    """A class-conditioned temporal conv net: a strided convolution over the per-frame features plus a class
    bias, two more temporal convolutions, mean and max pooling over time, one real-vs-generated logit per
    class. Small on purpose: it runs on many variants on two CPU cores."""

    def __init__(self, features: int, num_classes: int, hidden: int) -> None:
        super().__init__()
        self.embed = nn.Conv1d(features, hidden, 3, stride=2, padding=1)
        self.class_bias = nn.Embedding(num_classes, hidden)
        self.temporal = nn.Sequential(
            nn.LeakyReLU(0.2), nn.Conv1d(hidden, hidden, 3, padding=1),
            nn.LeakyReLU(0.2), nn.Conv1d(hidden, hidden, 3, stride=2, padding=1), nn.LeakyReLU(0.2))
        self.head = nn.Linear(2 * hidden, num_classes)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(B, T, F) features and (B,) class indices -> (B,) logits, positive for "generated"."""
        hidden = self.temporal(self.embed(x.transpose(1, 2)) + self.class_bias(labels)[:, :, None])
        pooled = torch.cat([hidden.mean(dim=-1), hidden.amax(dim=-1)], dim=1)
        return self.head(pooled).gather(1, labels[:, None]).squeeze(1)


@dataclass
class TwoSampleSplit:
    """Clips per class (normalised vectors, (n, T, 30)); the fit sets train the classifier, the test sets
    score it. `balanced` makes candidate and real equally many per class on each side."""

    candidate_fit: dict[str, np.ndarray]
    real_fit: dict[str, np.ndarray]
    candidate_test: dict[str, np.ndarray]
    real_test: dict[str, np.ndarray]

    def balanced(self, rng: np.random.Generator, max_test: int | None = None,
                 max_fit: int | None = None) -> "TwoSampleSplit":
        """Random equal-sized subsets per class and side (at most `max_test` / `max_fit`); classes without
        a clip on one of the four sides are left out."""
        sides: list[dict[str, np.ndarray]] = [{}, {}, {}, {}]
        for action in self.candidate_test:
            parts = (self.candidate_fit.get(action), self.real_fit.get(action),
                     self.candidate_test[action], self.real_test.get(action))
            if any(p is None or len(p) == 0 for p in parts):
                continue
            for first, (a, b), cap in ((0, parts[:2], max_fit), (2, parts[2:], max_test)):
                i, j = paired_subsets(a, b, rng, cap)
                sides[first][action], sides[first + 1][action] = a[i], b[j]
        return TwoSampleSplit(*sides)


def _stack(candidate: dict[str, np.ndarray], real: dict[str, np.ndarray], actions: tuple[str, ...]
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features, class indices and targets (1 generated, 0 real) of two per-class clip sets."""
    parts = [(clips, action, target) for target, clip_set in ((1.0, candidate), (0.0, real))
             for action, clips in clip_set.items()]
    features = np.concatenate([motion_features(clips) for clips, _, _ in parts])
    labels = np.concatenate([np.full(len(clips), actions.index(action)) for clips, action, _ in parts])
    targets = np.concatenate([np.full(len(clips), target, np.float32) for clips, _, target in parts])
    return features, labels, targets


def _logits(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, batch_size: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(x[i:i + batch_size], labels[i:i + batch_size])
                          for i in range(0, len(x), batch_size)])


def c2st(split: TwoSampleSplit, actions: tuple[str, ...], seed: int = 0, device: str = "cpu",
         config: C2STConfig = C2STConfig()) -> dict:
    """Fit a real-vs-candidate classifier on `split`'s fit sets (early stopping on a random validation part of
    them) and score it on the test sets. Give it a balanced split. Returns the accuracy over all test clips,
    per class, the test and fit sizes per class and the epochs run; deterministic for a seed on one device
    and thread count."""
    if not split.candidate_test:
        raise ValueError("the two-sample test needs at least one class with clips on every side")
    rng = np.random.default_rng(seed)
    fit_x, fit_labels, fit_targets = _stack(split.candidate_fit, split.real_fit, actions)
    test_x, test_labels, test_targets = _stack(split.candidate_test, split.real_test, actions)
    # Standardise each feature channel with the fit set's statistics: velocities and accelerations are
    # several times smaller than poses.
    mean, std = fit_x.mean(axis=(0, 1)), fit_x.std(axis=(0, 1)) + 1e-6
    tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(device)  # noqa: E731
    fit_x, test_x = tensor((fit_x - mean) / std), tensor((test_x - mean) / std)
    fit_labels, test_labels = tensor(fit_labels), tensor(test_labels)
    fit_targets = tensor(fit_targets)
    order = rng.permutation(len(fit_x))
    n_val = max(1, int(round(config.validation_share * len(fit_x))))
    val, train = tensor(order[:n_val]), order[n_val:]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = RealFakeClassifier(fit_x.shape[-1], len(actions), config.hidden).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    loss_fn = nn.BCEWithLogitsLoss()
    best_loss, best_state, stale, epochs = float("inf"), copy.deepcopy(model.state_dict()), 0, 0
    for epochs in range(1, config.max_epochs + 1):
        model.train()
        shuffled = rng.permutation(train)
        for start in range(0, len(shuffled), config.batch_size):
            rows = tensor(shuffled[start:start + config.batch_size])
            loss = loss_fn(model(fit_x[rows], fit_labels[rows]), fit_targets[rows])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        model.eval()
        val_loss = loss_fn(_logits(model, fit_x[val], fit_labels[val], config.batch_size), fit_targets[val]).item()
        if val_loss < best_loss - 1e-4:
            best_loss, best_state, stale = val_loss, copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
            if stale >= config.patience:
                break
    model.load_state_dict(best_state)
    model.eval()
    correct = ((_logits(model, test_x, test_labels, config.batch_size) > 0).cpu().numpy() == (test_targets > 0.5))
    test_labels_np = test_labels.cpu().numpy()
    fit_labels_np = fit_labels.cpu().numpy()
    present = [a for a in actions if a in split.candidate_test]
    return {"accuracy": float(correct.mean()),
            "per_class": {a: float(correct[test_labels_np == actions.index(a)].mean()) for a in present},
            "m_test": {a: len(split.candidate_test[a]) for a in present},
            "m_fit": {a: int((fit_labels_np == actions.index(a)).sum() // 2) for a in present},
            "epochs": epochs}


# ----------------------------------------------------------------------------- the real sets

@dataclass(frozen=True)
class RealismSubjects:
    """Which training subjects play which part: real clips to fit on, the held-out subject the test scores
    on, and the unseen subject of the reference rows (None when there are too few training subjects)."""

    fit: tuple[int, ...]
    test: int
    reference: int | None

    @classmethod
    def of(cls, train_subjects: tuple[int, ...]) -> "RealismSubjects":
        """The last training subject is held out (as in evaluate's "real S9" row), the one before it plays
        the unseen subject of the reference rows, the rest are the real fit set: S1, S5, S6, S7 / S9 / S8."""
        if len(train_subjects) < 2:
            raise ValueError(f"the two-sample test needs at least 2 training subjects; got {list(train_subjects)}")
        if len(train_subjects) == 2:
            return cls(train_subjects[:1], train_subjects[1], None)
        return cls(train_subjects[:-2], train_subjects[-1], train_subjects[-2])


@dataclass
class RealSets:
    """The real clips every measurement compares with, loaded once per data set."""

    subjects: RealismSubjects
    fit: dict[str, np.ndarray]
    test: dict[str, np.ndarray]
    reference_takes: tuple[dict[str, np.ndarray], dict[str, np.ndarray]] | None  # the unseen subject's 2 takes
    train: dict[str, np.ndarray]  # all training clips (normalised vectors), what the MMD compares with
    motion_reference: dict[str, np.ndarray]  # their joints, what the motion statistics compare with
    motion_test_subjects: dict[str, np.ndarray]  # joints of the test subjects' clips (S11), for scale

    @classmethod
    def load(cls, data: PoseData) -> "RealSets":
        cfg = data.config
        subjects = RealismSubjects.of(cfg.train_subjects)
        of = lambda chosen: [s for s in data.sequences if s.subject in chosen]  # noqa: E731
        takes = None
        if subjects.reference is not None:
            first, second = evaluate.take_halves(of((subjects.reference,)))
            takes = (evaluate.clips_by_class(data, first), evaluate.clips_by_class(data, second))
        # All training clips: a random 1000 per class moved some ratios by up to 0.06 against another 1000.
        train = ClipDataset(data, "train").per_class()
        motion_reference = {a: vectors_to_joints(c, data.stats) for a, c in train.items()}
        return cls(subjects, evaluate.clips_by_class(data, of(subjects.fit)),
                   evaluate.clips_by_class(data, of((subjects.test,))), takes, train, motion_reference,
                   {a: vectors_to_joints(c, data.stats)
                    for a, c in evaluate.clips_by_class(data, data.split("test")).items() if len(c)})


def frozen(clips: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each clip's pose at one random frame, repeated for the whole clip."""
    frames = rng.integers(clips.shape[1], size=len(clips))
    return np.repeat(clips[np.arange(len(clips)), frames][:, None], clips.shape[1], axis=1)


def generated_split(generated: dict[str, np.ndarray], real: RealSets, per_class: int) -> TwoSampleSplit:
    """Generated clips of each class: as many as the held-out subject has (at most half) go to the test
    side, the rest to the fit side."""
    n_test = {a: min(len(real.test.get(a, ())), per_class // 2) for a in generated}
    return TwoSampleSplit({a: c[n_test[a]:] for a, c in generated.items()}, real.fit,
                          {a: c[:n_test[a]] for a, c in generated.items()}, real.test)


def c2st_rows(generated: dict[str, np.ndarray] | None, real: RealSets, actions: tuple[str, ...], per_class: int,
              seed: int, device: str, references: bool, config: C2STConfig = C2STConfig(),
              progress: bool = True) -> dict[str, dict]:
    """C2ST of the generated clips and, with `references`, of the reference rows: the unseen training
    subject's real clips in the generated slot (one take to fit, the other to test: what a perfect generator
    could score at that size) and the same clips frozen at one frame. Each row is the mean of
    `config.fits` classifier fits (`average_fits`)."""
    fits: dict[str, list[dict]] = {}
    with tqdm(total=config.fits, desc=f"two-sample tests (seed {seed})", unit="fit", disable=not progress,
              leave=False) as bar:
        for fit in range(config.fits):
            fit_seed = c2st_fit_seed(seed, fit)
            for name, split in c2st_splits(generated, real, per_class, references,
                                           np.random.default_rng(fit_seed)).items():
                fits.setdefault(name, []).append(c2st(split, actions, fit_seed, device, config))
            bar.update()
    return {name: average_fits(results) for name, results in fits.items()}


def c2st_fit_seed(seed: int, fit: int) -> int:
    """The seed of one classifier fit: the first fit takes the evaluation seed itself, so one fit reproduces
    the single-fit protocol of the releases before round 29."""
    return seed if fit == 0 else int(np.random.SeedSequence([seed, fit]).generate_state(1)[0])


def c2st_splits(generated: dict[str, np.ndarray] | None, real: RealSets, per_class: int, references: bool,
                rng: np.random.Generator) -> dict[str, TwoSampleSplit]:
    """One fit's balanced splits: the generated clips' and, with `references`, the reference rows'."""
    splits = {}
    if generated is not None:
        splits["ActionGen"] = generated_split(generated, real, per_class).balanced(rng)
    if references and real.reference_takes is not None:
        fit_take, test_take = real.reference_takes
        name = f"S{real.subjects.reference}"
        unseen = TwoSampleSplit(fit_take, real.fit, test_take, real.test).balanced(
            rng, max_test=per_class // 2, max_fit=per_class - per_class // 2)
        splits[f"real {name} as generated"] = unseen
        splits[f"frozen real frames ({name})"] = TwoSampleSplit(
            {a: frozen(c, rng) for a, c in unseen.candidate_fit.items()}, unseen.real_fit,
            {a: frozen(c, rng) for a, c in unseen.candidate_test.items()}, unseen.real_test)
    return splits


def average_fits(results: list[dict]) -> dict:
    """The mean accuracy, overall and per class, of several fits of `c2st` on the same clips, with every fit's
    overall accuracy and epochs; the sizes are the first fit's (every fit draws the same sizes)."""
    first = results[0]
    return {"accuracy": float(np.mean([r["accuracy"] for r in results])),
            "per_class": {a: float(np.mean([r["per_class"][a] for r in results])) for a in first["per_class"]},
            "m_test": first["m_test"], "m_fit": first["m_fit"],
            "fit_accuracies": [r["accuracy"] for r in results], "epochs": [r["epochs"] for r in results]}


# ----------------------------------------------------------------------------- one checkpoint

@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run with `threads` torch CPU threads (None: unchanged), restoring the previous count afterwards. One
    thread is the default of this module: its operations are small, and on a shared 2-core machine two
    intra-op threads made the classifier's training 3-15x slower than one."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


WALKING_HEADLINES = ("feet_speed", "wrist_speed", "feet_accel", "wrist_accel", "step_frequency",
                     "feet_speed_coupling")


def mmd_against_training(generated: dict[str, np.ndarray], real: RealSets, data: PoseData, per_class: int,
                         seed: int) -> dict:
    """The published MMD protocol's MMD_avg and MMD_seq of the generated clips against the training clips, on
    random subsets of at most `per_class` clips per class (evaluate's "vs train" column, without FID)."""
    scorer = evaluate.Scorer(data.stats, data.config.actions, None, None, None)
    result = evaluate.compare(scorer.score(generated), scorer.score(real.train), per_class,
                              np.random.default_rng(seed))
    return {"mmd_avg": result["mmd_avg"], "mmd_seq": result["mmd_seq"]}


def measure_generator(generator: Generator, data: PoseData, real: RealSets, per_class: int, seed: int,
                      device: str = "cpu", references: bool = False, progress: bool = True,
                      mmd_per_class: int | None = None, skip_frames: int = 0,
                      batches: dict[str, SampleBatch] | None = None,
                      c2st_config: C2STConfig = C2STConfig()) -> dict:
    """C2ST, motion ratios against the training clips and latent occupancy of one generator and seed; with
    `mmd_per_class`, also the MMD against the training clips at that many clips per class. With
    `skip_frames` N, each clip is the last clip-length frames of an N frames longer sample: a window from the
    middle of a longer motion, as every real clip is, which the way a sample starts cannot help (model card,
    round 18: a start transient moved a C2ST from 0.76 to 0.61). `batches`: this seed's clips already drawn
    (evaluate.GeneratedClips), measured instead of drawing them again."""
    skip_frames = check_int(skip_frames, "skip_frames", 0, MAX_FRAMES - data.config.clip_frames)
    actions = data.config.actions
    if batches is not None and skip_frames:
        raise ValueError("clips drawn beforehand are measured whole: give either batches or skip_frames")
    if batches is None:
        batches = evaluate.generate_per_class(generator, actions, per_class, seed, progress, classify=False,
                                              frames=data.config.clip_frames + skip_frames)
    joints = {a: b.joints[:, skip_frames:] for a, b in batches.items()}
    latents = {a: b.latents[:, skip_frames:] for a, b in batches.items()}
    generated = {a: joints_to_vectors(j, data.stats).astype(np.float32) for a, j in joints.items()}
    real_stats = motion_statistics(real.motion_reference)
    generated_stats = motion_statistics(joints)
    mmd = {} if mmd_per_class is None else {"mmd": mmd_against_training(generated, real, data, mmd_per_class, seed)}
    return {**mmd,
            "c2st": c2st_rows(generated, real, actions, per_class, seed, device, references, c2st_config,
                              progress),
            "motion": {"generated": generated_stats, "real": real_stats,
                       "real_test_subjects": motion_statistics(real.motion_test_subjects),
                       "ratio": motion_ratios(generated_stats, real_stats)},
            "occupancy": {**latent_occupancy(np.concatenate(list(latents.values()))),
                          "per_class_clamp_share": {a: latent_occupancy(z)["clamp_share"]
                                                    for a, z in latents.items()}}}


def headline(measured: dict) -> dict:
    """The flat numbers to compare variants by."""
    model = measured["c2st"]["ActionGen"]
    walking = measured["motion"]["ratio"].get(STEP_CLASS, {})
    return {"c2st": model["accuracy"], "c2st_per_class": model["per_class"],
            **{f"walking_{k}_ratio": walking.get(k) for k in WALKING_HEADLINES},
            "clamp_share": measured["occupancy"]["clamp_share"],
            "walking_clamp_share": measured["occupancy"]["per_class_clamp_share"].get(STEP_CLASS),
            **measured.get("mmd", {})}


def evaluate_bundle(path: str | Path | None, data: PoseData | None = None, per_class: int = 1000, seed: int = 0,
                    device: str = "cpu", references: bool = False, progress: bool = True,
                    threads: int | None = 1, mmd_per_class: int | None = None, skip_frames: int = 0) -> dict:
    """Realism of the bundle at `path` (None: the shipped checkpoint) on `data` (None: the default data).

    Returns the headline numbers (c2st, c2st_per_class, walking_<statistic>_ratio for feet_speed,
    wrist_speed, feet_accel, wrist_accel, step_frequency and feet_speed_coupling, clamp_share,
    walking_clamp_share, runtime_s; with `mmd_per_class`, mmd_avg and mmd_seq against the training clips)
    and the full measurement under "details"; `references` adds the reference rows' C2ST to the details.
    `threads`: torch CPU threads while it runs (None: leave torch's setting). `skip_frames`: score windows that
    start this many frames into longer samples (see measure_generator)."""
    start = time.time()
    data = data if data is not None else load_pose_data(DataConfig())
    generator = Generator.load(path, device=device)
    with torch_threads(threads):
        real = RealSets.load(data)
        measured = measure_generator(generator, data, real, per_class, seed, str(generator.device), references,
                                     progress, mmd_per_class, skip_frames)
    return {**headline(measured), "runtime_s": round(time.time() - start, 1), "details": measured}


# ----------------------------------------------------------------------------- reporting

def mean_over_seeds(values: list[float | None]) -> dict | None:
    got = [v for v in values if v is not None]
    return {"mean": float(np.mean(got)), "std": float(np.std(got)), "values": got} if got else None


def summarise_seeds(per_seed: list[dict]) -> dict:
    """Mean, std and values over seeds of every number in the measurements of `measure_generator`."""
    first = per_seed[0]
    c2st = {row: {"accuracy": mean_over_seeds([m["c2st"][row]["accuracy"] for m in per_seed]),
                  "per_class": {a: mean_over_seeds([m["c2st"][row]["per_class"].get(a) for m in per_seed])
                                for a in first["c2st"][row]["per_class"]},
                  "m_test": first["c2st"][row]["m_test"], "m_fit": first["c2st"][row]["m_fit"],
                  "fits": len(first["c2st"][row]["fit_accuracies"])}
            for row in first["c2st"]}
    motion = {kind: {a: {k: mean_over_seeds([m["motion"][kind][a][k] for m in per_seed]) for k in stats}
                     for a, stats in first["motion"][kind].items()}
              for kind in ("generated", "real", "real_test_subjects", "ratio")}
    occupancy = {"clamp_share": mean_over_seeds([m["occupancy"]["clamp_share"] for m in per_seed]),
                 "dim_mean": np.mean([m["occupancy"]["dim_mean"] for m in per_seed], axis=0).tolist(),
                 "dim_std": np.mean([m["occupancy"]["dim_std"] for m in per_seed], axis=0).tolist(),
                 "per_class_clamp_share": {a: mean_over_seeds([m["occupancy"]["per_class_clamp_share"][a]
                                                               for m in per_seed])
                                           for a in first["occupancy"]["per_class_clamp_share"]},
                 "prior": first["occupancy"]["prior"]}
    return {"c2st": c2st, "motion": motion, "occupancy": occupancy}


def _cell(value: dict | None, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if len(value["values"]) < 2 or value["std"] == 0:  # one seed, or a real set that no seed changes
        return f"{value['mean']:.{digits}f}"
    return f"{value['mean']:.{digits}f} ± {value['std']:.{digits}f}"


RATIO_COLUMNS = (("feet_speed", "feet speed"), ("wrist_speed", "wrist speed"), ("all_speed", "all speed"),
                 ("feet_accel", "feet accel."), ("wrist_accel", "wrist accel."), ("all_accel", "all accel."),
                 ("bone_cv", "bone-length CV"), ("pose_spread", "pose spread"))
WALKING_COLUMNS = (("step_frequency", "step frequency"), ("feet_speed_coupling", "feet speed coupling"))


def to_markdown(summary: dict) -> str:
    """The C2ST table with its reference rows, the motion ratio table, Walking's absolute numbers and the
    latent occupancy, from `summarise_seeds`."""
    c2st = summary["c2st"]
    actions = list(next(iter(c2st.values()))["per_class"]) if c2st else []
    lines = ["| C2ST (accuracy; 0.5 = indistinguishable) | overall | " + " | ".join(actions) + " |",
             "|" + "---|" * (len(actions) + 2)]
    for row, result in c2st.items():
        lines.append(f"| {row} | {_cell(result['accuracy'])} | "
                     + " | ".join(_cell(result["per_class"].get(a), 2) for a in actions) + " |")
    for row, result in c2st.items():
        lines.append(f"| test / fit clips per class and side, {row} ({result['fits']} fits per seed) | | "
                     + " | ".join(f"{result['m_test'].get(a, 0)} / {result['m_fit'].get(a, 0)}" for a in actions)
                     + " |")
    motion = summary["motion"]
    columns = (*RATIO_COLUMNS, *WALKING_COLUMNS)
    lines += ["", "| Generated / real (training clips) | " + " | ".join(t for _, t in columns) + " |",
              "|" + "---|" * (len(columns) + 1)]
    for action, ratios in motion["ratio"].items():
        lines.append(f"| {action} | " + " | ".join(_cell(ratios.get(k), 2) for k, _ in columns) + " |")
    walking = STEP_CLASS
    if walking in motion["generated"]:
        lines += ["", f"| {walking}, absolute (dataset units per frame; Hz) | generated | real training clips "
                      "| real test subjects' clips |", "|---|---|---|---|"]
        for key, title in (*RATIO_COLUMNS, ("step_frequency", "step frequency (Hz)"),
                           ("feet_speed_coupling", "feet speed coupling (1 + r)")):
            lines.append(f"| {title} | " + " | ".join(_cell(motion[kind].get(walking, {}).get(key), 2)
                                                      for kind in ("generated", "real", "real_test_subjects")) + " |")
    occupancy = summary["occupancy"]
    lines += ["", f"Latent occupancy: {_cell(occupancy['clamp_share'], 3)} of coordinates at the clamp "
                  f"(|z| > {CLAMP_LEVEL}; the U[-1, 1] prior: {PRIOR_CLAMP_SHARE:.2f}); per-dimension mean "
                  + ", ".join(f"{v:+.2f}" for v in occupancy["dim_mean"]) + "; std "
                  + ", ".join(f"{v:.2f}" for v in occupancy["dim_std"]) + f" (prior 0, {PRIOR_STD:.2f}).", ""]
    return "\n".join(lines)


def one_line(summary: dict, runtime_s: float | None = None) -> str:
    """C2ST overall and for Walking, Walking's motion ratios and the clamp share, in one line."""
    model = summary["c2st"].get("ActionGen")
    walking = summary["motion"]["ratio"].get(STEP_CLASS, {})
    ratio = lambda k: f"{walking[k]['mean']:.2f}x" if walking.get(k) else "n/a"  # noqa: E731
    c2st = (f"C2ST {model['accuracy']['mean']:.3f} (Walking {_cell(model['per_class'].get(STEP_CLASS), 2)})"
            if model else "C2ST n/a")
    return (f"{c2st} | Walking feet {ratio('feet_speed')} wrists {ratio('wrist_speed')} speed, feet "
            f"{ratio('feet_accel')} wrists {ratio('wrist_accel')} accel., steps {ratio('step_frequency')}, "
            f"feet coupling {ratio('feet_speed_coupling')} | "
            f"clamp {summary['occupancy']['clamp_share']['mean']:.1%}"
            + ("" if runtime_s is None else f" | {runtime_s:.0f} s"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", default=None, help="bundle .json (default: the shipped assets/actiongen.json)")
    p.add_argument("--data-root", default=str(default_data_root()), help="unpacked Human3.6M h36m archive")
    p.add_argument("--cache-dir", default=None, help="projection cache (default: ~/.cache/actiongen)")
    p.add_argument("--train-subjects", type=int, nargs="+", default=list(DataConfig.train_subjects),
                   help="training subjects: the last is held out for the test, the one before is the reference "
                        "rows' unseen subject, the rest are fitted on")
    p.add_argument("--per-class", type=int, default=1000, help="generated clips per class")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    evaluate.add_c2st_fits_argument(p)
    p.add_argument("--skip-frames", type=int, default=0,
                   help="score clips cut from samples this many frames longer, from the end: windows from the middle "
                        "of a longer motion, like the real clips, which the way a sample starts cannot help")
    p.add_argument("--references", action="store_true",
                   help="also the reference rows: an unseen real subject as generated, and frozen real frames")
    p.add_argument("--device", default="cpu", help="device for generation and the classifier: cpu, cuda or auto")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads; 0 leaves torch's choice (one is fastest on a busy 2-core machine)")
    p.add_argument("--json", default=None, help="write the full results as JSON here")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if args.per_class < 4:
        p.error(f"--per-class must be at least 4; got {args.per_class}")
    if args.skip_frames < 0:
        p.error(f"--skip-frames must be at least 0; got {args.skip_frames}")
    evaluate.check_c2st_fits(p, args)
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    start = time.time()
    cfg = DataConfig(root=args.data_root, train_subjects=tuple(args.train_subjects),
                     **({"cache_dir": args.cache_dir} if args.cache_dir else {}))
    try:
        data = load_pose_data(cfg)
        generator = Generator.load(args.checkpoint, device=args.device)
    except (CheckpointError, H36MDataError) as err:
        raise SystemExit(f"error: {err}") from err
    with torch_threads(args.threads):
        real = RealSets.load(data)
        per_seed = [measure_generator(generator, data, real, args.per_class, seed, str(generator.device),
                                      args.references, not args.quiet, skip_frames=args.skip_frames,
                                      c2st_config=C2STConfig(fits=args.c2st_fits))
                    for seed in args.seeds]
    summary = summarise_seeds(per_seed)
    report = {"checkpoint": str(args.checkpoint or "assets/actiongen.json"), "seeds": args.seeds,
              "per_class": args.per_class, "c2st_fits": args.c2st_fits, "skip_frames": args.skip_frames,
              "subjects": asdict(real.subjects),
              "runtime_s": round(time.time() - start, 1), **summary, "per_seed": per_seed}
    print(one_line(summary, report["runtime_s"]))
    print(to_markdown(summary))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
