"""What the web app does for each request, free of gradio so it can be tested and benchmarked directly.

Checks raw input values (they may come from the API, not the UI widgets), samples through one generator per
process, caches recent results by their request (bounded LRU), builds the figures and writes export files.
`app.py` lays out the page and turns the ValueErrors raised here into readable `gr.Error`s.
"""
from __future__ import annotations

import math
import shutil
import tempfile
import threading
import weakref
from collections import OrderedDict
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from . import render
from .checkpoint import DEFAULT_BUNDLE, CheckpointError
from .generator import Generator, Sample
from .plots import figure_json, latent_path_figure, probability_figure, skeleton_figure
from .skeleton import ACTIONS, action_index

FRAMES_MIN, FRAMES_MAX, FRAMES_DEFAULT = 16, 300, 50
SEED_MAX = 2**32 - 1
STRIP_MIN, STRIP_MAX, STRIP_DEFAULT = 3, 9, 5
MODES = ("blend", "transition")
# In "transition" mode the class weights move from A to B over this share of the clip.
TRANSITION_SHARE = 0.25
DOWNLOAD_SUFFIXES = (".gif", ".mp4", ".npz", ".json")


# ----------------------------------------------------------------------------- input checking

def parse_number(value: Any, name: str, low: float, high: float, kind: str = "number") -> float:
    """A finite number in [low, high] from an int, float or numeric string; ValueError saying what is valid."""
    valid = f"{name} must be a {kind} from {low} to {high}"
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{valid}; got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{valid}; got {value!r}") from None
    if not math.isfinite(number) or not low <= number <= high:
        raise ValueError(f"{valid}; got {value!r}")
    return number


def parse_int(value: Any, name: str, low: int, high: int) -> int:
    number = parse_number(value, name, low, high, kind="whole number")
    if number != int(number):
        raise ValueError(f"{name} must be a whole number from {low} to {high}; got {value!r}")
    return int(number)


def parse_action(value: Any, name: str = "action") -> str:
    """The canonical spelling of an action name (case-insensitive)."""
    if not isinstance(value, str):
        raise ValueError(f"{name} must be one of {', '.join(ACTIONS)}; got {value!r}")
    try:
        return ACTIONS[action_index(value)]
    except ValueError:
        raise ValueError(f"unknown {name} {value!r}; valid actions: {', '.join(ACTIONS)}") from None


def parse_mode(value: Any) -> str:
    """"blend" or "transition"; the UI's label "transition A -> B" is accepted too."""
    key = str(value).strip().lower().split(" ")[0] if isinstance(value, str) else None
    if key not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}; got {value!r}")
    return key


@dataclass(frozen=True)
class Request:
    """Everything that determines one generated clip; hashable, so it is the cache key."""

    action: str
    seed: int
    frames: int = FRAMES_DEFAULT
    action_b: str | None = None  # mixing partner
    mix: float = 0.0  # share of action_b: blend weight, or how much of the clip comes after the switch
    mode: str = "blend"
    seed_b: int | None = None  # interpolation partner
    alpha: float = 0.0

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> "Request":
        """A checked Request from untrusted values (e.g. the JSON an API user sends to /export)."""
        if not isinstance(raw, Mapping):
            raise ValueError(f"a request must be a JSON object with keys {[f.name for f in fields(cls)]}; "
                             f"got {raw!r}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown request keys {unknown}; valid keys: {sorted(known)}")
        if "action" not in raw or "seed" not in raw:
            raise ValueError("a request needs at least 'action' and 'seed'")
        action_b, seed_b = raw.get("action_b"), raw.get("seed_b")
        # Without a partner these would change the cache key and file names but not the clip.
        if action_b is None and raw.get("mix", 0.0) != 0.0:
            raise ValueError("mix needs action_b, the action to mix with")
        if seed_b is None and raw.get("alpha", 0.0) != 0.0:
            raise ValueError("alpha needs seed_b, the seed to interpolate towards")
        return cls(
            action=parse_action(raw["action"]),
            seed=parse_int(raw["seed"], "seed", 0, SEED_MAX),
            frames=parse_int(raw.get("frames", FRAMES_DEFAULT), "frames", FRAMES_MIN, FRAMES_MAX),
            action_b=None if action_b is None else parse_action(action_b, "action_b"),
            mix=parse_number(raw.get("mix", 0.0), "mix", 0.0, 1.0),
            mode=parse_mode(raw.get("mode", "blend")),
            seed_b=None if seed_b is None else parse_int(seed_b, "seed_b", 0, SEED_MAX),
            alpha=parse_number(raw.get("alpha", 0.0), "alpha", 0.0, 1.0),
        )

    def to_dict(self) -> dict:
        return asdict(self)

    def transition_frames(self) -> tuple[int, int]:
        """(start, end) frame of the A -> B switch; it is centred so that a share `mix` of the clip is B."""
        width = max(2, round(TRANSITION_SHARE * self.frames))
        centre = (1.0 - self.mix) * (self.frames - 1)
        start = int(np.clip(round(centre - width / 2), 0, self.frames - 1 - width))
        return start, start + width

    def seeds_text(self) -> str:
        if self.seed_b is None:
            return f"seed {self.seed}"
        return f"seeds {self.seed} \u2192 {self.seed_b} at \u03b1 = {self.alpha:.2f}"

    def slug(self) -> str:
        """File-name stem unique to this request."""
        parts = [self.action.lower(), f"seed{self.seed}", f"{self.frames}f"]
        if self.action_b is not None:
            parts += [self.mode, self.action_b.lower(), f"mix{self.mix:.3f}"]
        if self.seed_b is not None:
            parts += [f"to{self.seed_b}", f"alpha{self.alpha:.3f}"]
        return "actiongen_" + "_".join(parts)


