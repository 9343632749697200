"""The 3D model's evaluation: the numbers of its model card, with the 2D pipeline's metrics reused.

    python -m actiongen.evaluate3d --checkpoint assets/actiongen3d.json [--per-class 1000] [--seeds 0 1 2]
                                   [--markdown] [--out results3d.json] [--quiet]

For each seed it generates `per_class` clips of every action and measures:
  MMD           the published protocol (actiongen.evaluate / metrics) on 45-d clips standardised with the 3D
                training statistics, against the training clips and the test subject (S11), beside the
                reference row "real S11 vs train";
  C2ST          actiongen.realism's two-sample test against real 3D clips (fit on some training subjects,
                scored on a held-out training subject, never S11) with its reference rows, overall and per class;
  motion        realism's per-class motion statistics in mm per frame, generated / real, Walking's step rate;
  bone lengths  the within-clip coefficient of variation of each bone's length in % (mean over bones and
                clips, and the worst bone) of the generated clips (on the fixed-length skeleton that
                Generator.sample puts 3D clips on), of the network's raw joints and of real clips, and how far
                that fit (actiongen.skeleton.fit_fixed_lengths) moves the network's joints;
  2D projection the generated clips drawn by actiongen.views.camera_view (camera 55011271 of the first
                training subject) and scored like a 2D model: MMD against the 2D training clips and S11,
                the shipped 2D recogniser's accuracy, FID, and the C2ST against real 2D clips;
  occupancy     realism's latent occupancy of the prior box.
Every other measurement reads the clips users get, on the fixed-length skeleton. Each seed's generated clips
are drawn twice (once for the MMD rows, once for the rest) rather than kept for all seeds at once: at 1000
per class one seed's clips and their views take ~300 MB.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass, replace
from typing import Callable

import numpy as np
from tqdm.auto import tqdm

from . import evaluate, realism
from .checkpoint import CheckpointError
from .data import (Camera, ClipDataset, DataConfig, NormStats, PoseData, joints_to_vectors, load_cameras,
                   load_pose_data)
from .generator import Generator, SampleBatch
from .recognizer import DEFAULT_RECOGNIZER, load_recognizer
from .skeleton import BONES, JOINT_NAMES, FittedClip, fit_fixed_lengths
from .views import camera_view

BONE_CV_TARGET_PERCENT = 3.0  # issue 11: generated bone lengths vary by at most 3 % within a clip
BONE_NAMES = tuple(f"{JOINT_NAMES[parent]}-{JOINT_NAMES[child]}" for parent, child, _ in BONES)
MODEL_3D = "ActionGen 3D"
MODEL_2D = "ActionGen 3D, 2D projection"


# ----------------------------------------------------------------------------- the two views of the data

def project_to_vectors(joints: np.ndarray, camera: Camera, stats_3d: NormStats, stats_2d: NormStats) -> np.ndarray:
    """3D clips (..., T, 16, 3) in mm -> the 2D pipeline's normalised 30-d vectors (..., T, 30)."""
    return joints_to_vectors(camera_view(joints, camera, stats_3d), stats_2d).astype(np.float32)


@dataclass
class Views:
    """The 3D data, the 2D data of the same subjects, and the camera that turns the one into the other."""

    data_3d: PoseData
    data_2d: PoseData
    camera: Camera

    @classmethod
    def load(cls, cfg: DataConfig) -> "Views":
        data_3d = load_pose_data(replace(cfg, dims=3))
        # A generated clip belongs to no subject, so one subject's camera stands for all. Only its rotation
        # matters (camera_view places the hip in camera coordinates), and camera 55011271's rotation differs
        # by at most 1.6 degrees between the Human3.6M subjects.
        camera = load_cameras(cfg.root, cfg.camera)[cfg.train_subjects[0]]
        return cls(data_3d, load_pose_data(replace(cfg, dims=2)), camera)

    def project(self, joints: np.ndarray) -> np.ndarray:
        return project_to_vectors(joints, self.camera, self.data_3d.stats, self.data_2d.stats)


