"""Evaluate a checkpoint on Human3.6M with the published MMD protocol, recogniser accuracy, FID, diversity and
multimodality, next to reference rows of real data measured the same way.

    python -m actiongen.evaluate [--checkpoint assets/actiongen.json] [--per-class 1000] [--seeds 0 1 2]
                                 [--out results.json] [--markdown] [--references-only]

Rows (each metric is the mean and std over the seeds; a seed draws the generated clips, the noise of the
baseline and the random equal-sized subsets the MMD pairs up):
  ActionGen vs the training clips    the published comparison (their real set was the training set)
  ActionGen vs the test subject      generalisation to an unseen person
  real test subject vs training      what an unseen person's real motion scores
  real held-out training subject vs the other training subjects
  one take vs the other take of the test subject
  class mean pose + Gaussian noise vs the training clips, a weak baseline
Everything is computed on normalised 30-d pose vectors (the data's statistics).

With a checkpoint it also measures realism (actiongen.realism; `--no-realism` skips it): a classifier
two-sample test against a held-out training subject with its reference rows, motion statistics as
generated / real ratios, and the latent path's occupancy of the prior box, for every seed.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
import warnings
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from .checkpoint import CheckpointError
from .data import (ClipDataset, DataConfig, H36MDataError, NormStats, PoseData, Sequence, default_data_root,
                   joints_to_vectors, load_pose_data)
from .generator import Generator, SampleBatch
from .metrics import accuracy, class_mmd, diversity, fid, multimodality, paired_subsets
from . import realism  # a cycle that is safe: realism reaches this module's helpers through the module object
from .recognizer import DEFAULT_RECOGNIZER, Recognizer, load_recognizer

# MMD on Human3.6M as published; their real set was the training set.
PUBLISHED = (
    {"name": "Wang et al. 2020 (the seed paper), as reported", "mmd_avg": 0.195, "mmd_seq": 0.218},
    {"name": "SA-GCN (Yu & Tapaswi 2020)", "mmd_avg": 0.146, "mmd_seq": 0.134},
    {"name": "Kinetic-GAN (Degardin et al. 2022), 32 frames", "mmd_avg": 0.071, "mmd_seq": 0.079},
)
METRICS = ("mmd_avg", "mmd_seq", "fid", "accuracy_recognizer", "accuracy_own", "diversity", "multimodality")
PER_CLASS_METRICS = ("mmd_avg", "mmd_seq", "accuracy_recognizer", "accuracy_own")


# ----------------------------------------------------------------------------- clip sets

@dataclass
class ClipSet:
    """Clips of one source grouped by class, with what the recogniser and the model's classifier make of them.

    `clips` are normalised with the data's statistics; the other arrays hold the rows of all classes
    in `clips` order.
    """

    clips: dict[str, np.ndarray]
    labels: np.ndarray
    features: np.ndarray | None  # recogniser features (N, F)
    recognizer_logits: np.ndarray | None
    own_scores: np.ndarray | None  # the checkpoint's co-trained classifier (logits or probabilities)

    def rows(self, action: str) -> np.ndarray:
        """Row indices of one class in the concatenated arrays."""
        offset = 0
        for name, clips in self.clips.items():
            if name == action:
                return np.arange(offset, offset + len(clips))
            offset += len(clips)
        raise KeyError(action)


def renormalise(clips: np.ndarray, source: NormStats, target: NormStats) -> np.ndarray:
    """Vectors standardised with `source` -> the same poses standardised with `target`."""
    return ((clips * source.std + source.mean - target.mean) / target.std).astype(np.float32)


class Scorer:
    """Runs the recogniser and the model's classifier (either may be absent) on clip sets."""

    def __init__(self, data_stats: NormStats, actions: tuple[str, ...], recognizer: Recognizer | None,
                 classifier: torch.nn.Module | None, classifier_stats: NormStats | None) -> None:
        self.data_stats = data_stats
        self.actions = actions
        self.recognizer = recognizer
        self.classifier = classifier
        self.classifier_stats = classifier_stats

    @torch.no_grad()
    def _own_logits(self, clips: np.ndarray, batch_size: int = 512) -> np.ndarray:
        x = renormalise(clips, self.data_stats, self.classifier_stats)
        return np.concatenate([self.classifier(torch.from_numpy(x[i:i + batch_size])).numpy()
                               for i in range(0, len(x), batch_size)])

    def score(self, clips: dict[str, np.ndarray], own_scores: np.ndarray | None = None) -> ClipSet:
        """`own_scores`: the classifier's output when already known (the generator computes it)."""
        clips = {a: c for a, c in clips.items() if len(c)}
        if not clips:
            raise ValueError("a clip set to evaluate is empty: no sequence is long enough for one clip")
        stacked = np.concatenate(list(clips.values())).astype(np.float32)
        labels = np.concatenate([np.full(len(c), self.actions.index(a)) for a, c in clips.items()])
        features = logits = None
        if self.recognizer is not None:
            features, logits = self.recognizer.predict(renormalise(stacked, self.data_stats, self.recognizer.stats))
        if own_scores is None and self.classifier is not None:
            own_scores = self._own_logits(stacked)
        return ClipSet(clips, labels, features, logits, own_scores)


