"""Latency and payload of one web-app request: generate a clip and build its three figures as JSON.

    python bench_app.py                      # the shipped checkpoint (or random weights if there is none)
    python bench_app.py --checkpoint PATH --repeats 30

Every repetition uses a new seed, so the result cache never answers. Prints the median and 90th percentile
of the whole request and of its model part, and the size of the JSON the browser receives.
"""
from __future__ import annotations

import argparse
import gzip
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from actiongen.app_logic import ActionGenService, Request
from actiongen.checkpoint import DEFAULT_BUNDLE, Bundle, build_models, save_bundle
from actiongen.data import NormStats
from actiongen.models import ModelConfig
from actiongen.skeleton import ACTIONS, POSE_DIM


def random_bundle(folder: Path) -> Path:
    """Random weights cost the same time as trained ones; used when no checkpoint exists yet."""
    torch.manual_seed(0)
    cfg = ModelConfig()
    transition, classifier = build_models(cfg)
    stats = NormStats(np.zeros(POSE_DIM, np.float32), np.full(POSE_DIM, 50.0, np.float32), 5000.0)
    return save_bundle(folder / "random.json", Bundle(cfg, stats, ACTIONS, transition.eval(), classifier.eval()))[0]


def percentiles_ms(seconds: list[float]) -> str:
    return f"median {1000 * np.median(seconds):6.1f} ms, p90 {1000 * np.percentile(seconds, 90):6.1f} ms"


def run(args: argparse.Namespace, work: Path) -> None:
    checkpoint = args.checkpoint or DEFAULT_BUNDLE
    if args.checkpoint is None and not DEFAULT_BUNDLE.is_file():
        checkpoint = random_bundle(work)
        print(f"no checkpoint at {DEFAULT_BUNDLE}: timing random weights (same cost)")
    service = ActionGenService(checkpoint, device="auto", work_dir=work)
    print(f"checkpoint {checkpoint}, device {service.generator.device}, torch threads {torch.get_num_threads()}")
    service.generate("Walking", 0, 50)  # warm-up: first calls pay for lazy initialisation

    for frames in args.frames:
        total, model = [], []
        for seed in range(1, args.repeats + 1):
            request = Request("Walking", seed, frames)
            start = time.perf_counter()
            service.sample_clip(request)
            model.append(time.perf_counter() - start)
            start = time.perf_counter()
            result = service.generate("Walking", 1000 + seed, frames)
            total.append(time.perf_counter() - start)
        payloads = {"skeleton": result.skeleton, "latent path": result.latent_path,
                    "probabilities": result.probabilities}
        size = sum(len(p) for p in payloads.values())
        zipped = sum(len(gzip.compress(p.encode())) for p in payloads.values())
        print(f"\n{frames} frames, {args.repeats} requests")
        print(f"  request (generate + figures): {percentiles_ms(total)}")
        print(f"  model only (sample):          {percentiles_ms(model)}")
        print(f"  figure JSON: {size / 1024:.1f} KiB ({', '.join(f'{k} {len(v) / 1024:.1f}' for k, v in payloads.items())}),"
              f" {zipped / 1024:.1f} KiB gzipped")

    start = time.perf_counter()
    strip = service.interpolate("Walking", 1, 2, 0.5, 5, 50)
    print(f"\ninterpolate, 5-clip strip, 50 frames: {1000 * (time.perf_counter() - start):.0f} ms, "
          f"strip JSON {len(strip.strip) / 1024:.1f} KiB")
    start = time.perf_counter()
    service.export(strip.request)
    print(f"export GIF + MP4 + NPZ + JSON, 50 frames: {1000 * (time.perf_counter() - start):.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=None, help="bundle .json (default: assets/actiongen.json)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--frames", type=int, nargs="+", default=[50, 300])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="actiongen-bench-") as work:
        run(args, Path(work))


if __name__ == "__main__":
    main()