class GeneratedSeed:
    """The clips of the latest evaluation seed asked for, in both views (one seed kept: see the docstring), on
    the fixed-length skeleton as Generator.sample gives them, and the network's raw joints of the same clips."""

    def __init__(self, generator: Generator, views: Views, per_class: int, progress: bool) -> None:
        self.generator, self.views, self.per_class, self.progress = generator, views, per_class, progress
        self.seed: int | None = None
        self.batches: dict[str, SampleBatch] = {}
        self.network_joints: dict[str, np.ndarray] = {}
        self.fits: dict[str, FittedClip] = {}

    def get(self, seed: int) -> dict[str, SampleBatch]:
        if seed != self.seed:
            raw = evaluate.generate_per_class(self.generator, self.views.data_3d.config.actions,
                                              self.per_class, seed, self.progress, fixed_bones=False)
            self.network_joints = {a: b.joints for a, b in raw.items()}
            self.fits = {a: fit_fixed_lengths(joints) for a, joints in self.network_joints.items()}
            self.batches = {a: replace(b, joints=self.fits[a].joints) for a, b in raw.items()}
            self.seed = seed
        return self.batches

    def vectors_3d(self, seed: int) -> dict[str, np.ndarray]:
        return {a: joints_to_vectors(b.joints, self.views.data_3d.stats).astype(np.float32)
                for a, b in self.get(seed).items()}

    def vectors_2d(self, seed: int) -> dict[str, np.ndarray]:
        return {a: self.views.project(b.joints) for a, b in self.get(seed).items()}


# ----------------------------------------------------------------------------- MMD rows (actiongen.evaluate)

def mmd_rows(views: Views, samples: GeneratedSeed, scorer_3d: evaluate.Scorer, scorer_2d: evaluate.Scorer,
             per_class: int) -> tuple[list[evaluate.Row], list[evaluate.Row]]:
    """The 3D rows and the 2D-projection rows: the model against the training clips and the test subject, and
    the reference row "real <test subject> vs train", with evaluate.build_rows's reference sets (its other
    reference rows are left out: scoring their sets doubled this command's setup time)."""
    cfg = views.data_3d.config
    train_name = f"train ({evaluate.subjects_label(cfg.train_subjects)})"
    test_name = f"test ({evaluate.subjects_label(cfg.test_subjects)})"

    def rows_of(data: PoseData, scorer: evaluate.Scorer, name: str,
                generated: Callable[[int], evaluate.ClipSet]) -> list[evaluate.Row]:
        train = scorer.score(ClipDataset(data, "train").per_class(per_class, seed=0))
        test = scorer.score(ClipDataset(data, "test").per_class())
        return [evaluate.Row(name, train_name, "model", generated, train),
                evaluate.Row(name, test_name, "model", generated, test),
                evaluate.Row(f"real {evaluate.subjects_label(cfg.test_subjects)}", train_name, "real",
                             lambda seed: test, train)]

    def scored_3d(seed: int) -> evaluate.ClipSet:
        probabilities = np.concatenate([b.probabilities for b in samples.get(seed).values()])
        return scorer_3d.score(samples.vectors_3d(seed), own_scores=probabilities)

    return (rows_of(views.data_3d, scorer_3d, MODEL_3D, scored_3d),
            rows_of(views.data_2d, scorer_2d, MODEL_2D, lambda seed: scorer_2d.score(samples.vectors_2d(seed))))


# ----------------------------------------------------------------------------- bone lengths

def bone_cv_percent(joints: np.ndarray) -> np.ndarray:
    """(bones,) within-clip coefficient of variation of each bone's length in %, mean over clips (N, T, 16, 3)."""
    return 100.0 * realism.bone_length_cvs(joints).mean(axis=0)


def bone_stability(per_bone_percent: dict[str, np.ndarray]) -> dict[str, dict]:
    """Per class and over all classes: the mean over bones of per-bone CVs (%) and the worst bone."""
    classes = {**per_bone_percent, "all": np.mean(list(per_bone_percent.values()), axis=0)}
    return {action: {"cv_percent": float(cvs.mean()), "worst_bone": BONE_NAMES[int(cvs.argmax())],
                     "worst_bone_cv_percent": float(cvs.max()), "per_bone_cv_percent": cvs.tolist()}
            for action, cvs in classes.items()}


