"""What the web app does for each request, free of gradio so it can be tested and benchmarked directly.

The page has one state, `PageState` (action, seed, frames, what to show: one action, a blend or switch to a
second action, or an interpolation towards a second seed, the strip size, and the model: 2D or 3D); every
control changes it and every view and download is drawn from it. This module checks raw input values (they may come from the API,
not the UI widgets; long values are refused and never echoed whole), samples through one generator per
process, caches recent results (bounded LRUs: results, galleries and export files), builds the figures and
writes export files. `app.py` lays out the page and turns the ValueErrors raised here into readable
`gr.Error`s.
"""
from __future__ import annotations

import json
import math
import re
import shutil
import tempfile
import threading
import weakref
from collections import OrderedDict
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from . import render
from .checkpoint import DEFAULT_BUNDLES, CheckpointError
from .generator import Generator, Sample
from .plots import figure_json, latent_path_figure, probability_figure, skeleton_figure, skeleton_figure_3d
from .views import drawable
from .skeleton import ACTIONS, action_index

FRAMES_MIN, FRAMES_MAX, FRAMES_DEFAULT = 16, 300, 50
SEED_MAX = 2**32 - 1
STRIP_MIN, STRIP_MAX, STRIP_DEFAULT = 3, 9, 5
MODES = ("blend", "transition")
# What the main view shows: one action, A blended with B, A switching to B, or seed interpolated towards seed B.
VIEW_MODES = ("one", "blend", "transition", "interpolate")
GALLERY_SIZE, GALLERY_COLUMNS = 9, 3
MAX_TEXT = 100  # longer strings are refused before any parsing (no action name or number is this long)
# In "transition" mode the class weights move from A to B over this share of the clip.
TRANSITION_SHARE = 0.25
DOWNLOAD_SUFFIXES = (".gif", ".mp4", ".npz", ".json")
DOWNLOAD_SUFFIXES_3D = DOWNLOAD_SUFFIXES + (".bvh",)
MODELS = tuple(DEFAULT_BUNDLES)  # "2d": the paper's camera-view model; "3d": world-frame joints in mm
# Why the strip and gallery of a 3D clip are flat: they are drawn by the page's SVG player.
OBLIQUE_NOTE = ("Drag the 3D view to turn it, even while it plays; the strip and the seeds gallery draw the "
                "3D clips from the fixed oblique view of the GIF.")
PLAYER_JS_PATH = Path(__file__).with_name("app_player.js")  # the page's player, loaded by app.py


# ----------------------------------------------------------------------------- input checking

def shown(value: Any, limit: int = 40) -> str:
    """repr of a value for an error message, cut to `limit` characters: a huge value is never echoed whole."""
    text = repr(value)
    if len(text) <= limit:
        return text
    size = f"{len(value)} characters" if isinstance(value, (str, bytes)) else type(value).__name__
    return f"{text[:limit]}... ({size})"


def check_length(value: Any, name: str) -> None:
    if isinstance(value, (str, bytes)) and len(value) > MAX_TEXT:
        raise ValueError(f"{name} is too long ({len(value)} characters; at most {MAX_TEXT})")


_ABSOLUTE_PATH = re.compile(r"(?<![\w.])(/[^\s'\":]+)+/([^\s'\":/]+)")


def public_message(text: str) -> str:
    """An error message for API users: absolute server paths become their file name."""
    return _ABSOLUTE_PATH.sub(r"\2", text)


def parse_number(value: Any, name: str, low: float, high: float, kind: str = "number") -> float:
    """A finite number in [low, high] from an int, float or numeric string; ValueError saying what is valid."""
    valid = f"{name} must be a {kind} from {low} to {high}"
    check_length(value, name)
    if isinstance(value, bool) or value is None or (isinstance(value, str) and "_" in value):
        raise ValueError(f"{valid}; got {shown(value)}")  # float() would read "5_0" as 50
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{valid}; got {shown(value)}") from None
    if not math.isfinite(number) or not low <= number <= high:
        raise ValueError(f"{valid}; got {shown(value)}")
    return number


def parse_int(value: Any, name: str, low: int, high: int) -> int:
    number = parse_number(value, name, low, high, kind="whole number")
    if number != int(number):
        raise ValueError(f"{name} must be a whole number from {low} to {high}; got {shown(value)}")
    return int(number)