def clips_by_class(data: PoseData, sequences: list[Sequence]) -> dict[str, np.ndarray]:
    """Evaluation clips (ClipDataset's enumeration) of some sequences, normalised with the data's statistics."""
    subjects = tuple(sorted({s.subject for s in sequences}))
    subset = PoseData(replace(data.config, train_subjects=subjects, test_subjects=()), sequences, data.stats)
    return ClipDataset(subset, "train").per_class()


def take_halves(sequences: list[Sequence]) -> tuple[list[Sequence], list[Sequence]]:
    """Per action, the first and the second take (by file name) of the given sequences."""
    first, second = [], []
    for action in sorted({s.action for s in sequences}):
        takes = sorted((s for s in sequences if s.action == action), key=lambda s: s.take)
        if len(takes) >= 2:
            first.append(takes[0])
            second.append(takes[1])
    return first, second


def mean_pose_baseline(train: dict[str, np.ndarray], per_class: int, seed: int) -> dict[str, np.ndarray]:
    """Per class: every frame the class's mean training pose plus independent Gaussian noise with the class's
    per-dimension pose std: right per-frame means and variances, no motion, no correlations."""
    rng = np.random.default_rng(seed)
    out = {}
    for action, clips in train.items():
        frames = clips.reshape(-1, clips.shape[-1])
        noise = rng.standard_normal((per_class, *clips.shape[1:]))
        out[action] = (frames.mean(0) + noise * frames.std(0)).astype(np.float32)
    return out


def generation_seeds(seed: int, class_index: int, num_classes: int, per_class: int) -> list[int]:
    """Clip i of class c under evaluation seed s uses generator seed (s * C + c) * n + i: all distinct."""
    first = (seed * num_classes + class_index) * per_class
    return list(range(first, first + per_class))


# ----------------------------------------------------------------------------- metrics of a row

def compare(candidate: ClipSet, reference: ClipSet, per_class: int, rng: np.random.Generator) -> dict:
    """MMD (per class on random equal-sized subsets of at most `per_class`, then the mean over classes) and FID
    on the same subsets. Classes with fewer than 2 clips on either side are left out."""
    pairs = {}
    for action in candidate.clips:
        if action in reference.clips:
            i, j = paired_subsets(candidate.clips[action], reference.clips[action], rng, per_class)
            if len(i) >= 2:
                pairs[action] = (i, j)
    if not pairs:
        raise ValueError("no class has at least 2 clips in both sets; nothing to compare")
    result = class_mmd({a: candidate.clips[a][i] for a, (i, _) in pairs.items()},
                       {a: reference.clips[a][j] for a, (_, j) in pairs.items()})
    result["fid"] = None
    if candidate.features is not None and reference.features is not None:
        result["fid"] = fid(candidate.features[np.concatenate([candidate.rows(a)[i] for a, (i, _) in pairs.items()])],
                            reference.features[np.concatenate([reference.rows(a)[j] for a, (_, j) in pairs.items()])])
    return result


