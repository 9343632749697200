"""The shipped model bundle: `<name>.safetensors` (weights, no pickle) + `<name>.json` (everything else).

The JSON holds the architecture, action names, joint order, coordinates per joint ("dims": 2 for the
camera view, 3 for world-frame millimetres; absent means 2), normalisation statistics, data provenance
and training record, so inference needs nothing but these two files.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from .data import NormStats
from .models import ActionClassifier, LatentTransitionGenerator, ModelConfig, PoseDecoder
from .skeleton import JOINT_NAMES, SPACE_DIMS, dims_of_pose_dim, pose_dim_of

FORMAT = "actiongen-bundle/1"
DEFAULT_BUNDLE = Path(__file__).resolve().parents[1] / "assets" / "actiongen.json"
# The shipped models by name: the paper's 2D camera-view model and the 3D world-frame model.
DEFAULT_BUNDLES: dict[str, Path] = {"2d": DEFAULT_BUNDLE, "3d": DEFAULT_BUNDLE.with_name("actiongen3d.json")}


class CheckpointError(ValueError):
    """A bundle is missing, corrupt, or does not match the code that loads it."""


@dataclass
class Bundle:
    config: ModelConfig
    stats: NormStats
    actions: tuple[str, ...]
    transition: LatentTransitionGenerator  # holds the pose decoder as `.decoder`
    classifier: ActionClassifier
    meta: dict = field(default_factory=dict)

    @property
    def decoder(self) -> PoseDecoder:
        return self.transition.decoder

    @property
    def dims(self) -> int:
        """Coordinates per joint: 2 (camera view) or 3 (world frame, mm)."""
        return dims_of_pose_dim(self.config.pose_dim)


def default_bundle(model: str) -> Path:
    """The shipped bundle of a model name ("2d" or "3d", case-insensitive)."""
    key = str(model).strip().lower()
    if key not in DEFAULT_BUNDLES:
        raise CheckpointError(f"unknown model {model!r}; valid models: {', '.join(DEFAULT_BUNDLES)}")
    return DEFAULT_BUNDLES[key]


def build_models(cfg: ModelConfig) -> tuple[LatentTransitionGenerator, ActionClassifier]:
    return LatentTransitionGenerator(cfg, PoseDecoder(cfg)), ActionClassifier(cfg)


def bundle_paths(path: Path | str | None) -> tuple[Path, Path]:
    """(json, safetensors) paths for a bundle given as either file or a directory holding one."""
    path = Path(path) if path is not None else DEFAULT_BUNDLE
    if path.is_dir():
        found = sorted(path.glob("*.json"))
        if not found:
            raise CheckpointError(f"{path}: no bundle .json found in this directory")
        path = found[0]
    stem = path.with_suffix("")
    return stem.with_suffix(".json"), stem.with_suffix(".safetensors")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temp file in the same directory and rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp creates owner-only files; a shipped bundle must be readable by all
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_bundle(path: Path | str, bundle: Bundle) -> tuple[Path, Path]:
    json_path, weights_path = bundle_paths(Path(path).with_suffix(".json"))
    tensors = {f"transition.{k}": v for k, v in bundle.transition.state_dict().items()}
    tensors.update({f"classifier.{k}": v for k, v in bundle.classifier.state_dict().items()})
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    atomic_write_bytes(weights_path, save(tensors))
    doc = {
        "format": FORMAT,
        "weights": weights_path.name,
        "model": bundle.config.to_dict(),
        "actions": list(bundle.actions),
        "joints": list(JOINT_NAMES),
        "dims": bundle.dims,
        "stats": bundle.stats.to_dict(),
        **bundle.meta,
    }
    atomic_write_bytes(json_path, json.dumps(doc, indent=1).encode())
    return json_path, weights_path


def read_bundle_json(json_path: Path, expected_format: str, missing_hint: str) -> dict:
    """The JSON half of a bundle, refused with a clear message when missing, malformed or of another format."""
    if not json_path.is_file():
        raise CheckpointError(f"{json_path}: {missing_hint}")
    try:
        doc = json.loads(json_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{json_path}: not valid JSON ({err})") from err
    if not isinstance(doc, dict) or doc.get("format") != expected_format:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise CheckpointError(f"{json_path}: format {found!r}; expected {expected_format!r}")
    return doc


def load_bundle(path: Path | str | None = None, device: torch.device | str = "cpu") -> Bundle:
    """Load and validate a bundle; models come back in eval mode on `device`."""
    json_path, weights_path = bundle_paths(path)
    doc = read_bundle_json(json_path, FORMAT, "checkpoint config not found (train one with "
                           "train/stage2_sequence.py or pass the path of a bundle .json)")
    if tuple(doc.get("joints", ())) != JOINT_NAMES:
        raise CheckpointError(f"{json_path}: joint order {doc.get('joints')} differs from this code's {list(JOINT_NAMES)}")
    try:
        cfg = ModelConfig.from_dict(doc["model"])
        stats = NormStats.from_dict(doc["stats"])
        actions = tuple(doc["actions"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{json_path}: bad or missing config entry ({err})") from err
    if len(actions) != cfg.num_classes:
        raise CheckpointError(f"{json_path}: {len(actions)} action names for {cfg.num_classes} classes")
    dims = doc.get("dims", 2)
    if dims not in SPACE_DIMS or not cfg.pose_dim == stats.pose_dim == pose_dim_of(dims):
        raise CheckpointError(f"{json_path}: dims {dims!r} (valid: {SPACE_DIMS}) does not match the model's pose size "
                              f"{cfg.pose_dim} and the statistics' {stats.pose_dim}")
    weights_path = json_path.parent / doc.get("weights", weights_path.name)
    if not weights_path.is_file():
        raise CheckpointError(f"{weights_path}: weights file not found (expected next to {json_path.name})")
    try:
        tensors = load_file(weights_path)
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{weights_path}: corrupt or unreadable safetensors file ({err})") from err
    transition, classifier = build_models(cfg)
    for prefix, module in (("transition.", transition), ("classifier.", classifier)):
        expected = module.state_dict()
        got = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
        if missing or extra:
            raise CheckpointError(f"{weights_path}: tensor names do not match the {prefix[:-1]} model "
                                  f"(missing {missing[:5]}, unexpected {extra[:5]})")
        wrong = [f"{k}: {tuple(got[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
                 if got[k].shape != v.shape]
        if wrong:
            raise CheckpointError(f"{weights_path}: tensor shapes do not match the config: {wrong[:5]}")
        module.load_state_dict(got)
        module.to(device).eval()
    meta = {k: v for k, v in doc.items() if k not in {"format", "weights", "model", "actions", "joints", "dims", "stats"}}
    return Bundle(cfg, stats, actions, transition, classifier, meta)