def parse_model(value: Any) -> str:
    """"2d" or "3d" (case-insensitive)."""
    check_length(value, "model")
    if not isinstance(value, str) or value.lower() not in MODELS:
        raise ValueError(f"model must be one of {', '.join(MODELS)}; got {shown(value)}")
    return value.lower()


def parse_action(value: Any, name: str = "action") -> str:
    """The canonical spelling of an action name (case-insensitive)."""
    check_length(value, name)
    if not isinstance(value, str):
        raise ValueError(f"{name} must be one of {', '.join(ACTIONS)}; got {shown(value)}")
    try:
        return ACTIONS[action_index(value)]
    except ValueError:
        raise ValueError(f"unknown {name} {shown(value)}; valid actions: {', '.join(ACTIONS)}") from None


def parse_mode(value: Any) -> str:
    """One of VIEW_MODES (case-insensitive)."""
    check_length(value, "mode")
    key = value.strip().lower() if isinstance(value, str) else None
    if key not in VIEW_MODES:
        raise ValueError(f"mode must be one of {', '.join(VIEW_MODES)}; got {shown(value)}")
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
    model: str = "2d"

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
        return ("actiongen3d_" if self.model == "3d" else "actiongen_") + "_".join(parts)


@dataclass(frozen=True)
class PageState:
    """Everything the page shows, in the order the page's controls send it; every view and download of the
    page is drawn from one PageState, so no view can disagree with another.

    `mode` says what the main clip is: "one" (the action), "blend" (A and B mixed, B's weight `share_b`),
    "transition" (A switching to B, the last `share_b` of the clip is B) or "interpolate" (the latent point
    `alpha` of the way from seed to seed_b, with a strip of `steps` clips). Fields a mode does not use keep
    their values, so switching modes back and forth keeps what the user set. `model` is "2d" (the paper's
    camera-view model) or "3d" (world-frame joints, drawn as a 3D figure and exported as BVH too).
    """

    action: str = "Walking"
    seed: int = 7
    frames: int = FRAMES_DEFAULT
    mode: str = "one"
    action_b: str = "Phoning"
    share_b: float = 0.5
    seed_b: int = 42
    alpha: float = 0.5
    steps: int = STRIP_DEFAULT
    model: str = "2d"

    @classmethod
    def parse(cls, action: Any, seed: Any, frames: Any, mode: Any, action_b: Any, share_b: Any, seed_b: Any,
              alpha: Any, steps: Any, model: Any = "2d") -> "PageState":
        """A checked state from untrusted values; ValueError naming the first bad one and what is valid."""
        return cls(parse_action(action), parse_int(seed, "seed", 0, SEED_MAX),
                   parse_int(frames, "frames", FRAMES_MIN, FRAMES_MAX), parse_mode(mode),
                   parse_action(action_b, "action_b"), parse_number(share_b, "share_b", 0.0, 1.0),
                   parse_int(seed_b, "seed_b", 0, SEED_MAX), parse_number(alpha, "alpha", 0.0, 1.0),
                   parse_int(steps, "steps", STRIP_MIN, STRIP_MAX), parse_model(model))

    @classmethod
    def from_dict(cls, raw: Any) -> "PageState":
        """A checked state from a JSON object such as /view returns; missing keys take their defaults."""
        names = [f.name for f in fields(cls)]
        if not isinstance(raw, Mapping):
            raise ValueError(f"the state must be a JSON object with keys {names}; got {shown(raw)}")
        unknown = sorted(str(key)[:MAX_TEXT] for key in set(raw) - set(names))
        if unknown:
            raise ValueError(f"unknown state keys {shown(unknown, 80)}; valid keys: {names}")
        defaults = asdict(cls())
        return cls.parse(*(raw.get(name, defaults[name]) for name in names))

    def to_dict(self) -> dict:
        return asdict(self)

    def request(self, seed: int | None = None) -> Request:
        """The main clip (or, with `seed`, the same clip for another seed, without interpolation)."""
        seed = self.seed if seed is None else seed
        if self.mode in MODES:
            return Request(self.action, seed, self.frames, self.action_b, self.share_b, self.mode, model=self.model)
        if self.mode == "interpolate" and seed == self.seed:
            return Request(self.action, seed, self.frames, seed_b=self.seed_b, alpha=self.alpha, model=self.model)
        return Request(self.action, seed, self.frames, model=self.model)

    def strip_steps(self) -> int:
        """Clips in the interpolation strip; 0 when the page shows none."""
        return self.steps if self.mode == "interpolate" else 0

    def gallery_seeds(self) -> list[int]:
        """The block of GALLERY_SIZE consecutive seeds that holds this seed (it stays put while the user
        clicks through it)."""
        first = min(self.seed - self.seed % GALLERY_SIZE, SEED_MAX + 1 - GALLERY_SIZE)
        return list(range(first, first + GALLERY_SIZE))


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


