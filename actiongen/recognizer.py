"""An action recogniser trained on real clips only, so generated clips are graded by a network that never
saw the generator (the bundle's own classifier is trained together with it).

Its penultimate layer gives the clip features for FID, diversity and multimodality. Stored like the
generator bundle: `recognizer.safetensors` (weights) + `recognizer.json` (config, actions, stats, record).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save
from torch import nn

from .checkpoint import (CheckpointError, atomic_write_bytes, bundle_paths, config_from_dict, read_bundle_json,
                         read_bundle_weights)
from .data import NormStats
from .models import motion_features
from .skeleton import ACTIONS, POSE_DIM

FORMAT = "actiongen-recognizer/1"
DEFAULT_RECOGNIZER = Path(__file__).resolve().parents[1] / "assets" / "recognizer.json"


@dataclass(frozen=True)
class RecognizerConfig:
    pose_dim: int = POSE_DIM
    num_classes: int = len(ACTIONS)
    hidden: int = 128
    feature_dim: int = 128
    dropout: float = 0.2

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RecognizerConfig":
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown recogniser config keys {sorted(unknown)}; valid: "
                             f"{sorted(cls.__dataclass_fields__)}")
        return cls(**d)


class ActionRecognizer(nn.Module):
    """Bidirectional GRU over [x_t, x_{t+1} - x_t]; mean over time and both final states -> features
    (Linear + ReLU) -> logits."""

    def __init__(self, cfg: RecognizerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.gru = nn.GRU(2 * cfg.pose_dim, cfg.hidden, batch_first=True, bidirectional=True)
        self.to_features = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(4 * cfg.hidden, cfg.feature_dim),
                                         nn.ReLU())
        self.to_logits = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(cfg.feature_dim, cfg.num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, 30) normalised clips -> (B, feature_dim)."""
        out, h = self.gru(motion_features(x))
        return self.to_features(torch.cat([out.mean(dim=1), h[0], h[1]], dim=-1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_logits(self.features(x))


@dataclass
class Recognizer:
    """The network with what it needs to be used on clips: the actions and the normalisation it expects."""

    model: ActionRecognizer
    stats: NormStats
    actions: tuple[str, ...]
    meta: dict = field(default_factory=dict)

    @torch.no_grad()
    def predict(self, clips: np.ndarray, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
        """Features (N, F) and logits (N, C) of clips (N, T, 30) normalised with `self.stats`."""
        self.model.eval()
        features, logits = [], []
        for start in range(0, len(clips), batch_size):
            x = torch.as_tensor(np.asarray(clips[start:start + batch_size], dtype=np.float32))
            f = self.model.features(x)
            features.append(f.numpy())
            logits.append(self.model.to_logits(f).numpy())
        if not features:
            return np.empty((0, self.model.cfg.feature_dim)), np.empty((0, len(self.actions)))
        return np.concatenate(features), np.concatenate(logits)


def save_recognizer(path: Path | str, recognizer: Recognizer) -> tuple[Path, Path]:
    json_path, weights_path = bundle_paths(Path(path).with_suffix(".json"))
    tensors = {k: v.detach().cpu().contiguous() for k, v in recognizer.model.state_dict().items()}
    atomic_write_bytes(weights_path, save(tensors))
    doc = {"format": FORMAT, "weights": weights_path.name, "model": recognizer.model.cfg.to_dict(),
           "actions": list(recognizer.actions), "stats": recognizer.stats.to_dict(), **recognizer.meta}
    atomic_write_bytes(json_path, json.dumps(doc, indent=1).encode())
    return json_path, weights_path


def load_recognizer(path: Path | str | None = None) -> Recognizer:
    """Load a recogniser (default `assets/recognizer.json`) in eval mode on the CPU, with the checks of the
    model bundle: types, sizes and the weights' header before the network is built."""
    json_path, _ = bundle_paths(path if path is not None else DEFAULT_RECOGNIZER)
    doc = read_bundle_json(json_path, FORMAT, "recogniser not found (train one with python -m train.train_recognizer)")
    try:
        cfg = config_from_dict(RecognizerConfig, doc["model"])
        stats = NormStats.from_dict(doc["stats"])
        with torch.device("meta"):  # shapes only, nothing allocated
            expected = ActionRecognizer(cfg).state_dict()
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{json_path.name}: bad recogniser files ({type(err).__name__}: {err})") from err
    actions = tuple(doc["actions"])
    if len(actions) != cfg.num_classes:
        raise CheckpointError(f"{json_path.name}: {len(actions)} action names for {cfg.num_classes} classes")
    tensors = read_bundle_weights(json_path, doc, expected)
    model = ActionRecognizer(cfg)
    model.load_state_dict(tensors)
    meta = {k: v for k, v in doc.items() if k not in {"format", "weights", "model", "actions", "stats"}}
    return Recognizer(model.eval(), stats, actions, meta)