def describe(clip_set: ClipSet, rng: np.random.Generator) -> dict:
    """Accuracy of the clips' intended classes, diversity and multimodality of their recogniser features."""
    result: dict = {"accuracy_recognizer": None, "accuracy_own": None, "diversity": None, "multimodality": None}
    per_class: dict[str, dict] = {a: {} for a in clip_set.clips}
    for key, logits in (("accuracy_recognizer", clip_set.recognizer_logits), ("accuracy_own", clip_set.own_scores)):
        if logits is None:
            continue
        result[key] = accuracy(logits, clip_set.labels)
        for action in clip_set.clips:
            rows = clip_set.rows(action)
            per_class[action][key] = accuracy(logits[rows], clip_set.labels[rows])
    if clip_set.features is not None:
        result["diversity"] = diversity(clip_set.features, rng)
        result["multimodality"] = multimodality(clip_set.features, clip_set.labels, rng)
    result["per_class"] = per_class
    return result


# ----------------------------------------------------------------------------- the rows

@dataclass
class Row:
    name: str
    reference_name: str
    kind: str  # "model", "real" or "baseline"
    candidate: Callable[[int], ClipSet]  # evaluation seed -> clip set
    reference: ClipSet


def subjects_label(subjects: tuple[int, ...] | list[int]) -> str:
    return ", ".join(f"S{s}" for s in subjects)


class GeneratedClips:
    """Each evaluation seed's generated clips, drawn on first use and kept, so that the MMD rows and the
    realism measurements read the same clips (drawing them twice took a third of a full evaluation's time;
    one 2D seed at 1000 clips per class keeps about 110 MB of joints and latent paths)."""

    def __init__(self, generator: Generator, actions: tuple[str, ...], per_class: int, progress: bool) -> None:
        self.generator, self.actions, self.per_class, self.progress = generator, actions, per_class, progress
        self.by_seed: dict[int, dict[str, SampleBatch]] = {}

    def get(self, seed: int) -> dict[str, SampleBatch]:
        if seed not in self.by_seed:
            self.by_seed[seed] = generate_per_class(self.generator, self.actions, self.per_class, seed,
                                                    self.progress)
        return self.by_seed[seed]


def build_rows(data: PoseData, scorer: Scorer, per_class: int, generated: GeneratedClips | None = None,
               progress: bool = True) -> list[Row]:
    cfg = data.config
    bar = tqdm(total=6, desc="reference sets", unit="set", disable=not progress, leave=False)

    def scored(clips: dict[str, np.ndarray]) -> ClipSet:
        result = scorer.score(clips)
        bar.update()
        return result

    train_clips = ClipDataset(data, "train").per_class(per_class, seed=0)
    train = scored(train_clips)
    test = scored(ClipDataset(data, "test").per_class())
    train_name = f"train ({subjects_label(cfg.train_subjects)})"
    test_name = f"test ({subjects_label(cfg.test_subjects)})"
    rows = []
    if generated is not None:
        scored_seed: dict[int, ClipSet] = {}

        def generate(seed: int) -> ClipSet:
            if seed not in scored_seed:
                scored_seed.clear()
                scored_seed[seed] = score_generated(generated.get(seed), scorer, data.stats)
            return scored_seed[seed]

        rows += [Row("ActionGen", train_name, "model", generate, train),
                 Row("ActionGen", test_name, "model", generate, test)]
    rows.append(Row(f"real {subjects_label(cfg.test_subjects)}", train_name, "real", lambda seed: test, train))
    if len(cfg.train_subjects) >= 2:
        held_out, others = cfg.train_subjects[-1], cfg.train_subjects[:-1]
        held = scored(clips_by_class(data, [s for s in data.sequences if s.subject == held_out]))
        others_data = PoseData(replace(cfg, train_subjects=others), data.sequences, data.stats)
        rest = scored(ClipDataset(others_data, "train").per_class(per_class, seed=0))
        rows.append(Row(f"real S{held_out}", f"other training subjects ({subjects_label(others)})", "real",
                        lambda seed: held, rest))
    first_take, second_take = take_halves(data.split("test"))
    if first_take:
        take_a, take_b = scored(clips_by_class(data, first_take)), scored(clips_by_class(data, second_take))
        rows.append(Row(f"real {subjects_label(cfg.test_subjects)}, one take",
                        f"the other take of {subjects_label(cfg.test_subjects)}", "real", lambda seed: take_a, take_b))
    rows.append(Row("class mean pose + Gaussian noise", train_name, "baseline",
                    lambda seed: scorer.score(mean_pose_baseline(train_clips, per_class, seed)), train))
    bar.close()
    return rows