# ----------------------------------------------------------------------------- results

@dataclass
class Result:
    """One answered request: the sample and its figures as JSON strings (what the browser receives)."""

    request: Request
    sample: Sample
    skeleton: str
    latent_path: str
    probabilities: str
    summary: str
    strip: str | None = None  # interpolation strip, only for /interpolate


class LRUCache:
    """A small thread-safe least-recently-used map; `on_evict(value)` runs for values that drop out."""

    def __init__(self, size: int, on_evict: Callable[[Any], None] | None = None) -> None:
        self.size = size
        self.on_evict = on_evict
        self.items: OrderedDict = OrderedDict()
        self.lock = threading.Lock()

    def get_or_compute(self, key: Any, compute: Callable[[], Any]) -> Any:
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        # Computed outside the lock so different requests run in parallel; an identical request that
        # raced us computes the same (deterministic) value and the first one stored wins.
        value = compute()
        dropped = []
        with self.lock:
            if key in self.items:
                dropped.append(value)
                value = self.items[key]
            else:
                self.items[key] = value
                while len(self.items) > self.size:
                    dropped.append(self.items.popitem(last=False)[1])
        if self.on_evict:
            for old in dropped:
                self.on_evict(old)
        return value

    def __len__(self) -> int:
        return len(self.items)


def probabilities_summary(sample: Sample, actions: tuple[str, ...]) -> str:
    top = np.argsort(sample.probabilities)[::-1][:3]
    guesses = ", ".join(f"{actions[i]} {100 * sample.probabilities[i]:.0f}%" for i in top)
    return f"classifier: {guesses}"


