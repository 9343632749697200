"""Pick the stage-2 checkpoint whose clips a classifier tells from real ones least often, and export it.

    python -m train.select_checkpoint --run runs/stage2 --export assets/actiongen.json

Scores every bundle in <run>/candidates (written by `stage2_sequence --candidate-every N`) with the
realism two-sample test (actiongen.realism: fitted on training subjects, scored on a held-out training
subject; the test subject S11 is never looked at) and exports the one with the lowest accuracy, recording
every candidate's score in the bundle's training metadata. A lower C2ST has often come with poses that drift
from the data (rounds 2-9 of the model card): `--max-mmd B` makes only candidates whose MMD_avg and MMD_seq
against the training clips are both at most B eligible.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from tqdm.auto import tqdm

from actiongen.checkpoint import load_bundle, save_bundle
from actiongen.data import DataConfig, default_data_root, load_pose_data
from actiongen.realism import evaluate_bundle


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--run", required=True, help="stage-2 run directory holding candidates/step_*.json")
    p.add_argument("--export", required=True, help="write the chosen bundle here (e.g. assets/actiongen.json)")
    p.add_argument("--data-root", default=str(default_data_root()), help="unpacked Human3.6M h36m archive")
    p.add_argument("--per-class", type=int, default=500, help="generated clips per class for each score")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--max-mmd", type=float, default=None,
                   help="only candidates whose MMD_avg and MMD_seq against the training clips are both at most "
                        "this are eligible; where none is, the one with the lowest MMD is chosen")
    p.add_argument("--mmd-per-class", type=int, default=300, help="clips per class for that MMD")
    p.add_argument("--skip-frames", type=int, default=0,
                   help="score clips cut from samples this many frames longer (actiongen.realism --skip-frames)")
    args = p.parse_args(argv)
    if args.max_mmd is not None and args.max_mmd <= 0:
        p.error(f"--max-mmd must be positive; got {args.max_mmd}")
    if args.mmd_per_class < 2:
        p.error(f"--mmd-per-class must be at least 2; got {args.mmd_per_class}")
    if args.skip_frames < 0:
        p.error(f"--skip-frames must be at least 0; got {args.skip_frames}")
    return args


def choose(results: dict[str, dict], max_mmd: float | None) -> tuple[str, str]:
    """The candidate with the lowest C2ST among those within the MMD bound (all, without one), and why."""
    c2st = {name: r["c2st"] for name, r in results.items()}
    if max_mmd is None:
        return min(c2st, key=c2st.get), "lowest C2ST"
    mmd = {name: max(r["mmd_avg"], r["mmd_seq"]) for name, r in results.items()}
    eligible = [name for name in results if mmd[name] <= max_mmd]
    if eligible:
        return min(eligible, key=c2st.get), f"lowest C2ST with MMD <= {max_mmd}"
    return min(mmd, key=mmd.get), f"no candidate has MMD <= {max_mmd}: lowest MMD"


def summary(result: dict) -> str:
    mmd = f", MMD vs train {result['mmd_avg']:.3f} / {result['mmd_seq']:.3f}" if "mmd_avg" in result else ""
    return f"C2ST {result['c2st']:.3f}{mmd}"


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    candidates = sorted(Path(args.run, "candidates").glob("step_*.json"))
    if not candidates:
        raise SystemExit(f"error: no candidates in {args.run}/candidates; train with --candidate-every N")
    dims = load_bundle(candidates[0]).dims
    data = load_pose_data(DataConfig(root=args.data_root, dims=dims))
    mmd_per_class = None if args.max_mmd is None else args.mmd_per_class
    results = {}
    for path in tqdm(candidates, desc="scoring candidates", unit="bundle"):
        results[path.stem] = evaluate_bundle(path, data, per_class=args.per_class, seed=args.seed,
                                             device=args.device, progress=False, mmd_per_class=mmd_per_class,
                                             skip_frames=args.skip_frames)
        tqdm.write(f"{path.stem}: {summary(results[path.stem])}")
    best, reason = choose(results, args.max_mmd)
    scores = {name: r["c2st"] for name, r in results.items()}
    bundle = load_bundle(Path(args.run, "candidates", f"{best}.json"))
    selection = {"by": f"realism C2ST on a held-out training subject ({reason})", "per_class": args.per_class,
                 "skip_frames": args.skip_frames, "chosen": best,
                 "c2st": {k: round(v, 4) for k, v in scores.items()}}
    if mmd_per_class is not None:
        selection["mmd_vs_train"] = {k: [round(r["mmd_avg"], 4), round(r["mmd_seq"], 4)]
                                     for k, r in results.items()}
        selection["mmd_per_class"] = mmd_per_class
    bundle.meta["training"]["selection"] = selection
    json_path, weights_path = save_bundle(args.export, bundle)
    print(f"chose {best} ({reason}: {summary(results[best])}); bundle written: {json_path} + {weights_path.name}")
    return scores


if __name__ == "__main__":
    main()