def generate_per_class(generator: Generator, actions: tuple[str, ...], per_class: int, seed: int,
                       progress: bool, classify: bool = True, fixed_bones: bool = True,
                       frames: int = 50) -> dict[str, SampleBatch]:
    """`per_class` generated clips of `frames` frames of every action under evaluation seed `seed` (see
    generation_seeds)."""
    return {action: generator.sample_many(action, generation_seeds(seed, c, len(actions), per_class), frames,
                                          classify=classify, fixed_bones=fixed_bones)
            for c, action in enumerate(tqdm(actions, desc=f"generating (seed {seed})", unit="class",
                                            disable=not progress, leave=False))}


def score_generated(batches: dict[str, SampleBatch], scorer: Scorer, data_stats: NormStats) -> ClipSet:
    """Generated clips of every action as normalised vectors with the data's statistics, scored."""
    clips = {action: joints_to_vectors(batch.joints, data_stats).astype(np.float32)
             for action, batch in batches.items()}
    return scorer.score(clips, own_scores=np.concatenate([batch.probabilities for batch in batches.values()]))


# ----------------------------------------------------------------------------- running and reporting

def summarise(values: list[dict], keys: tuple[str, ...]) -> dict:
    out = {}
    for key in keys:
        got = [v[key] for v in values if v.get(key) is not None]
        out[key] = ({"mean": float(np.mean(got)), "std": float(np.std(got)), "values": got} if got else None)
    return out


def run_rows(rows: list[Row], seeds: list[int], per_class: int, progress: bool = True) -> list[dict]:
    per_row: list[list[dict]] = [[] for _ in rows]
    bar = tqdm(total=len(rows) * len(seeds), desc="evaluating", unit="row", disable=not progress)
    for seed in seeds:
        for k, row in enumerate(rows):
            # One generator per (seed, row), so a row's numbers do not depend on which other rows ran.
            rng = np.random.default_rng([seed, zlib.crc32(f"{row.name}|{row.reference_name}".encode())])
            candidate = row.candidate(seed)
            result = compare(candidate, row.reference, per_class, rng)
            described = describe(candidate, rng)
            for action, values in described.pop("per_class").items():
                result["per_class"].setdefault(action, {}).update(values)
            per_row[k].append({**result, **described})
            bar.set_postfix_str(f"{row.name} vs {row.reference_name}"[:40])
            bar.update()
    bar.close()
    summaries = []
    for row, results in zip(rows, per_row):
        per_class = {}
        for action in dict.fromkeys(a for r in results for a in r["per_class"]):
            seeds = [r["per_class"].get(action, {}) for r in results]
            per_class[action] = {k: (v["mean"] if v else None)
                                 for k, v in summarise(seeds, PER_CLASS_METRICS + ("m",)).items()}
        summaries.append({"name": row.name, "reference": row.reference_name, "kind": row.kind,
                          "metrics": summarise(results, METRICS), "per_class": per_class})
    return summaries


def _cell(metric: dict | None, digits: int = 3) -> str:
    if metric is None:
        return "n/a"
    if len(metric["values"]) < 2:
        return f"{metric['mean']:.{digits}f}"
    return f"{metric['mean']:.{digits}f} ± {metric['std']:.{digits}f}"


