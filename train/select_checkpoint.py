"""Pick the stage-2 checkpoint whose clips a classifier tells from real ones least often, and export it.

    python -m train.select_checkpoint --run runs/stage2 --export assets/actiongen.json

Scores every bundle in <run>/candidates (written by `stage2_sequence --candidate-every N`) with the
realism two-sample test (actiongen.realism: fitted on training subjects, scored on a held-out training
subject; the test subject S11 is never looked at) and exports the one with the lowest accuracy, recording
every candidate's score in the bundle's training metadata.
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
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    candidates = sorted(Path(args.run, "candidates").glob("step_*.json"))
    if not candidates:
        raise SystemExit(f"error: no candidates in {args.run}/candidates; train with --candidate-every N")
    dims = load_bundle(candidates[0]).dims
    data = load_pose_data(DataConfig(root=args.data_root, dims=dims))
    scores = {}
    for path in tqdm(candidates, desc="scoring candidates", unit="bundle"):
        scores[path.stem] = evaluate_bundle(path, data, per_class=args.per_class, seed=args.seed,
                                            device=args.device, progress=False)["c2st"]
        tqdm.write(f"{path.stem}: C2ST {scores[path.stem]:.3f}")
    best = min(scores, key=scores.get)
    bundle = load_bundle(Path(args.run, "candidates", f"{best}.json"))
    bundle.meta["training"]["selection"] = {"by": "realism C2ST on a held-out training subject",
                                            "per_class": args.per_class, "chosen": best,
                                            "c2st": {k: round(v, 4) for k, v in scores.items()}}
    json_path, weights_path = save_bundle(args.export, bundle)
    print(f"chose {best} (C2ST {scores[best]:.3f}); bundle written: {json_path} + {weights_path.name}")
    return scores


if __name__ == "__main__":
    main()