def fit_displacement(fits: dict[str, FittedClip]) -> dict[str, float]:
    """How far fit_fixed_lengths moved the joints of each class's clips (mm): mean over joints, frames and
    clips, and the maximum."""
    sizes = [fit.displacement.size for fit in fits.values()]
    return {"mean_mm": float(np.average([f.displacement_mean_mm for f in fits.values()], weights=sizes)),
            "max_mm": float(max(f.displacement_max_mm for f in fits.values()))}


def summarise_bones(per_seed: list[dict[str, np.ndarray]], network_per_seed: list[dict[str, np.ndarray]],
                    real: dict[str, np.ndarray], generated_fit: list[dict[str, float]],
                    real_fit: dict[str, float]) -> dict:
    """Per-bone CVs of the generated clips and of the network's raw joints averaged over the seeds, then
    bone_stability; the fit displacement's mean over seeds and maximum over seeds."""
    def over_seeds(seeds: list[dict[str, np.ndarray]]) -> dict[str, dict]:
        return bone_stability({a: np.mean([seed[a] for seed in seeds], axis=0) for a in seeds[0]})

    generated = over_seeds(per_seed)
    return {"generated": generated, "network": over_seeds(network_per_seed), "real": bone_stability(real),
            "bones": list(BONE_NAMES),
            "target_cv_percent": BONE_CV_TARGET_PERCENT,
            "target_met": generated["all"]["cv_percent"] <= BONE_CV_TARGET_PERCENT,
            "fit_displacement": {"generated": {"mean_mm": float(np.mean([f["mean_mm"] for f in generated_fit])),
                                               "max_mm": float(max(f["max_mm"] for f in generated_fit))},
                                 "real": real_fit}}


# ----------------------------------------------------------------------------- one seed

def measure_seed(samples: GeneratedSeed, real_3d: realism.RealSets, real_2d: realism.RealSets, seed: int,
                 device: str, progress: bool, c2st_config: realism.C2STConfig = realism.C2STConfig()) -> dict:
    """realism's measurements of one seed's clips in 3D (with the C2ST reference rows) and in the 2D view,
    the per-bone CVs of the generated clips and of the network's raw joints, and the fit displacement."""
    actions = samples.views.data_3d.config.actions
    per_class = samples.per_class
    batches = samples.get(seed)
    joints = {a: b.joints for a, b in batches.items()}
    occupancy = {**realism.latent_occupancy(np.concatenate([b.latents for b in batches.values()])),
                 "per_class_clamp_share": {a: realism.latent_occupancy(b.latents)["clamp_share"]
                                           for a, b in batches.items()}}

    def measured(generated: dict[str, np.ndarray], generated_joints: dict[str, np.ndarray],
                 real: realism.RealSets, references: bool) -> dict:
        real_stats = realism.motion_statistics(real.motion_reference)
        generated_stats = realism.motion_statistics(generated_joints)
        return {"c2st": realism.c2st_rows(generated, real, actions, per_class, seed, device, references,
                                          c2st_config, progress),
                "motion": {"generated": generated_stats, "real": real_stats,
                           "real_test_subjects": realism.motion_statistics(real.motion_test_subjects),
                           "ratio": realism.motion_ratios(generated_stats, real_stats)},
                "occupancy": occupancy}

    views = samples.views
    projected_joints = {a: camera_view(j, views.camera, views.data_3d.stats) for a, j in joints.items()}
    return {"3d": measured(samples.vectors_3d(seed), joints, real_3d, references=True),
            "2d": measured(samples.vectors_2d(seed), projected_joints, real_2d, references=False),
            "bone_cv_percent": {a: bone_cv_percent(j) for a, j in joints.items()},
            "network_bone_cv_percent": {a: bone_cv_percent(j) for a, j in samples.network_joints.items()},
            "fit_displacement": fit_displacement(samples.fits)}