# Why a blend often looks like a third action to the classifier: it only ever saw single actions.
BLEND_NOTE = ("The classifier was trained on single actions only, so it often names a third action for a "
              "blend: a blend is a new motion, not one of the ten.")


def clip_label(sample: Sample) -> str:
    """The sample's action label with the page's one arrow style."""
    return sample.action_label.replace("->", "\u2192")


def use_one_thread_per_request() -> None:
    """One torch intra-op thread for the whole process (its request threads inherit it). The app computes
    requests side by side, one per core; and even alone, a 50-frame request on two intra-op threads took 72 or
    114 ms (3D) and 131 or 190 ms (2D) from one run to the next on the 2-core machine, against a steady 81-85
    and 135-139 ms on one thread (round 29): on operations this small the threads mostly wait on each other."""
    torch.set_num_threads(1)


class ActionGenService:
    """The app's back end: one generator per model (2D and 3D), cached results, galleries and export files.

    `checkpoint` and `checkpoint_3d` are bundle paths (None: the shipped assets/actiongen.json and
    assets/actiongen3d.json). A missing or broken checkpoint does not stop the app from starting:
    `status(model)` says what is wrong and every request for that model raises CheckpointError with that
    message, until a good file appears. `gpu` wraps the model call (spaces.GPU on
    ZeroGPU Spaces). Export files are written under `work_dir` (a fresh `actiongen-app-*` temp folder by
    default, removed with the service); at most `export_cache_size` exports are kept, the oldest deleted.
    """

    def __init__(self, checkpoint: Path | str | None = None, device: str = "auto", cache_size: int = 64,
                 export_cache_size: int = 64, work_dir: Path | str | None = None,
                 gpu: Callable[[Callable], Callable] | None = None,
                 checkpoint_3d: Path | str | None = None) -> None:
        self.checkpoints = {model: Path(path) if path else DEFAULT_BUNDLES[model]
                            for model, path in (("2d", checkpoint), ("3d", checkpoint_3d))}
        self.device = device
        self.results = LRUCache(cache_size)
        self.galleries = LRUCache(cache_size // 2)
        self.exports = LRUCache(export_cache_size, on_evict=lambda files: shutil.rmtree(
            next(iter(files.values())).parent, ignore_errors=True))
        if work_dir is None:
            work_dir = tempfile.mkdtemp(prefix="actiongen-app-")
            weakref.finalize(self, shutil.rmtree, work_dir, ignore_errors=True)  # our own folder: removed with us
        self.work_dir = Path(work_dir)
        self.load_lock = threading.Lock()
        self._generators: dict[str, Generator] = {}
        self.sample_clip = gpu(self._sample_clip) if gpu else self._sample_clip
        self.sample_strip = gpu(self._sample_strip) if gpu else self._sample_strip

    # -- the model

    def generator(self, model: str = "2d") -> Generator:
        """The model's generator, loaded on first use and then reused; CheckpointError (without server paths)
        if its bundle is missing, broken or of the other model's kind."""
        if model not in self._generators:
            with self.load_lock:
                if model not in self._generators:
                    self._generators[model] = self._load(model)
        return self._generators[model]

    def _load(self, model: str) -> Generator:
        path = self.checkpoints[model]
        try:
            generator = Generator.load(path, device=self.device)
        except CheckpointError as err:  # the loader checks every entry; the message only loses server paths
            raise CheckpointError(public_message(str(err))) from None
        if f"{generator.dims}d" != model:
            raise CheckpointError(f"{path.name} is a {generator.dims}D bundle; the {model.upper()} model needs a "
                                  f"{model.upper()} one")
        return generator

    def status(self, model: str = "2d") -> str | None:
        """None when the model is loaded, else a message saying what is wrong and how to fix it."""
        try:
            self.generator(model)
        except CheckpointError as err:
            variable = "ACTIONGEN_CHECKPOINT_3D" if model == "3d" else "ACTIONGEN_CHECKPOINT"
            return (f"No {model.upper()} model loaded. {err}. To use another bundle, set {variable} to its "
                    ".json path.")
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
        return self.generator(r.model).sample(action, r.seed, r.frames, to_action=to_action, transition=transition,
                                              seed_b=r.seed_b, alpha=r.alpha if r.seed_b is not None else 0.0)

    def _sample_strip(self, request: Request, steps: int) -> list[Sample]:
        r = request
        return self.generator(r.model).interpolation_strip(r.action, r.seed, r.seed_b, steps=steps, frames=r.frames)

    # -- requests

    def answer(self, request: Request, strip_steps: int = 0) -> Result:
        """The cached result of a checked request, with an interpolation strip of `strip_steps` clips if > 0."""
        return self.results.get_or_compute((request, strip_steps), lambda: self._answer(request, strip_steps))

    def _answer(self, request: Request, strip_steps: int) -> Result:
        sample = self.sample_clip(request)
        actions = self.generator(request.model).actions
        title = f"{clip_label(sample)}, {request.seeds_text()}"
        strip = None
        if strip_steps:
            clips = self.sample_strip(request, strip_steps)
            strip = figure_json(skeleton_figure(
                drawable(np.stack([clip.joints for clip in clips])), sample.fps,
                title=f"{request.action}: seed {request.seed} \u2192 seed {request.seed_b}",
                captions=[f"\u03b1 = {clip.alpha:.2f}" for clip in clips],
                revision=f"strip-{request.slug()}-{strip_steps}", height=260))
        note = f" {BLEND_NOTE}" if request.action_b is not None and request.mode == "blend" else ""
        if request.model == "3d":
            note += f" {OBLIQUE_NOTE}"
        figure = skeleton_figure_3d if request.model == "3d" else skeleton_figure
        return Result(
            request=request,
            sample=sample,
            skeleton=figure_json(figure(sample.joints, sample.fps, title=title, revision=request.slug())),
            latent_path=figure_json(latent_path_figure(sample.latents, sample.fps)),
            probabilities=figure_json(probability_figure(sample.probabilities, actions,
                                                         sample.class_weights.mean(axis=0))),
            summary=f"**{title}** \u2014 {request.frames} frames, {request.frames / sample.fps:.1f} s; "
                    f"{probabilities_summary(sample, actions)}.{note}",
            strip=strip,
        )

    def view(self, state: PageState) -> Result:
        """The main clip of a page state, with its interpolation strip in "interpolate" mode."""
        return self.answer(state.request(), state.strip_steps())

    def gallery(self, state: PageState) -> str:
        """Figure JSON of GALLERY_SIZE clips of the state's action (and mix) for the block of seeds that holds
        its seed, each captioned with its seed, the state's seed marked; `layout.meta.seeds` lists the seeds."""
        seeds = state.gallery_seeds()
        key = (state.request(seeds[0]), state.seed)
        return self.galleries.get_or_compute(key, lambda: self._gallery(state, seeds))

    def _gallery(self, state: PageState, seeds: list[int]) -> str:
        clips = [self.answer(state.request(seed)).sample for seed in seeds]
        figure = skeleton_figure(drawable(np.stack([clip.joints for clip in clips])), clips[0].fps,
                                 captions=[f"seed {seed}" for seed in seeds], columns=GALLERY_COLUMNS,
                                 revision=f"gallery-{state.request(seeds[0]).slug()}-{state.seed}",
                                 selected=seeds.index(state.seed), height=520)
        figure["layout"]["meta"]["seeds"] = seeds
        return figure_json(figure)

    def export(self, state: PageState | Request) -> dict[str, Path]:
        """GIF, MP4, NPZ and JSON files (and BVH for a 3D clip) of the main clip of a state (or of a request),
        keyed by suffix.

        The JSON file also records the request (action, mode, second action, mix, seeds, alpha), so it says
        how to make the clip again."""
        request = state.request() if isinstance(state, PageState) else state
        return self.exports.get_or_compute(request, lambda: self._export(request))

    def _export(self, request: Request) -> dict[str, Path]:
        sample = self.answer(request).sample
        # A fresh directory per computation: a concurrent identical request never writes into our files.
        folder = Path(tempfile.mkdtemp(prefix="export-", dir=self.work_dir))
        suffixes = DOWNLOAD_SUFFIXES_3D if request.model == "3d" else DOWNLOAD_SUFFIXES
        files = {suffix: render.export(sample, folder / f"{request.slug()}{suffix}") for suffix in suffixes}
        record = json.loads(files[".json"].read_text())
        record["request"] = request.to_dict()
        files[".json"].write_text(json.dumps(record))
        return files
