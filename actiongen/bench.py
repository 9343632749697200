"""Speed benchmark: `python -m actiongen.bench [--checkpoint PATH]`; `--app` runs the web-app benchmark
(`actiongen.bench_app`: browser latency, load, memory, exports cache) instead.

Times one warm 50-frame `Generator.sample` on one CPU thread, batched `sample_many` throughput on two
cores (two workers of one thread each, and one worker of two intra-op threads), the GIF export of a 50-frame clip at 256 px, and the BVH export of a 300-frame 3D clip (the shipped 3D model's, else a random-init one's); prints medians with the 10th-90th percentile
spread. Without a checkpoint it times a randomly initialised model: speed does not depend on the weights.
Wall-clock numbers are only comparable on an otherwise idle machine, so the load average is printed, and
so is the CPU time of this process, which other processes on the machine disturb much less.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import render
from .checkpoint import DEFAULT_BUNDLE, DEFAULT_BUNDLES, Bundle, build_models
from .data import NormStats
from .generator import Generator
from .models import ModelConfig
from .skeleton import ACTIONS, pose_dim_of


def timings_ms(fn: Callable[[], object], repeats: int, warmup: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Wall-clock and process CPU milliseconds of each of `repeats` calls."""
    for _ in range(warmup):
        fn()
    wall, cpu = np.empty(repeats), np.empty(repeats)
    for i in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall[i], cpu[i] = time.perf_counter() - start, time.process_time() - start_cpu
    return wall * 1e3, cpu * 1e3


def spread(times: tuple[np.ndarray, np.ndarray]) -> str:
    wall, cpu = times
    p10, median, p90 = np.percentile(wall, [10, 50, 90])
    return f"median {median:8.3f} ms  (p10 {p10:.3f}, p90 {p90:.3f}, n={len(wall)}; CPU {np.median(cpu):.3f} ms)"


def random_generator(dims: int = 2) -> Generator:
    """A randomly initialised model of 2D (dataset units) or 3D (mm) poses, std 50 per coordinate."""
    pose_dim = pose_dim_of(dims)
    cfg = ModelConfig(pose_dim=pose_dim)
    transition, classifier = build_models(cfg)
    stats = NormStats(np.zeros(pose_dim, np.float32), np.full(pose_dim, 50.0, np.float32), 5000.0,
                      np.array([0.0, 0.0, 5000.0]) if dims == 3 else None)
    return Generator(Bundle(cfg, stats, ACTIONS, transition, classifier, {}), "cpu")


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--app" in argv:
        from . import bench_app  # needs gradio, which the library itself does not
        argv.remove("--app")
        return bench_app.main(argv)
    p = argparse.ArgumentParser(prog="python -m actiongen.bench", description=__doc__.split("\n\n")[1])
    p.add_argument("--checkpoint", help="bundle .json (default: the shipped one, else a random-init model)")
    p.add_argument("--repeats", type=int, default=300, help="timed single-sample calls (default 300)")
    p.add_argument("--batch-sizes", default="256,512,1024", help="sample_many sizes (default 256,512,1024)")
    p.add_argument("--threads", type=int, default=2, help="cores for the batched runs (default 2)")
    args = p.parse_args(argv)

    if args.checkpoint or DEFAULT_BUNDLE.is_file():
        gen, model = Generator.load(args.checkpoint, device="cpu"), str(args.checkpoint or DEFAULT_BUNDLE)
    else:
        gen, model = random_generator(), f"random-init (no {DEFAULT_BUNDLE.name} yet)"
    cfg = gen.bundle.config
    print(f"torch {torch.__version__} | device {gen.device} | {cpu_name()}, {os.cpu_count()} cores | "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"model: {model} (head {cfg.head}, latent boundary {cfg.latent_boundary})")

    torch.set_num_threads(1)
    print("\none 50-frame clip, warm, 1 thread:")
    seeds = iter(range(10**9))
    print(f"  sample()                  {spread(timings_ms(lambda: gen.sample('Walking', next(seeds)), args.repeats))}")
    print(f"  sample(classify=False)    "
          f"{spread(timings_ms(lambda: gen.sample('Walking', next(seeds), classify=False), args.repeats))}")

    print(f"\nsample_many of 50-frame clips on {args.threads} cores (sequences per second, median of 5 runs):")
    for size in (int(s) for s in args.batch_sizes.split(",")):
        for classify in (False, True):
            for workers, intra_op in ((args.threads, 1), (1, args.threads)):
                torch.set_num_threads(intra_op)
                wall, cpu = timings_ms(lambda: gen.sample_many("Walking", range(size), classify=classify,
                                                               workers=workers), 5, warmup=1)
                print(f"  batch {size:5d} classify={classify!s:5} workers={workers} intra-op threads={intra_op}  "
                      f"{size / np.median(wall) * 1e3:6.0f} seq/s  ({size / np.median(cpu) * 1e3:.0f} per CPU-second)")

    torch.set_num_threads(1)
    clip = gen.sample("Walking", 0)
    print("\nexport of one 50-frame clip at 256 px, 1 thread:")
    print(f"  gif_bytes                 {spread(timings_ms(lambda: render.gif_bytes(clip, size=256), 20))}")

    bundle_3d = DEFAULT_BUNDLES["3d"]
    gen_3d = Generator.load(bundle_3d, device="cpu") if bundle_3d.is_file() else random_generator(dims=3)
    clip_3d = gen_3d.sample("Walking", 0, frames=300, classify=False)
    print(f"\nBVH export of one 300-frame 3D clip ({bundle_3d.name if bundle_3d.is_file() else 'random-init'}), "
          "fit + rotations + file, 1 thread:")
    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "clip.bvh"
        print(f"  export .bvh               {spread(timings_ms(lambda: render.export(clip_3d, target), 20))}")


if __name__ == "__main__":
    main()