def to_markdown(report: dict) -> str:
    header = ("| Clips | Real reference | MMD_avg ↓ | MMD_seq ↓ | FID ↓ | Acc. recogniser | Acc. own classifier "
              "| Diversity | Multimodality |")
    lines = [header, "|" + "---|" * 9]
    for row in report["rows"]:
        m = row["metrics"]
        lines.append(f"| {row['name']} | {row['reference']} | " + " | ".join(
            [_cell(m["mmd_avg"]), _cell(m["mmd_seq"]), _cell(m["fid"], 2), _cell(m["accuracy_recognizer"]),
             _cell(m["accuracy_own"]), _cell(m["diversity"], 2), _cell(m["multimodality"], 2)]) + " |")
    for p in report["published"]:
        lines.append(f"| {p['name']} | training set | {p['mmd_avg']:.3f} | {p['mmd_seq']:.3f} | | | | | |")
    lines += ["", f"Seeds {report['seeds']}, up to {report['per_class']} clips per class; "
              f"{report['runtime_s']:.0f} s. `{report['command']}`", ""]
    if report.get("realism"):
        lines += ["Realism (actiongen.realism)", "", realism.to_markdown(report["realism"])]
    for row in report["rows"]:
        if row["kind"] == "baseline":
            continue
        lines += [f"Per class: {row['name']} vs {row['reference']}", "",
                  "| Action | m | MMD_avg | MMD_seq | Acc. recogniser | Acc. own classifier |",
                  "|---|---|---|---|---|---|"]
        for action, v in row["per_class"].items():
            cells = [f"{v[k]:.3f}" if v.get(k) is not None else "n/a" for k in PER_CLASS_METRICS]
            lines.append(f"| {action} | {v['m']:.0f} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def add_protocol_arguments(p: argparse.ArgumentParser) -> None:
    """The options every evaluation command shares: data, subjects, sample size, seeds, device, output."""
    p.add_argument("--data-root", default=str(default_data_root()), help="unpacked Human3.6M h36m archive")
    p.add_argument("--cache-dir", default=None, help="preprocessing cache (default: ~/.cache/actiongen)")
    p.add_argument("--train-subjects", type=int, nargs="+", default=list(DataConfig.train_subjects),
                   help="subjects of the training reference set (and of the normalisation statistics); the "
                        "last is the realism test's held-out subject, the one before it the unseen reference")
    p.add_argument("--test-subjects", type=int, nargs="+", default=list(DataConfig.test_subjects),
                   help="held-out subjects of the test reference set")
    p.add_argument("--per-class", type=int, default=1000, help="generated clips per class; cap on m for the MMD")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--device", default="cpu", help="device for generation and the realism classifier: cpu, cuda "
                                                   "or auto")
    add_c2st_fits_argument(p)
    p.add_argument("--out", default=None, help="write the full results as JSON here")
    p.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def add_c2st_fits_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--c2st-fits", type=int, default=realism.C2STConfig.fits,
                   help="real-vs-generated classifier fits averaged per seed (1: the single-fit protocol of the "
                        "releases before round 29)")


