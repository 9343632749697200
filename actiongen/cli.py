"""Command line: `actiongen <command> ...` or `python -m actiongen <command> ...` (examples in EXAMPLES).

The output format follows the suffix of --out: .gif .mp4 .png (filmstrip) .npz .json, and .bvh for a 3D
model (--model 3d).
Bad arguments print one line `actiongen: error: ...` on stderr and exit with status 2.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Callable, NoReturn, Sequence

import torch
from tqdm.auto import tqdm

from . import render
from .checkpoint import DEFAULT_BUNDLES
from .generator import (MAX_BATCH_FRAMES, MAX_FRAMES, MAX_STRIP_STEPS, MIN_FRAMES, SEED_LIMIT, Generator, Sample,
                        int_from_text)
from .skeleton import ACTIONS

PROG = "actiongen"
EXAMPLES = """examples:
  actiongen sample --action Walking --seed 3 --frames 100 --out walk.gif
  actiongen mix Walking=0.5 Phoning=0.5 --seed 3 --out mix.mp4
  actiongen transition --action Walking --to-action Phoning --transition 20:40 --out switch.gif
  actiongen interpolate --action Walking --seed 1 --to-seed 2 --steps 8 --out strip.gif
  actiongen sample-all --per-class 5 --out samples.npz
  actiongen sample --model 3d --action Walking --seed 3 --frames 100 --out walk.bvh"""
DIR_FORMATS = ("gif", "mp4", "png", "npz", "json", "bvh")


class Parser(argparse.ArgumentParser):
    """Usage errors as a single line, like every other error of this command."""

    def error(self, message: str) -> NoReturn:
        report(f"{message} (see `{self.prog} --help`)")
        sys.exit(2)


def report(message: str) -> None:
    print(f"{PROG}: error: {' '.join(str(message).split())}", file=sys.stderr)


# ----------------------------------------------------------------------------- argument types

NUMBER_TEXT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


def number_from_text(text: str) -> float:
    """A decimal number such as 0.5, 2 or 1e-3; stricter than float(), which also reads "0_5", "nan" and
    "infinity"."""
    if not NUMBER_TEXT.fullmatch(text.strip()):
        raise ValueError(f"expected a number such as 0.5; got {text!r}")
    return float(text)


def whole_number(name: str, low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number in [low, high], refused with that range."""
    def parse(text: str) -> int:
        try:
            return int_from_text(text, name, low, high)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
    return parse