# ----------------------------------------------------------------------------- the command

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", default=None,
                   help="3D bundle .json (default: the shipped assets/actiongen3d.json)")
    p.add_argument("--recognizer", default=str(DEFAULT_RECOGNIZER),
                   help="2D recogniser bundle .json for the projection, or 'none'")
    evaluate.add_protocol_arguments(p)
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads; 0 leaves torch's choice (one is fastest on a busy 2-core machine)")
    args = p.parse_args(argv)
    evaluate.check_protocol_arguments(p, args, 4)
    return args


def load_generator(path: str | None, device: str, data_3d: PoseData) -> Generator:
    """The 3D bundle, refused when it is 2D or was trained on other actions."""
    generator = Generator.load(path, device=device) if path else Generator.load(model="3d", device=device)
    if generator.dims != 3:
        raise CheckpointError(f"{path}: a {generator.dims}D bundle; this evaluation needs a 3D one "
                              "(python -m actiongen.evaluate evaluates 2D bundles)")
    if tuple(generator.actions) != tuple(data_3d.config.actions):
        raise CheckpointError(f"the checkpoint's actions {list(generator.actions)} differ from the data's "
                              f"{list(data_3d.config.actions)}")
    return generator


def evaluate3d(args: argparse.Namespace, command: str) -> dict:
    start = time.time()
    progress = not args.quiet
    cfg = evaluate.protocol_data_config(args)
    views = Views.load(cfg)
    generator = load_generator(args.checkpoint, args.device, views.data_3d)
    recognizer = None if args.recognizer.lower() == "none" else load_recognizer(args.recognizer)
    actions = cfg.actions
    samples = GeneratedSeed(generator, views, args.per_class, progress)
    with realism.torch_threads(args.threads):
        scorer_3d = evaluate.Scorer(views.data_3d.stats, actions, None, generator.bundle.classifier,
                                    generator.stats)
        scorer_2d = evaluate.Scorer(views.data_2d.stats, actions, recognizer, None, None)
        rows_3d, rows_2d = mmd_rows(views, samples, scorer_3d, scorer_2d, args.per_class)
        summaries = evaluate.run_rows(rows_3d + rows_2d, args.seeds, args.per_class, progress)
        real_3d = realism.RealSets.load(views.data_3d)
        real_2d = realism.RealSets.load(views.data_2d)
        c2st_config = realism.C2STConfig(fits=args.c2st_fits)
        per_seed = [measure_seed(samples, real_3d, real_2d, seed, args.device, progress, c2st_config)
                    for seed in tqdm(args.seeds, desc="realism and bone lengths", unit="seed",
                                     disable=not progress)]
    real_joints = real_3d.motion_reference
    bones = summarise_bones([m["bone_cv_percent"] for m in per_seed],
                            [m["network_bone_cv_percent"] for m in per_seed],
                            {a: bone_cv_percent(j) for a, j in real_joints.items()},
                            [m["fit_displacement"] for m in per_seed],
                            fit_displacement({a: fit_fixed_lengths(j) for a, j in real_joints.items()}))
    realism_3d = realism.summarise_seeds([m["3d"] for m in per_seed])
    return {
        "command": command,
        "checkpoint": str(args.checkpoint or "assets/actiongen3d.json"),
        "checkpoint_meta": generator.bundle.meta,
        "recognizer": None if recognizer is None else {"path": args.recognizer, **recognizer.meta},
        "data": {"root": str(cfg.root), **cfg.provenance()},
        "camera": {"name": views.camera.name, "subject": cfg.train_subjects[0]},
        "realism_subjects": asdict(real_3d.subjects),
        "seeds": list(args.seeds), "per_class": args.per_class, "c2st_fits": args.c2st_fits,
        "runtime_s": round(time.time() - start, 1),
        "mmd": summaries[:len(rows_3d)],
        **realism_3d,  # c2st, motion (mm per frame), occupancy
        "bone_lengths": bones,
        "projection_2d": {"mmd": summaries[len(rows_3d):],
                          "realism": realism.summarise_seeds([m["2d"] for m in per_seed])},
        "per_seed": [{"3d": m["3d"], "2d": m["2d"], "fit_displacement": m["fit_displacement"]} for m in per_seed],
    }


