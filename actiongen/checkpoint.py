"""The shipped model bundle: `<name>.safetensors` (weights, no pickle) + `<name>.json` (everything else).

The JSON holds the architecture, action names, joint order, coordinates per joint ("dims": 2 for the
camera view, 3 for world-frame millimetres; absent means 2), normalisation statistics, data provenance
and training record, so inference needs nothing but these two files.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Mapping, TypeVar

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from .data import NormStats
from .diffusion import LatentPathDiffusion
from .models import ActionClassifier, LatentTransitionGenerator, ModelConfig, PoseDecoder, PoseRefiner
from .skeleton import JOINT_NAMES, SPACE_DIMS, dims_of_pose_dim, pose_dim_of

FORMAT = "actiongen-bundle/1"
DEFAULT_BUNDLE = Path(__file__).resolve().parents[1] / "assets" / "actiongen.json"
# The shipped models by name: the paper's 2D camera-view model and the 3D world-frame model.
DEFAULT_BUNDLES: dict[str, Path] = {"2d": DEFAULT_BUNDLE, "3d": DEFAULT_BUNDLE.with_name("actiongen3d.json")}
# Caps on what a bundle may ask for, checked before any network is built: every layer size of the shipped
# models is below 2**11, and its weights take 9 MB; a bad file must not make the loader allocate gigabytes.
MAX_CONFIG_SIZE = 2**16
MAX_WEIGHT_BYTES = 2**30
MAX_FPS = 1000.0
MAX_JSON_BYTES = 2**24  # the shipped bundle's JSON, training record included, takes 3 kB
FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")
INTEGER_DTYPES = ("I8", "I16", "I32", "I64", "U8")  # only BatchNorm's step counter is an integer

ConfigT = TypeVar("ConfigT")


class CheckpointError(ValueError):
    """A bundle is missing, corrupt, or does not match the code that loads it."""


@dataclass
class Bundle:
    config: ModelConfig
    stats: NormStats
    actions: tuple[str, ...]
    transition: LatentTransitionGenerator | LatentPathDiffusion  # holds the pose decoder as `.decoder`
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


def build_models(cfg: ModelConfig) -> tuple[LatentTransitionGenerator | LatentPathDiffusion, ActionClassifier]:
    """The transition model the config names (`transition`), around a pose decoder, and the classifier."""
    if cfg.transition == "diffusion":
        refiner = PoseRefiner(cfg) if cfg.pose_refiner else None
        return LatentPathDiffusion(cfg, PoseDecoder(cfg), refiner), ActionClassifier(cfg)
    if cfg.pose_refiner:  # the LSTM walk's stage may fine-tune the decoder, which the refiner was not trained on
        raise ValueError("pose_refiner is for the diffusion transition; the lstm transition has none")
    return LatentTransitionGenerator(cfg, PoseDecoder(cfg)), ActionClassifier(cfg)


def bundle_paths(path: Path | str | None) -> tuple[Path, Path]:
    """(json, safetensors) paths for a bundle given as either file or a directory holding one."""
    path = Path(path) if path is not None else DEFAULT_BUNDLE
    if path.is_dir():
        found = sorted(path.glob("*.json"))
        if not found:
            raise CheckpointError(f"{path.name}: no bundle .json found in this directory")
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
    """The JSON half of a bundle, refused with a clear message when missing, malformed, of another format, or
    when its shared entries (weights, model, actions, stats) have the wrong type. Messages name the file only:
    the app forwards them to its users, who must not see the server's paths."""
    if not json_path.is_file():
        raise CheckpointError(f"{json_path.name}: {missing_hint}")
    if json_path.stat().st_size > MAX_JSON_BYTES:
        raise CheckpointError(f"{json_path.name}: {json_path.stat().st_size:,} bytes; a bundle's JSON has at most "
                              f"{MAX_JSON_BYTES:,}")
    try:
        doc = json.loads(json_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise CheckpointError(f"{json_path.name}: not valid JSON ({type(err).__name__}: {err})") from err
    if not isinstance(doc, dict) or doc.get("format") != expected_format:
        found = described(doc.get("format")) if isinstance(doc, dict) else f"none (the file holds {described(doc)})"
        raise CheckpointError(f"{json_path.name}: format {found}; expected {expected_format!r}")
    try:
        check_entry_types(doc)
    except ValueError as err:
        raise CheckpointError(f"{json_path.name}: {err}") from err
    return doc


def check_entry_types(doc: Mapping[str, object]) -> None:
    """ValueError naming the first entry that is missing or of the wrong type."""
    for key, kind in (("model", dict), ("actions", list), ("stats", dict)):
        if key not in doc:
            raise ValueError(f"missing entry {key!r}")
        if not isinstance(doc[key], kind):
            raise ValueError(f"entry {key!r} must be a JSON {'object' if kind is dict else 'array'}; "
                             f"got {described(doc[key])}")
    weights = doc.get("weights", "weights.safetensors")
    # A bare file name: the weights must lie next to the JSON, never elsewhere on the server.
    if not (isinstance(weights, str) and weights.endswith(".safetensors") and len(weights) <= 255
            and Path(weights).name == weights):
        raise ValueError(f"entry 'weights' must be the file name of the .safetensors file beside the JSON; "
                         f"got {described(weights)}")
    actions = doc["actions"]
    if not actions or not all(isinstance(a, str) and a for a in actions) or len(set(actions)) != len(actions):
        raise ValueError("entry 'actions' must be a non-empty list of distinct action names")


def described(value: object) -> str:
    """A JSON value as messages show it: short scalars as written, anything else by its type, so that a
    huge value is never echoed back."""
    if value is None:
        return "null"
    if isinstance(value, (bool, int, float, str)) and len(repr(value)) <= 40:
        return repr(value)
    kinds = {str: "a long string", int: "a huge number", list: "an array", dict: "an object"}
    size = f" of {len(value)} entries" if isinstance(value, (list, dict)) else ""
    return kinds.get(type(value), type(value).__name__) + size


def config_from_dict(cls: type[ConfigT], raw: Mapping[str, object]) -> ConfigT:
    """A config dataclass (ModelConfig, RecognizerConfig) from JSON: each given field must have its default's
    type (a tuple: a list of finite numbers), and every integer (all are layer sizes or counts) lie in [1, MAX_CONFIG_SIZE]."""
    for spec in fields(cls):  # type: ignore[arg-type]
        if spec.name not in raw:
            continue
        value, kind = raw[spec.name], type(spec.default)
        if kind is bool:
            valid = isinstance(value, bool)
        elif kind is int:
            valid = isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_CONFIG_SIZE
        elif kind is float:
            valid = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        elif kind is tuple:  # of numbers, as JSON writes them: a list
            valid = isinstance(value, list) and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
        else:
            valid = isinstance(value, kind)
        if not valid:
            wanted = {int: f"an integer in [1, {MAX_CONFIG_SIZE}]", tuple: "a list of finite numbers"}.get(
                kind, f"a {kind.__name__}")
            raise ValueError(f"model entry {spec.name!r} must be {wanted}; got {described(value)}")
    return cls.from_dict(dict(raw))  # type: ignore[attr-defined]


def check_fps(value: object) -> float:
    """The bundle's frame rate: a finite number in (0, MAX_FPS]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= MAX_FPS:
        raise ValueError(f"entry 'fps' must be a number in (0, {MAX_FPS:g}]; got {described(value)}")
    return float(value)


def expected_tensors(cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """The bundle's tensor names with shape and dtype, as storage-less tensors: building the models on the
    meta device allocates nothing, however large the config."""
    with torch.device("meta"):
        transition, classifier = build_models(cfg)
    tensors = {f"transition.{k}": v for k, v in transition.state_dict().items()}
    tensors.update({f"classifier.{k}": v for k, v in classifier.state_dict().items()})
    return tensors


def read_bundle_weights(json_path: Path, doc: Mapping[str, object], expected: Mapping[str, torch.Tensor]
                        ) -> dict[str, torch.Tensor]:
    """The weights of the bundle whose JSON is `doc`, refused when the expected tensors (storage-less, see
    `expected_tensors`) would take more than MAX_WEIGHT_BYTES, before the file is opened."""
    weight_bytes = sum(t.numel() * 4 for t in expected.values())
    if weight_bytes > MAX_WEIGHT_BYTES:
        raise CheckpointError(f"{json_path.name}: the model config asks for {weight_bytes / 2**30:.1f} GiB of "
                              f"weights; at most {MAX_WEIGHT_BYTES / 2**30:.0f} GiB is allowed")
    weights_path = json_path.parent / doc.get("weights", json_path.with_suffix(".safetensors").name)
    if not weights_path.is_file():
        raise CheckpointError(f"{weights_path.name}: weights file not found (expected next to {json_path.name})")
    return read_weights(weights_path, expected)


def read_weights(weights_path: Path, expected: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, after checking from its header alone (no tensor read yet) that
    names, shapes and dtypes are those of `expected`: floating where the model is floating. Non-finite
    values are refused too."""
    try:
        with safe_open(weights_path, framework="pt") as f:
            header = {name: (tuple(f.get_slice(name).get_shape()), f.get_slice(name).get_dtype())
                      for name in f.keys()}
            problems = header_problems(header, expected)
            if problems:
                raise CheckpointError(f"{weights_path.name}: {problems}")
            tensors = {name: f.get_tensor(name) for name in expected}
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{weights_path.name}: corrupt or unreadable safetensors file ({err})") from err
    non_finite = [name for name, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if non_finite:
        raise CheckpointError(f"{weights_path.name}: non-finite values (NaN or infinity) in {non_finite[:5]}")
    return tensors


def header_problems(header: Mapping[str, tuple[tuple[int, ...], str]], expected: Mapping[str, torch.Tensor]
                    ) -> str:
    """What differs between a safetensors header ({name: (shape, dtype)}) and the expected tensors; "" if
    nothing does."""
    missing, extra = sorted(set(expected) - set(header)), sorted(set(header) - set(expected))
    if missing or extra:
        return f"tensor names do not match the model (missing {missing[:5]}, unexpected {extra[:5]})"
    wrong = [f"{k}: {header[k][0]} != {tuple(v.shape)}" for k, v in expected.items() if header[k][0] != v.shape]
    if wrong:
        return f"tensor shapes do not match the config: {wrong[:5]}"
    dtypes = [f"{k}: {header[k][1]}" for k, v in expected.items()
              if header[k][1] not in (FLOAT_DTYPES if v.is_floating_point() else INTEGER_DTYPES)]
    if dtypes:
        return f"tensor dtypes are not floating point ({', '.join(FLOAT_DTYPES)}): {dtypes[:5]}"
    return ""


def load_bundle(path: Path | str | None = None, device: torch.device | str = "cpu") -> Bundle:
    """Load and validate a bundle; models come back in eval mode on `device`. Every size is checked against
    caps and the weights' header before a network is built."""
    json_path, _ = bundle_paths(path)
    doc = read_bundle_json(json_path, FORMAT, "checkpoint config not found (train one with "
                           "train/stage2_sequence.py or pass the path of a bundle .json)")
    if doc.get("joints") != list(JOINT_NAMES):
        found = doc.get("joints")
        found = found if isinstance(found, list) and len(str(found)) <= 300 else described(found)
        raise CheckpointError(f"{json_path.name}: joint order {found} differs from this code's {list(JOINT_NAMES)}")
    try:
        cfg = config_from_dict(ModelConfig, doc["model"])
        stats = NormStats.from_dict(doc["stats"])
        if "fps" in doc:
            check_fps(doc["fps"])
        expected = expected_tensors(cfg)  # the models' own checks, e.g. of the head's name
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{json_path.name}: bad or missing config entry ({err})") from err
    actions = tuple(doc["actions"])
    if len(actions) != cfg.num_classes:
        raise CheckpointError(f"{json_path.name}: {len(actions)} action names for {cfg.num_classes} classes")
    dims = doc.get("dims", 2)
    if dims not in SPACE_DIMS or not cfg.pose_dim == stats.pose_dim == pose_dim_of(dims):
        raise CheckpointError(f"{json_path.name}: dims {described(dims)} (valid: {SPACE_DIMS}) does not match the "
                              f"model's pose size {cfg.pose_dim} and the statistics' {stats.pose_dim}")
    tensors = read_bundle_weights(json_path, doc, expected)
    transition, classifier = build_models(cfg)
    for prefix, module in (("transition.", transition), ("classifier.", classifier)):
        module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
        module.to(device).eval()
    meta = {k: v for k, v in doc.items() if k not in {"format", "weights", "model", "actions", "joints", "dims", "stats"}}
    return Bundle(cfg, stats, actions, transition, classifier, meta)