def number(text: str) -> float:
    """An argparse type: a decimal number (its range is checked where it is used)."""
    try:
        return number_from_text(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def parse_mix(text: str) -> dict[str, float]:
    """"Walking=0.5,Phoning=0.5" (or space-separated pairs) -> {"Walking": 0.5, "Phoning": 0.5}."""
    weights: dict[str, float] = {}
    for item in text.replace(",", " ").split():
        name, _, value = item.partition("=")
        try:
            weights[name] = number_from_text(value)
        except ValueError:
            name = ""
        if not name:
            raise argparse.ArgumentTypeError(f"mix entries are NAME=WEIGHT, e.g. Walking=0.5,Phoning=0.5; got {item!r}")
    if not weights:
        raise argparse.ArgumentTypeError("empty mix; give NAME=WEIGHT pairs, e.g. Walking=0.5,Phoning=0.5")
    return weights


def parse_range(text: str) -> tuple[int, int]:
    """"20:40" -> (20, 40)."""
    start, _, end = text.partition(":")
    try:
        return (int_from_text(start, "transition start", 0, MAX_FRAMES - 1),
                int_from_text(end, "transition end", 0, MAX_FRAMES - 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a frame range is START:END with whole numbers in [0, {MAX_FRAMES - 1}], "
                                         f"e.g. 20:40; got {text!r}") from None


def export_path(text: str) -> Path:
    path = Path(text)
    if path.suffix.lower() not in render.EXPORT_SUFFIXES:
        raise argparse.ArgumentTypeError(f"{text!r} needs one of the suffixes "
                                         f"{', '.join(render.EXPORT_SUFFIXES)}")
    return path


seed_number = whole_number("seed", 0, SEED_LIMIT - 1)
panel_size = whole_number("size", render.MIN_SIZE, render.MAX_SIZE)


# ----------------------------------------------------------------------------- the parser

def build_parser() -> Parser:
    actions = ", ".join(ACTIONS)
    common = Parser(add_help=False)
    model = common.add_mutually_exclusive_group()
    model.add_argument("--checkpoint", type=Path, metavar="PATH", help="model bundle .json (default: the shipped assets/actiongen.json)")
    model.add_argument("--model", type=str.lower, choices=list(DEFAULT_BUNDLES),
                       help="a shipped model: 2d (camera view, the default) or 3d (world frame in mm, .bvh export)")
    common.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    clip = Parser(add_help=False)
    clip.add_argument("--seed", type=seed_number, default=0, metavar="N", help="random seed in [0, 2**32) (default 0)")
    clip.add_argument("--frames", type=whole_number("frames", MIN_FRAMES, MAX_FRAMES), default=50, metavar="T",
                      help=f"clip length in frames at 50/3 fps, {MIN_FRAMES} to {MAX_FRAMES} (default 50 = 3 s)")
    out = Parser(add_help=False)
    out.add_argument("--out", type=export_path, required=True, metavar="FILE",
                     help="output file: .gif .mp4 .png .npz .json, or .bvh (3D models)")
    out.add_argument("--size", type=panel_size, default=256, metavar="PX",
                     help=f"pixels per clip panel of .gif/.mp4/.png, {render.MIN_SIZE} to {render.MAX_SIZE} (default 256)")

    parser = Parser(prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
                    description=f"Generate 2D or 3D human-action skeleton clips with the ActionGen models.\n\n{EXAMPLES}",
                    epilog=f"actions: {actions}\nRun `{PROG} <command> --help` for a command's options.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")
    parents = [common, clip, out]

    sample = commands.add_parser("sample", parents=parents, help="one clip of an action or a mix",
                                 description="One clip; optionally a mix, an A -> B transition, or a latent "
                                             "interpolation towards another seed.")
    add_action_options(sample, actions)
    sample.add_argument("--to-action", metavar="ACTION", help="move to this action over --transition (default: the whole clip)")
    sample.add_argument("--transition", type=parse_range, metavar="START:END", help="frames of the A -> B change")
    sample.add_argument("--to-seed", type=seed_number, metavar="N", help="interpolate the latent path towards this seed")
    sample.add_argument("--alpha", type=number, help="interpolation amount in [0, 1] (default 0.5 with --to-seed)")
    sample.set_defaults(run=run_sample)

    mix = commands.add_parser("mix", parents=parents, help="one clip of a weighted mix of actions",
                              description="One clip of a mix of actions; weights are normalised to sum to 1.")
    mix.add_argument("mix", nargs="+", type=parse_mix, metavar="NAME=WEIGHT",
                     help=f"e.g. Walking=0.5 Phoning=0.5 ({actions})")
    mix.set_defaults(run=run_sample, action=None, to_action=None, transition=None, to_seed=None, alpha=None)

    transition = commands.add_parser("transition", parents=parents, help="one clip going from action A to B",
                                     description="One clip whose class weights move linearly from --action to "
                                                 "--to-action between the START and END frames.")
    transition.add_argument("--action", required=True, help=f"the starting action ({actions})")
    transition.add_argument("--to-action", required=True, metavar="ACTION", help="the action to end in")
    transition.add_argument("--transition", type=parse_range, metavar="START:END",
                            help="frames of the change (default: the whole clip)")
    transition.set_defaults(run=run_sample, mix=None, to_seed=None, alpha=None)

    interpolate = commands.add_parser("interpolate", parents=parents, help="clips from seed A to seed B side by side",
                                      description="An interpolation strip: STEPS clips from --seed (alpha 0) to "
                                                  "--to-seed (alpha 1), drawn side by side and animated together.")
    add_action_options(interpolate, actions)
    interpolate.add_argument("--to-seed", type=seed_number, required=True, metavar="N", help="the seed at alpha = 1")
    interpolate.add_argument("--steps", type=whole_number("steps", 2, MAX_STRIP_STEPS), default=8, metavar="K",
                             help=f"number of clips, 2 to {MAX_STRIP_STEPS} (default 8)")
    interpolate.set_defaults(run=run_interpolate)

    sample_all = commands.add_parser("sample-all", parents=[common, clip], help="N clips of every action",
                                     description="N clips of every action with seeds SEED..SEED+N-1: one .npz "
                                                 "(poses (N, T, 16, 2|3), labels, actions) or a directory of files.")
    sample_all.add_argument("--per-class", type=whole_number("per-class", 1, MAX_BATCH_FRAMES), required=True,
                            metavar="N", help=f"clips per action; at most {MAX_BATCH_FRAMES:,} frames in all")
    sample_all.add_argument("--out", type=Path, required=True, metavar="PATH", help="FILE.npz, or a directory for one file per clip")
    sample_all.add_argument("--format", choices=DIR_FORMATS, default="gif", help="file format in a directory "
                                                                                 "(default gif)")
    sample_all.add_argument("--size", type=panel_size, default=256, metavar="PX",
                            help=f"pixels per clip of .gif/.mp4/.png, {render.MIN_SIZE} to {render.MAX_SIZE} (default 256)")
    sample_all.set_defaults(run=run_sample_all)
    return parser


def add_action_options(parser: argparse.ArgumentParser, actions: str) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--action", help=f"action name, case-insensitive ({actions})")
    which.add_argument("--mix", type=parse_mix, metavar="NAME=W,...", help="a mix, e.g. Walking=0.5,Phoning=0.5")


# ----------------------------------------------------------------------------- commands

def load_generator(args: argparse.Namespace) -> Generator:
    return Generator.load(args.checkpoint, device=args.device, model=args.model)


def describe(sample: Sample, actions: Sequence[str]) -> str:
    text = f"{sample.action_label}, seed {sample.seed}, {sample.frames} frames"
    if sample.seed_b is not None:
        text += f", alpha {sample.alpha:g} towards seed {sample.seed_b}"
    if sample.probabilities is not None:
        best = int(sample.probabilities.argmax())
        text += f"; classifier: {actions[best]} {100 * sample.probabilities[best]:.0f}%"
    if sample.fit_displacement_mm is not None:
        mean, largest = sample.fit_displacement_mm
        text += f"; fixed-length skeleton moved joints by {mean:.1f} mm on average (max {largest:.1f} mm)"
    return text


def run_sample(args: argparse.Namespace) -> None:
    action = args.action
    if args.mix is not None:  # one dict from `sample --mix`, a list of them from `mix`
        mixes = args.mix if isinstance(args.mix, list) else [args.mix]
        action = {name: weight for mix in mixes for name, weight in mix.items()}
    alpha = args.alpha if args.alpha is not None else (0.5 if args.to_seed is not None else 0.0)
    render.check_export_size(args.out, 1, args.frames, args.size)
    gen = load_generator(args)
    render.check_bvh_export(args.out, 1, gen.dims)
    sample = gen.sample(action, args.seed, args.frames, to_action=args.to_action, transition=args.transition,
                        seed_b=args.to_seed, alpha=alpha)
    path = render.export(sample, args.out, size=args.size)
    print(f"wrote {path}: {describe(sample, gen.actions)}")


def run_interpolate(args: argparse.Namespace) -> None:
    render.check_export_size(args.out, args.steps, args.frames, args.size)
    render.check_bvh_export(args.out, args.steps)
    gen = load_generator(args)
    strip = gen.interpolation_strip(args.mix or args.action, args.seed, args.to_seed, steps=args.steps,
                                    frames=args.frames)
    path = render.export(strip, args.out, size=args.size)
    print(f"wrote {path}: {len(strip)} clips of {strip[0].action_label}, seed {args.seed} -> {args.to_seed}")


def run_sample_all(args: argparse.Namespace) -> None:
    suffix = args.out.suffix.lower()
    if suffix and suffix != ".npz":
        raise ValueError(f"--out {args.out} must be a .npz file or a directory (no suffix)")
    if not suffix:  # a directory of one file per clip
        render.check_export_size(f"clip.{args.format}", 1, args.frames, args.size)
    gen = load_generator(args)
    if not suffix:
        render.check_bvh_export(f"clip.{args.format}", 1, gen.dims)
    most = MAX_BATCH_FRAMES // (len(gen.actions) * args.frames)
    if args.per_class > most:
        raise ValueError(f"--per-class must be in [1, {most}] for {len(gen.actions)} actions of {args.frames} frames "
                         f"({MAX_BATCH_FRAMES:,} frames in all); got {args.per_class}")
    if args.seed + args.per_class > SEED_LIMIT:
        raise ValueError(f"seeds run from --seed to --seed + --per-class - 1, at most {SEED_LIMIT - 1}: with "
                         f"--per-class {args.per_class}, --seed must be in [0, {SEED_LIMIT - args.per_class}]; "
                         f"got {args.seed}")
    seeds = [args.seed + k for k in range(args.per_class)]
    # One thread per worker and one worker per core: intra-op threads spend more on synchronising these
    # small operations than they gain.
    torch.set_num_threads(1)
    batch = gen.sample_many([a for a in gen.actions for _ in seeds], seeds * len(gen.actions), args.frames,
                            workers=os.cpu_count() or 1, progress=True)
    if suffix == ".npz":
        print(f"wrote {render.save_npz(batch, args.out)}: {len(batch)} clips, {args.per_class} per action")
        return
    args.out.mkdir(parents=True, exist_ok=True)
    for i in tqdm(range(len(batch)), desc="writing", unit="file", leave=False, disable=None):
        sample = batch[i]
        render.export(sample, args.out / f"{gen.actions[batch.labels[i]]}_seed{sample.seed}.{args.format}",
                      size=args.size)
    print(f"wrote {len(batch)} .{args.format} files to {args.out}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; the exit status is 0 on success, 2 for bad arguments, 1 if a file cannot be written."""
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except ValueError as err:  # bad values, including a missing or broken checkpoint (CheckpointError)
        report(str(err))
        return 2
    except OSError as err:
        report(str(err))
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
