"""What both training stages share: arguments, run directory, atomic resumable state, logs and plots."""
from __future__ import annotations

import argparse
import io
import json
import math
import random
import subprocess
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from actiongen.checkpoint import atomic_write_bytes  # noqa: E402
from actiongen.data import DataConfig, default_data_root, vectors_to_joints  # noqa: E402
from actiongen.skeleton import BONES, SPACE_DIMS, dims_of_pose_dim  # noqa: E402
from actiongen.views import drawable  # noqa: E402

SIDE_COLORS = {"left": "#1f77b4", "right": "#d62728", "center": "#333333"}
PRECISIONS = ("auto", "float32", "bfloat16")


def base_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data-root", default=str(default_data_root()), help="unpacked Human3.6M h36m archive")
    p.add_argument("--out", required=True, help="run directory (state, logs, samples)")
    p.add_argument("--preset", choices=["paper", "fast"], default="fast",
                   help="paper: the seed's hyperparameters; fast: the shipped CPU-budget variant")
    p.add_argument("--steps", type=int, help="generator steps (stage 1) or iterations (stage 2)")
    p.add_argument("--batch", type=int, help="batch size")
    p.add_argument("--lr", type=float, help="learning rate")
    p.add_argument("--train-subjects", type=int, nargs="+", default=[1, 5, 6, 7, 8, 9])
    p.add_argument("--test-subjects", type=int, nargs="+", default=[11])
    p.add_argument("--dims", type=int, choices=SPACE_DIMS,
                   help="2: camera-view poses (default); 3: world-frame poses in mm. Stage 2 takes its stage-1 "
                        "run's")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/state.pt")
    p.add_argument("--checkpoint-every", type=int, default=1000, help="steps between saved states")
    p.add_argument("--sample-every", type=int, default=2000, help="steps between sample sheets")
    p.add_argument("--log-every", type=int, default=50, help="steps between metric log lines")
    return p


def apply_preset(args: argparse.Namespace, presets: dict[str, dict]) -> argparse.Namespace:
    """Fill every option the user left unset from the chosen preset."""
    for key, value in presets[args.preset].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    return args


def add_precision_option(p: argparse.ArgumentParser, whose: str, default: str) -> None:
    """--precision: `whose` training arithmetic (e.g. "the denoiser's")."""
    p.add_argument("--precision", choices=PRECISIONS, default=default,
                   help=f"{whose} training arithmetic: bfloat16 autocast (weights, optimiser and loss stay "
                        "float32), float32, or auto: bfloat16 where the device computes it natively")


def native_bfloat16(device: torch.device) -> bool:
    """Whether `device` computes bfloat16 natively: emulated, a bfloat16 pass is slower than a float32 one."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def uses_bfloat16(precision: str, device: torch.device) -> bool:
    """Whether --precision `precision` trains under bfloat16 autocast on `device`."""
    return precision == "bfloat16" or (precision == "auto" and native_bfloat16(device))


def bfloat16_autocast(device: torch.device, enabled: bool) -> torch.autocast:
    """The training passes' arithmetic: bfloat16 autocast on `device` where `enabled`, float32 otherwise."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def precision_name(bfloat16: bool) -> str:
    """What a bundle records of a stage's training arithmetic."""
    return "bfloat16" if bfloat16 else "float32"


def code_version() -> str:
    """The git commit the code runs from (with -dirty for uncommitted changes), recorded in every bundle."""
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise SystemExit(f"error: unknown device {name!r}; valid: auto, cpu, cuda, cuda:N")
    return torch.device(name)


def setup(args: argparse.Namespace) -> tuple[torch.device, DataConfig]:
    if args.threads:
        torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    return pick_device(args.device), DataConfig(root=args.data_root, train_subjects=tuple(args.train_subjects),
                                                test_subjects=tuple(args.test_subjects), dims=args.dims or 2)


def stage1_dims(stage1: dict, requested: int | None) -> int:
    """The coordinates per joint of a stage-1 state's decoder; SystemExit if `requested` (--dims) differs."""
    dims = dims_of_pose_dim(stage1["model"]["pose_dim"])
    if requested is not None and requested != dims:
        raise SystemExit(f"error: --dims {requested} but the stage-1 decoder was trained on {dims}D poses; "
                         f"leave --dims out or give --dims {dims}")
    return dims


