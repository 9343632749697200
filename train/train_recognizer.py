"""Train the evaluation recogniser (actiongen/recognizer.py) on real training clips and report its accuracy
on the test subject.

    python -m train.train_recognizer --out assets/recognizer.json

It never sees generated clips, so it can grade the generator; its features feed FID, diversity and
multimodality in `python -m actiongen.evaluate`. The test subject is only reported, never used to pick
a checkpoint.
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from actiongen.data import ClipDataset, ClipSampler, DataConfig, NormStats, default_data_root, load_pose_data
from actiongen.metrics import accuracy
from actiongen.recognizer import ActionRecognizer, Recognizer, RecognizerConfig, save_recognizer
from actiongen.skeleton import HIP, JOINT_NAMES, POSE_DIM


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data-root", default=str(default_data_root()), help="unpacked Human3.6M h36m archive")
    p.add_argument("--cache-dir", default=None, help="projection cache (default: ~/.cache/actiongen)")
    p.add_argument("--train-subjects", type=int, nargs="+", default=list(DataConfig.train_subjects))
    p.add_argument("--test-subjects", type=int, nargs="+", default=list(DataConfig.test_subjects))
    p.add_argument("--out", default="assets/recognizer.json", help="where to write the recogniser bundle")
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (cosine decay to 0)")
    p.add_argument("--hidden", type=int, default=RecognizerConfig.hidden)
    p.add_argument("--noise", type=float, default=0.05, help="std of Gaussian jitter added to training clips")
    p.add_argument("--max-scale", type=float, default=0.15, help="random body scale in [1 - s, 1 + s]")
    p.add_argument("--dropout", type=float, default=0.3)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=500)
    return p.parse_args(argv)


def mirror_permutation() -> list[int]:
    """For each of the 30 pose-vector entries, the entry it takes in the left-right mirrored pose."""
    names = [n for i, n in enumerate(JOINT_NAMES) if i != HIP]
    partner = {n: ("L" + n[1:] if n.startswith("R") else "R" + n[1:] if n.startswith("L") else n) for n in names}
    return [2 * names.index(partner[n]) + axis for n in names for axis in (0, 1)]


class Augmenter:
    """Random body scale in [1 - max_scale, 1 + max_scale], left-right mirroring of half the clips (the actions
    have no handedness) and Gaussian jitter, applied in joint space and mapped back to the normalised space."""

    def __init__(self, stats: NormStats, noise: float, max_scale: float, seed: int) -> None:
        self.mean, self.std = torch.from_numpy(stats.mean).float(), torch.from_numpy(stats.std).float()
        self.noise, self.max_scale = noise, max_scale
        self.permutation = mirror_permutation()
        self.flip_x = torch.tensor([-1.0, 1.0]).repeat(POSE_DIM // 2)
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, clips: torch.Tensor) -> torch.Tensor:
        joints = clips * self.std + self.mean
        mirrored = (joints * self.flip_x)[..., self.permutation]
        flip = torch.rand(len(clips), 1, 1, generator=self.generator) < 0.5
        joints = torch.where(flip, mirrored, joints)
        scale = 1 + self.max_scale * (2 * torch.rand(len(clips), 1, 1, generator=self.generator) - 1)
        x = (scale * joints - self.mean) / self.std
        return x + self.noise * torch.randn(x.shape, generator=self.generator)


@torch.no_grad()
def evaluate(recognizer: Recognizer, dataset: ClipDataset) -> float:
    _, logits = recognizer.predict(dataset.clips)
    return accuracy(logits, dataset.labels)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    data = load_pose_data(DataConfig(root=args.data_root, train_subjects=tuple(args.train_subjects),
                                     test_subjects=tuple(args.test_subjects),
                                     **({"cache_dir": args.cache_dir} if args.cache_dir else {})))
    sampler = ClipSampler(data, "train", seed=args.seed)
    test = ClipDataset(data, "test")
    cfg = RecognizerConfig(num_classes=len(data.config.actions), hidden=args.hidden, dropout=args.dropout)
    recognizer = Recognizer(ActionRecognizer(cfg), data.stats, data.config.actions)
    model = recognizer.model
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / args.steps)))
    augment = Augmenter(data.stats, args.noise, args.max_scale, args.seed)
    start, running = time.time(), []
    for step in range(1, args.steps + 1):
        model.train()
        clips, labels = sampler.clips(args.batch)
        loss = F.cross_entropy(model(augment(clips)), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        running.append(loss.item())
        if step % args.log_every == 0 or step == args.steps:
            print(f"step {step:6d}  loss {np.mean(running):.4f}  {time.time() - start:7.1f}s", flush=True)
            running = []
    train_seconds = time.time() - start
    train_accuracy = evaluate(recognizer, ClipDataset(data, "train"))
    test_accuracy = evaluate(recognizer, test)
    recognizer.meta = {
        "training": {"steps": args.steps, "batch": args.batch, "lr": args.lr, "noise": args.noise,
                     "max_scale": args.max_scale, "mirror": True, "seed": args.seed, "seconds": round(train_seconds, 1),
                     "threads": args.threads},
        "data": data.config.provenance(),
        "accuracy": {"train": round(train_accuracy, 4), "test": round(test_accuracy, 4),
                     "test_subjects": list(data.config.test_subjects), "test_clips": len(test)},
    }
    json_path, weights_path = save_recognizer(args.out, recognizer)
    print(f"train accuracy {train_accuracy:.3f}  test (S{', S'.join(map(str, data.config.test_subjects))}) "
          f"accuracy {test_accuracy:.3f}  ({train_seconds:.0f}s)  -> {json_path}, {weights_path}")


if __name__ == "__main__":
    main()