def check_c2st_fits(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not 1 <= args.c2st_fits <= realism.MAX_C2ST_FITS:
        p.error(f"--c2st-fits must be in [1, {realism.MAX_C2ST_FITS}]; got {args.c2st_fits}")


def protocol_data_config(args: argparse.Namespace) -> DataConfig:
    """The 2D data settings the protocol options name."""
    return DataConfig(root=args.data_root, train_subjects=tuple(args.train_subjects),
                      test_subjects=tuple(args.test_subjects),
                      **({"cache_dir": args.cache_dir} if args.cache_dir else {}))


def check_protocol_arguments(p: argparse.ArgumentParser, args: argparse.Namespace, min_per_class: int) -> None:
    if args.per_class < min_per_class:
        p.error(f"--per-class must be at least {min_per_class}; got {args.per_class}")
    if any(not 0 <= s < 4096 for s in args.seeds):
        p.error(f"--seeds must be in [0, 4096); got {args.seeds}")
    check_c2st_fits(p, args)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", default=None, help="bundle .json (default: the shipped assets/actiongen.json)")
    p.add_argument("--recognizer", default=str(DEFAULT_RECOGNIZER),
                   help="recogniser bundle .json, or 'none' to skip accuracy, FID, diversity and multimodality")
    add_protocol_arguments(p)
    p.add_argument("--references-only", action="store_true", help="only the real-data and baseline rows")
    p.add_argument("--no-realism", action="store_true",
                   help="skip the realism measurements (two-sample test, motion ratios, latent occupancy)")
    args = p.parse_args(argv)
    check_protocol_arguments(p, args, 2)
    return args


def evaluate(args: argparse.Namespace, command: str) -> dict:
    start = time.time()
    progress = not args.quiet
    cfg = protocol_data_config(args)
    data = load_pose_data(cfg)
    recognizer = None if args.recognizer.lower() == "none" else load_recognizer(args.recognizer)
    generator = classifier = classifier_stats = generated = None
    if not args.references_only:
        generator = Generator.load(args.checkpoint, device=args.device)
        classifier, classifier_stats = generator.bundle.classifier, generator.stats
        if tuple(generator.actions) != tuple(cfg.actions):
            raise ValueError(f"the checkpoint's actions {list(generator.actions)} differ from the data's "
                             f"{list(cfg.actions)}")
        if not (np.allclose(generator.stats.mean, data.stats.mean, atol=1e-3 * data.stats.std)
                and np.allclose(generator.stats.std, data.stats.std, rtol=1e-3)):
            warnings.warn("the checkpoint's normalisation statistics differ from this data's: it was trained on "
                          "other data or subjects; clips are compared in this data's normalisation", stacklevel=2)
        generated = GeneratedClips(generator, cfg.actions, args.per_class, progress)
    scorer = Scorer(data.stats, cfg.actions, recognizer, classifier, classifier_stats)
    rows = build_rows(data, scorer, args.per_class, generated, progress)
    summaries = run_rows(rows, args.seeds, args.per_class, progress)
    realism_summary = None
    if generated is not None and not args.no_realism:
        realism_summary = measure_realism(generated, data, args.seeds, realism.C2STConfig(fits=args.c2st_fits),
                                          progress)
    return {
        "command": command,
        "checkpoint": None if generator is None else str(args.checkpoint or "assets/actiongen.json"),
        "checkpoint_meta": None if generator is None else generator.bundle.meta,
        "recognizer": None if recognizer is None else {"path": args.recognizer, **recognizer.meta},
        "data": {"root": str(cfg.root), **cfg.provenance()},
        "seeds": list(args.seeds), "per_class": args.per_class, "c2st_fits": args.c2st_fits,
        "runtime_s": round(time.time() - start, 1),
        "rows": summaries, "published": list(PUBLISHED), "realism": realism_summary,
    }


def measure_realism(generated: GeneratedClips, data: PoseData, seeds: list[int], c2st: realism.C2STConfig,
                    progress: bool) -> dict:
    """actiongen.realism's measurements with their reference rows for every seed, on the seeds' clips that the
    MMD rows read, summarised over the seeds."""
    generator = generated.generator
    with realism.torch_threads(1):
        real = realism.RealSets.load(data)
        return realism.summarise_seeds([realism.measure_generator(generator, data, real, generated.per_class, seed,
                                                                  str(generator.device), references=True,
                                                                  progress=progress, batches=generated.get(seed),
                                                                  c2st_config=c2st)
                                        for seed in seeds])


def run_command(module: str, argv: list[str] | None, parse: Callable[[list[str]], argparse.Namespace],
                measure: Callable[[argparse.Namespace, str], dict]) -> tuple[argparse.Namespace, dict]:
    """What every evaluation command does around its measurement: parse the arguments, measure with the
    command line recorded, write `--out`; a bad bundle or data directory ends in a one-line error."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse(argv)
    try:
        report = measure(args, f"python -m {module} " + shlex.join(argv))
    except (CheckpointError, H36MDataError) as err:
        raise SystemExit(f"error: {err}") from err
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
    return args, report


def main(argv: list[str] | None = None) -> dict:
    args, report = run_command("actiongen.evaluate", argv, parse_args, evaluate)
    if args.markdown:
        print(to_markdown(report))
    else:
        for row in report["rows"]:
            m = row["metrics"]
            print(f"{row['name']:>40} vs {row['reference']:<45} MMD_avg {_cell(m['mmd_avg'])}  "
                  f"MMD_seq {_cell(m['mmd_seq'])}  FID {_cell(m['fid'], 2)}  acc {_cell(m['accuracy_recognizer'])}")
        if report["realism"]:
            print("realism: " + realism.one_line(report["realism"]))
        print(f"{report['runtime_s']:.0f} s")
    return report


if __name__ == "__main__":
    main()