def stage1_record(stage1: dict) -> dict:
    """What a bundle records of the stage-1 run its decoder comes from."""
    args = stage1["args"]
    # States written before an option existed: no encoder term, float32, no refiner.
    return {"steps": stage1["step"], "minutes": round(stage1["elapsed"] / 60, 2), "preset": args["preset"],
            "batch": args["batch"], "recon_weight": args.get("recon_weight", 0.0),
            "refiner_steps": args.get("refiner_steps", 0) if "refiner" in stage1 else 0,
            "precision": stage1.get("precision", "float32")}


def bundle_meta(data, data_cfg: DataConfig, stage1: dict, device: torch.device, seed: int, stage2: dict) -> dict:
    """Where a bundle comes from: data settings, both stages' recipes (`stage2` as the stage records it), the
    device, the seed and the code version."""
    return {
        "data": {**data_cfg.provenance(), "mean_hip_depth_mm": data.stats.mean_hip_depth},
        "training": {"stage1": stage1_record(stage1), "stage2": stage2, "device": str(device), "seed": seed},
        "code_version": code_version(),
        "fps": 50.0 / data_cfg.frame_stride,
    }


def gradient_penalty(critic: torch.nn.Module, real: torch.Tensor, fake: torch.Tensor, cond: torch.Tensor,
                     eps: torch.Tensor | None = None) -> torch.Tensor:
    """WGAN-GP: mean (||grad_x critic(x_hat)|| - 1)^2 at x_hat = real + eps (fake - real), eps ~ U[0,1]."""
    if eps is None:
        eps = torch.rand(real.shape[0], 1, device=real.device)
    x_hat = (real + eps * (fake - real)).requires_grad_(True)
    grad, = torch.autograd.grad(critic(x_hat, cond).sum(), x_hat, create_graph=True)
    return ((grad.norm(dim=1) - 1.0) ** 2).mean()