# ----------------------------------------------------------------------------- reporting

def bones_markdown(bones: dict) -> str:
    kinds = ("generated", "network", "real")
    lines = ["| Bone-length CV within a clip (%) | generated: mean over bones | generated: worst bone | "
             "network's raw joints: mean | network: worst bone | real: mean over bones | real: worst bone |",
             "|---|---|---|---|---|---|---|"]
    for action in bones["generated"]:
        cells = [(bones[k][action]["cv_percent"], bones[k][action]["worst_bone"],
                  bones[k][action]["worst_bone_cv_percent"]) for k in kinds]
        lines.append(f"| {action} | " + " | ".join(f"{mean:.2f} | {bone} {worst:.2f}" for mean, bone, worst in cells)
                     + " |")
    fit = bones["fit_displacement"]
    verdict = "met" if bones["target_met"] else "NOT met"
    lines += ["", f"Target: generated <= {bones['target_cv_percent']:.0f} % ({verdict}). Generated clips are on "
                  f"the fixed-length skeleton (actiongen.skeleton.fit_fixed_lengths, applied by Generator.sample "
                  f"and by every 3D export); putting the network's joints on it moves them by "
                  f"{fit['generated']['mean_mm']:.1f} mm on average, {fit['generated']['max_mm']:.1f} mm at most "
                  f"(real clips: {fit['real']['mean_mm']:.1f} / {fit['real']['max_mm']:.1f} mm).", ""]
    return "\n".join(lines)


def to_markdown(report: dict) -> str:
    """The model card's sections, each table from the module that defines its metric."""
    common = {"seeds": report["seeds"], "per_class": report["per_class"], "runtime_s": report["runtime_s"],
              "command": report["command"]}
    projection = report["projection_2d"]
    return "\n".join([
        "### MMD (published protocol, 45-d clips standardised with the 3D training statistics)", "",
        evaluate.to_markdown({**common, "rows": report["mmd"], "published": [], "realism": None}),
        "### Realism against real 3D clips (motion statistics in mm per frame)", "",
        realism.to_markdown({k: report[k] for k in ("c2st", "motion", "occupancy")}),
        "### Bone-length stability", "", bones_markdown(report["bone_lengths"]),
        f"### 2D projection (camera {report['camera']['name']}) with the 2D metrics", "",
        evaluate.to_markdown({**common, "rows": projection["mmd"], "published": list(evaluate.PUBLISHED),
                              "realism": None}),
        "Realism of the projection against real 2D clips (dataset units per frame)", "",
        realism.to_markdown(projection["realism"]),
    ])


def one_line(report: dict) -> str:
    """MMD against training and S11, C2ST, bone-length CV and the projection's recogniser accuracy."""
    model = [r for r in report["mmd"] if r["kind"] == "model"]
    projected = next(r for r in report["projection_2d"]["mmd"] if r["kind"] == "model")
    mmd = " | ".join(f"MMD vs {r['reference']} {r['metrics']['mmd_avg']['mean']:.3f} / "
                     f"{r['metrics']['mmd_seq']['mean']:.3f}" for r in model)
    bones = report["bone_lengths"]
    accuracy = projected["metrics"]["accuracy_recognizer"]
    return (f"3D: {mmd} | {realism.one_line({k: report[k] for k in ('c2st', 'motion', 'occupancy')})} | bone CV "
            f"{bones['generated']['all']['cv_percent']:.2f} % (network {bones['network']['all']['cv_percent']:.2f} %)"
            " | 2D projection: recogniser "
            + ("n/a" if accuracy is None else f"{accuracy['mean']:.3f}") + f" | {report['runtime_s']:.0f} s")


def main(argv: list[str] | None = None) -> dict:
    args, report = evaluate.run_command("actiongen.evaluate3d", argv, parse_args, evaluate3d)
    print(to_markdown(report) if args.markdown else one_line(report))
    return report


if __name__ == "__main__":
    main()