class ActionGenService:
    """The app's back end: one generator, cached results and export files.

    `checkpoint` is a bundle path (None: the shipped assets/actiongen.json). A missing checkpoint does not
    stop the app from starting: `status()` says what is missing and every request raises CheckpointError
    with that message, until the file appears. `gpu` wraps the model call (spaces.GPU on ZeroGPU Spaces).
    """

    def __init__(self, checkpoint: Path | str | None = None, device: str = "auto", cache_size: int = 128,
                 export_cache_size: int = 64, work_dir: Path | str | None = None,
                 gpu: Callable[[Callable], Callable] | None = None) -> None:
        self.checkpoint = Path(checkpoint) if checkpoint else DEFAULT_BUNDLE
        self.device = device
        self.results = LRUCache(cache_size)
        self.exports = LRUCache(export_cache_size, on_evict=lambda files: shutil.rmtree(
            next(iter(files.values())).parent, ignore_errors=True))
        if work_dir is None:
            work_dir = tempfile.mkdtemp(prefix="actiongen-app-")
            weakref.finalize(self, shutil.rmtree, work_dir, ignore_errors=True)  # our own folder: removed with us
        self.work_dir = Path(work_dir)
        self.load_lock = threading.Lock()
        self._generator: Generator | None = None
        self.sample_clip = gpu(self._sample_clip) if gpu else self._sample_clip
        self.sample_strip = gpu(self._sample_strip) if gpu else self._sample_strip

    # -- the model

    @property
    def generator(self) -> Generator:
        """Loaded on first use and then reused; raises CheckpointError naming the missing file."""
        if self._generator is None:
            with self.load_lock:
                if self._generator is None:
                    self._generator = Generator.load(self.checkpoint, device=self.device)
        return self._generator

    def status(self) -> str | None:
        """None when the model is loaded, else a message saying what is missing and how to fix it."""
        try:
            self.generator
        except CheckpointError as err:
            return f"No model loaded. {err}. To use another bundle, set ACTIONGEN_CHECKPOINT to its .json path."
        return None

    def _sample_clip(self, request: Request) -> Sample:
        r = request
        action: str | dict[str, float] = r.action
        to_action, transition = None, None
        if r.action_b is not None and r.action_b != r.action and r.mix > 0:
            if r.mode == "blend":
                action = {r.action: 1.0 - r.mix, r.action_b: r.mix}
            else:
                to_action, transition = r.action_b, r.transition_frames()
        return self.generator.sample(action, r.seed, r.frames, to_action=to_action, transition=transition,
                                     seed_b=r.seed_b, alpha=r.alpha if r.seed_b is not None else 0.0)

    def _sample_strip(self, action: str, seed_a: int, seed_b: int, steps: int, frames: int) -> list[Sample]:
        return self.generator.interpolation_strip(action, seed_a, seed_b, steps=steps, frames=frames)

    # -- requests

    def answer(self, request: Request, strip_steps: int = 0) -> Result:
        """The cached result of a checked request, with an interpolation strip of `strip_steps` clips if > 0."""
        return self.results.get_or_compute((request, strip_steps), lambda: self._answer(request, strip_steps))

    def _answer(self, request: Request, strip_steps: int) -> Result:
        sample = self.sample_clip(request)
        actions = self.generator.actions
        title = f"{sample.action_label}, {request.seeds_text()}"
        strip = None
        if strip_steps:
            clips = self.sample_strip(request.action, request.seed, request.seed_b, strip_steps, request.frames)
            strip = figure_json(skeleton_figure(
                np.stack([clip.joints for clip in clips]), sample.fps,
                title=f"{request.action}: seed {request.seed} \u2192 seed {request.seed_b}",
                captions=[f"\u03b1 = {clip.alpha:.2f}" for clip in clips],
                revision=f"strip-{request.slug()}-{strip_steps}"))
        return Result(
            request=request,
            sample=sample,
            skeleton=figure_json(skeleton_figure(sample.joints, sample.fps, title=title, revision=request.slug())),
            latent_path=figure_json(latent_path_figure(sample.latents, sample.fps)),
            probabilities=figure_json(probability_figure(sample.probabilities, actions,
                                                         sample.class_weights.mean(axis=0))),
            summary=f"**{title}** \u2014 {request.frames} frames, {request.frames / sample.fps:.1f} s; "
                    f"{probabilities_summary(sample, actions)}",
            strip=strip,
        )

    def generate(self, action: Any, seed: Any, frames: Any = FRAMES_DEFAULT) -> Result:
        return self.answer(Request(parse_action(action), parse_int(seed, "seed", 0, SEED_MAX),
                                   parse_int(frames, "frames", FRAMES_MIN, FRAMES_MAX)))

    def interpolate(self, action: Any, seed_a: Any, seed_b: Any, alpha: Any, steps: Any = STRIP_DEFAULT,
                    frames: Any = FRAMES_DEFAULT) -> Result:
        request = Request(parse_action(action), parse_int(seed_a, "seed", 0, SEED_MAX),
                          parse_int(frames, "frames", FRAMES_MIN, FRAMES_MAX),
                          seed_b=parse_int(seed_b, "seed_b", 0, SEED_MAX),
                          alpha=parse_number(alpha, "alpha", 0.0, 1.0))
        return self.answer(request, strip_steps=parse_int(steps, "steps", STRIP_MIN, STRIP_MAX))

    def mix(self, action_a: Any, action_b: Any, mix: Any, mode: Any, seed: Any,
            frames: Any = FRAMES_DEFAULT) -> Result:
        request = Request(parse_action(action_a), parse_int(seed, "seed", 0, SEED_MAX),
                          parse_int(frames, "frames", FRAMES_MIN, FRAMES_MAX),
                          action_b=parse_action(action_b, "action_b"), mix=parse_number(mix, "mix", 0.0, 1.0),
                          mode=parse_mode(mode))
        return self.answer(request)

    def export(self, raw_request: Mapping[str, Any] | Request) -> dict[str, Path]:
        """GIF, MP4, NPZ and JSON files of a request's clip, keyed by suffix (".gif", ...)."""
        request = raw_request if isinstance(raw_request, Request) else Request.parse(raw_request)
        return self.exports.get_or_compute(request, lambda: self._export(request))

    def _export(self, request: Request) -> dict[str, Path]:
        sample = self.answer(request).sample
        # A fresh directory per computation: a concurrent identical request never writes into our files.
        folder = Path(tempfile.mkdtemp(prefix="export-", dir=self.work_dir))
        return {suffix: render.export(sample, folder / f"{request.slug()}{suffix}") for suffix in DOWNLOAD_SUFFIXES}