def save_state(run_dir: Path | str, state: dict) -> None:
    """Write the full training state atomically: a killed run finds the previous state intact."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(Path(run_dir) / "state.pt", buffer.getvalue())


def load_state(run_dir: Path | str) -> dict:
    path = Path(run_dir) / "state.pt"
    if not path.is_file():
        raise SystemExit(f"error: --resume given but {path} does not exist")
    return torch.load(path, map_location="cpu", weights_only=False)


def adam_pair(g_params, d_params, args: argparse.Namespace) -> dict:
    """Generator and discriminator Adam (betas 0.5, 0.9, as in the seed) with learning rates halved every
    `args.lr_decay_every` steps; the discriminator's is `args.lr_d` where a stage sets it (two time scales).
    Fused: one pass over each weight per step instead of about ten; the paper preset's flattened heads hold
    26M weights each, and the unfused update took a fifth of its iteration time on a CPU."""
    opt_g = torch.optim.Adam(g_params, lr=args.lr, betas=(0.5, 0.9), fused=True)
    opt_d = torch.optim.Adam(d_params, lr=getattr(args, "lr_d", None) or args.lr, betas=(0.5, 0.9), fused=True)
    return {"opt_g": opt_g, "opt_d": opt_d,
            "sched_g": torch.optim.lr_scheduler.StepLR(opt_g, args.lr_decay_every, gamma=0.5),
            "sched_d": torch.optim.lr_scheduler.StepLR(opt_d, args.lr_decay_every, gamma=0.5)}


def resume(run_dir: Path | str, stateful: dict, sampler_rng: np.random.Generator, log: "MetricLog",
           state: dict | None = None) -> tuple[int, float]:
    """Restore every object in `stateful` (name -> module/optimiser/scheduler) and the random streams from
    `<run_dir>/state.pt` (or `state`, that file already loaded); return the step and the training seconds
    already spent."""
    state = load_state(run_dir) if state is None else state
    for key, obj in stateful.items():
        obj.load_state_dict(state[key])
    restore_rng(state["rng"], sampler_rng)
    log.truncate_after(state["step"])
    return state["step"], state["elapsed"]


def snapshot(stage: int, step: int, elapsed: float, args: argparse.Namespace, stateful: dict,
             sampler_rng: np.random.Generator, **extra) -> dict:
    """Everything `resume` needs, plus what later stages read (model config, stats)."""
    return {"stage": stage, "step": step, "elapsed": elapsed, "args": vars(args),
            **{k: v.state_dict() for k, v in stateful.items()}, "rng": rng_state(sampler_rng), **extra}


def rng_state(sampler_rng: np.random.Generator) -> dict:
    return {"torch": torch.get_rng_state(), "numpy_sampler": sampler_rng.bit_generator.state}


def restore_rng(state: dict, sampler_rng: np.random.Generator) -> None:
    torch.set_rng_state(state["torch"])
    sampler_rng.bit_generator.state = state["numpy_sampler"]


def check_finite(step: int, losses: dict[str, float]) -> None:
    bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
    if bad:
        raise FloatingPointError(f"non-finite loss at step {step}: {bad}; lower --lr or resume from the "
                                 "last state with --resume")


class MetricLog:
    """Appends one JSON line per logged step and redraws the loss curves from the whole log."""

    def __init__(self, run_dir: Path | str) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        self.plot_path = Path(run_dir) / "losses.png"
        self.start = time.time()

    def truncate_after(self, step: int) -> None:
        """Drop lines past `step` (written after the state a resumed run restarts from)."""
        if self.path.is_file():
            lines = [ln for ln in self.path.read_text().splitlines() if ln and json.loads(ln)["step"] <= step]
            self.path.write_text("".join(ln + "\n" for ln in lines))

    def append(self, step: int, values: dict[str, float]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, "time": round(time.time() - self.start, 2), **values}) + "\n")

    def plot(self) -> None:
        rows = [json.loads(ln) for ln in self.path.read_text().splitlines() if ln]
        # Phases of a run may log different values (stage 2's retrace warm-up has no critic yet).
        keys = [k for k in dict.fromkeys(k for r in rows for k in r) if k not in ("step", "time")]
        fig, axes = plt.subplots(len(keys), 1, figsize=(7, 1.8 * len(keys)), sharex=True, squeeze=False)
        steps = [r["step"] for r in rows]
        for ax, key in zip(axes[:, 0], keys):
            ax.plot(steps, [r.get(key, float("nan")) for r in rows], lw=0.8)
            ax.set_ylabel(key, fontsize=8)
            ax.grid(alpha=0.3)
        axes[-1, 0].set_xlabel("step")
        fig.tight_layout()
        fig.savefig(self.plot_path, dpi=90)
        plt.close(fig)


def draw_pose(ax, joints: np.ndarray, dx: float = 0.0, alpha: float = 1.0) -> None:
    for parent, child, side in BONES:
        ax.plot([joints[parent, 0] + dx, joints[child, 0] + dx], [joints[parent, 1], joints[child, 1]],
                color=SIDE_COLORS[side], lw=1.2, alpha=alpha)


def save_class_samples(path: Path | str, generate, actions: tuple[str, ...], stats, device: torch.device,
                       per_class: int = 4) -> None:
    """A sample sheet with one row per action: `generate(class weights (N, C) on device)` gives clips (N, T, D)
    of standardised pose vectors, drawn without gradients."""
    with torch.no_grad():
        rows = [(name, vectors_to_joints(generate(torch.nn.functional.one_hot(
            torch.full((per_class,), c), len(actions)).float().to(device)), stats)) for c, name in enumerate(actions)]
    save_sample_sheet(path, rows)


def save_sample_sheet(path: Path | str, rows: list[tuple[str, np.ndarray]], frames_shown: int = 8) -> None:
    """One row per (title, clips (K, T, 16, D)): each clip as a strip of evenly spaced frames; 3D clips
    (D = 3) in the renderers' oblique view."""
    k = rows[0][1].shape[0]
    fig, axes = plt.subplots(len(rows), k, figsize=(3.2 * k, 1.3 * len(rows)), squeeze=False)
    for r, (title, clips) in enumerate(rows):
        for c in range(k):
            ax = axes[r, c]
            clip = drawable(clips[c])
            for i, t in enumerate(np.linspace(0, len(clip) - 1, frames_shown).round().astype(int)):
                draw_pose(ax, clip[t], dx=140.0 * i)
            ax.set_xlim(-150, 140 * (frames_shown - 1) + 150)
            ax.set_ylim(230, -230)
            ax.set_aspect("equal")
            ax.axis("off")
        axes[r, 0].set_title(title, fontsize=8, loc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    plt.close(fig)
