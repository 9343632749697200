"""Stage 2 of the shipped model: fits a denoising diffusion model (actiongen.diffusion) to the latent paths that
stage 1's encoder gives real training clips, trains the action classifier on the same clips, then exports the
bundle. Stage 1 must have an encoder: its fast preset trains one (--recon-weight 10).

    python -m train.stage2_diffusion --stage1 runs/stage1 --out runs/stage2d --export assets/actiongen.json
"""
from __future__ import annotations

import argparse
import copy
import math
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from actiongen.checkpoint import Bundle, save_bundle
from actiongen.data import ClipSampler, load_pose_data
from actiongen.diffusion import SOLVER_ORDERS, LatentPathDiffusion
from actiongen.models import ActionClassifier, ModelConfig, PoseDecoder, PoseEncoder, PoseRefiner
from actiongen.skeleton import ACTIONS
from train.common import (MetricLog, add_precision_option, apply_preset, base_parser, bfloat16_autocast, bundle_meta,
                          check_finite, load_state, precision_name, resume, save_class_samples, save_state, setup,
                          snapshot, stage1_dims, uses_bfloat16)

# One preset, the shipped stage 2 (the paper's is the LSTM walk: train.stage2_sequence --preset paper). Batch,
# learning rate and EMA are those of the round-19 model (model card), which reached C2ST 0.69 after 7700
# iterations; the cosine decay took round 21's 6000 iterations from C2ST 0.604 / MMD 0.136 to 0.588 / 0.113
# against a constant rate. 8000 iterations calmed every class's jitter and Walking's wrists (1.50x -> 1.39x real
# speed) at the same MMD (round 27; 3D: round 26); 12 000 took the wrists to 1.30x, the MMD from 0.099 to 0.087
# and Walking's C2ST to 0.85-0.87 with one classifier fit (round 28; 0.88-0.92 with five, round 29). 18 000 in
# bfloat16, which halves an iteration's time, took the wrists to 1.21-1.22x, the MMD to 0.082-0.086 and FID from
# 6.0 to 5.3 at the same C2ST (0.716 against 0.708, Walking 0.90 in both; round 30). Since stage 1's refiner
# (round 33) removes most of the jitter, 15 000 suffice: the C2ST of 18 000 with the refiner (0.546-0.550
# against 0.526-0.553 at evaluation seeds 0 1 2), the same MMD, and both stages in 49.3 min (round 34; model
# card, "Training recipe and time").
# Hiding the class from the denoiser for a tenth of the paths and sampling with guidance 0.5 took Walking's
# C2ST from 0.92 to 0.81 and its feet from 0.73x to 0.87x real speed, at a lower MMD (round 23; guidance 1
# gave 0.77 at a higher MMD, 2 overshoots). The 3D model was trained without (--class-dropout 0 --guidance 0).
# Walking alone guided at 1 (--class-guidance Walking=1) took its C2ST from 0.897 to 0.887 only, and its MMD
# against the training clips from 0.149 to 0.229 (round 31): not in the preset.
PRESETS = {"fast": dict(steps=15_000, batch=128, lr=1e-3, ema=0.999, lr_schedule="cosine", motion_weight=0.0,
                        class_dropout=0.1, guidance=0.5, class_guidance={})}
LR_SCHEDULES = ("constant", "cosine")
# The action classifier trains on the first 32 real clips of every 8th batch: its bi-LSTM would otherwise take
# 40 % of an iteration, and 1500 steps of 32 clips suffice (the LSTM walk's stage trains it 1000 times). It draws
# no random numbers and has its own gradients, so how often it trains leaves the denoiser bit for bit the same
# (every 4th batch until round 32: 9 % more time for a classifier about as accurate; model card, round 32).
CLASSIFIER_BATCH, CLASSIFIER_EVERY = 32, 8
PATH_STAT_CLIPS = 8192  # random training clips (~800 per class) behind the paths' standardisation
# The motion error decodes its clips' paths through the 2x1024 pose decoder: on the first 32 clips of a batch it
# adds 45 % to an iteration (0.45 -> 0.64 s on one thread); on all 128 it would more than double it.
MOTION_BATCH = 32


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--stage1", required=True, help="stage-1 run directory (its state.pt holds decoder and encoder)")
    p.add_argument("--export", help="also write the inference bundle here (e.g. assets/actiongen.json)")
    p.add_argument("--ema", type=float, help="decay of the exported moving average of the denoiser (0: off)")
    p.add_argument("--lr-schedule", choices=LR_SCHEDULES,
                   help="constant, or cosine: the learning rate falls along a half cosine to 0 at --steps")
    p.add_argument("--motion-weight", type=float,
                   help="weight of the motion error: decoded clean-path predictions' frame velocities against "
                        "the real clips' (0: off)")
    p.add_argument("--class-dropout", type=float,
                   help="share of training paths whose class the denoiser does not see (zero class weights), so "
                        "that sampling can be guided (0: off)")
    p.add_argument("--guidance", type=float,
                   help="classifier-free guidance weight of the exported model's sampler (needs --class-dropout; "
                        "0: off)")
    p.add_argument("--class-guidance", nargs="*", metavar="ACTION=W",
                   help="guidance weights of single classes in the exported sampler (e.g. Walking=1); the other "
                        "classes keep --guidance; given without a value: none")
    p.add_argument("--channels", type=int, default=96, help="width of the denoiser (a multiple of 8)")
    p.add_argument("--blocks", type=int, default=8, help="residual blocks of the denoiser")
    p.add_argument("--levels", type=int, default=200, help="noise levels in training")
    p.add_argument("--sample-steps", type=int, default=50, help="solver steps of one sample (at most --levels)")
    p.add_argument("--solver-order", type=int, default=2, choices=SOLVER_ORDERS,
                   help="order of the sampling solver: 1 is DDIM, 2 DPM-Solver++(2M)")
    add_precision_option(p, "the denoiser's", "auto")
    args = p.parse_args(argv)
    if args.preset != "fast":
        raise SystemExit("error: the diffusion stage has only the fast preset; the paper's stage 2 is "
                         "python -m train.stage2_sequence --preset paper")
    args = apply_preset(args, PRESETS)
    if not 0 <= args.class_dropout < 1:
        p.error(f"--class-dropout must be in [0, 1); got {args.class_dropout}")
    if args.guidance < 0:
        p.error(f"--guidance must be at least 0; got {args.guidance}")
    try:
        args.class_guidance = class_guidance_weights(args.class_guidance)
    except ValueError as err:
        p.error(str(err))
    if (args.guidance or any(args.class_guidance.values())) and not args.class_dropout:
        p.error("--guidance and --class-guidance need a denoiser that has learnt paths without their class: give "
                "--class-dropout (e.g. 0.1)")
    return args


def class_guidance_weights(items: list[str] | dict[str, float]) -> dict[str, float]:
    """{action: weight} from ACTION=W items (a preset's dict passes through); ValueError naming the valid
    actions for an unknown one, or for a weight that is not a number >= 0."""
    if isinstance(items, dict):
        return dict(items)
    weights = {}
    for item in items:
        action, _, value = item.partition("=")
        if action not in ACTIONS:
            raise ValueError(f"--class-guidance: unknown action {action!r} in {item!r}; valid: {', '.join(ACTIONS)}")
        try:
            weights[action] = float(value)
            valid = math.isfinite(weights[action]) and weights[action] >= 0
        except ValueError:
            valid = False
        if not valid:
            raise ValueError(f"--class-guidance: {item!r} needs a weight >= 0, as in {action}=1")
    return weights


def learning_rate_factor(schedule: str, steps: int) -> Callable[[int], float]:
    """The learning rate's factor after `step` iterations: 1 throughout (constant) or a half cosine from 1 to 0
    over `steps` (cosine)."""
    if schedule == "cosine":
        return lambda step: 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps))
    return lambda step: 1.0


def encode_frames(encoder: PoseEncoder, vectors: np.ndarray, labels: np.ndarray, num_classes: int,
                  device: torch.device, chunk: int = 65536) -> torch.Tensor:
    """(N, d) the encoder's latent for every training frame (N, pose_dim) under its class (N,): the encoder
    reads one frame at a time, so a clip's path is its frames' rows, and encoding them once saves the
    encoder's pass on every batch (5 % of an iteration)."""
    with torch.no_grad():
        return torch.cat([encoder(torch.from_numpy(vectors[i:i + chunk]).to(device),
                                  F.one_hot(torch.from_numpy(labels[i:i + chunk]).to(device), num_classes).float())
                          for i in range(0, len(vectors), chunk)])


def check_recipe_unchanged(saved: dict, args: argparse.Namespace) -> None:
    """A resumed run keeps its learning-rate schedule (a cosine's rate at each iteration depends on --steps)
    and its class dropout: whether the denoiser learns paths without their class decides whether the
    exported sampler may be guided, and a preset default must not switch it on halfway through a run."""
    schedule = saved.get("lr_schedule", "constant")
    if schedule != args.lr_schedule:
        raise SystemExit(f"error: {args.out} was trained with --lr-schedule {schedule}; resume it with the same")
    if schedule == "cosine" and saved["steps"] != args.steps:
        raise SystemExit(f"error: {args.out} decays its learning rate over --steps {saved['steps']}; resume it with "
                         f"the same --steps (a constant schedule can be extended)")
    dropout = saved.get("class_dropout", 0.0)
    if dropout != args.class_dropout:
        raise SystemExit(f"error: {args.out} was trained with --class-dropout {dropout:g}; resume it with the same "
                         f"(and --guidance 0 if that is 0)")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    stage1 = load_state(args.stage1)
    if stage1.get("stage") != 1:
        raise SystemExit(f"error: {args.stage1}/state.pt is not a stage-1 state")
    if "encoder" not in stage1:
        raise SystemExit(f"error: the diffusion stage learns the paths of stage 1's encoder, and {args.stage1} was "
                         "trained without one; train stage 1 with --recon-weight (e.g. 10)")
    args.dims = stage1_dims(stage1, args.dims)
    device, data_cfg = setup(args)
    data = load_pose_data(data_cfg)
    sampler = ClipSampler(data, "train", seed=args.seed)
    cfg = replace(ModelConfig.from_dict(stage1["model"]), transition="diffusion", clip_frames=data_cfg.clip_frames,
                  diffusion_channels=args.channels, diffusion_blocks=args.blocks, diffusion_levels=args.levels,
                  diffusion_sample_steps=args.sample_steps,
                  diffusion_solver_order=args.solver_order, diffusion_guidance=args.guidance,
                  diffusion_class_guidance=tuple(args.class_guidance.get(a, args.guidance) for a in data_cfg.actions)
                  if args.class_guidance else ())
    decoder, encoder = PoseDecoder(cfg), PoseEncoder(cfg)
    decoder.load_state_dict(stage1["decoder"])
    encoder.load_state_dict(stage1["encoder"])
    refiner = None
    if cfg.pose_refiner:
        # Built without drawing random numbers (its weights are stage 1's), so the denoiser starts and trains
        # on the same random stream with or without a refiner.
        refiner = torch.nn.utils.skip_init(PoseRefiner, cfg)
        refiner.load_state_dict(stage1["refiner"])
        refiner.eval().requires_grad_(False)
    try:
        model = LatentPathDiffusion(cfg, decoder, refiner).to(device)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    # The stage-1 networks stay as stage 1 left them: BatchNorm on its running statistics, weights frozen.
    decoder.eval().requires_grad_(False)
    encoder.to(device).eval().requires_grad_(False)
    classifier = ActionClassifier(cfg).to(device)
    frames = data_cfg.clip_frames

    def one_hot(labels: torch.Tensor) -> torch.Tensor:
        return F.one_hot(labels, cfg.num_classes).float()

    frame_latents = encode_frames(encoder, sampler.vectors, sampler.frame_labels(), cfg.num_classes, device)
    # Drawn before a resume restores the sampler's stream, so a resumed run continues the same batches.
    model.set_path_statistics(frame_latents[torch.from_numpy(sampler.clip_rows(PATH_STAT_CLIPS)[0]).to(device)])
    bfloat16 = uses_bfloat16(args.precision, device)
    ema = (AveragedModel(model.denoiser, multi_avg_fn=get_ema_multi_avg_fn(args.ema)) if args.ema else None)
    optimizer = torch.optim.Adam([*model.denoiser.parameters(), *classifier.parameters()], lr=args.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, learning_rate_factor(args.lr_schedule, args.steps))
    stateful = {"transition": model, "classifier": classifier, "optimizer": optimizer, "scheduler": scheduler,
                **({"ema": ema} if ema else {})}
    log = MetricLog(args.out)
    start, elapsed = 0, 0.0
    if args.resume:
        saved = load_state(args.out)
        check_recipe_unchanged(saved["args"], args)
        start, elapsed = resume(args.out, stateful, sampler.rng, log, saved)

    def exported() -> LatentPathDiffusion:
        """A CPU copy of the model with the moving average of the denoiser (or the trained one itself)."""
        copied = copy.deepcopy(model).cpu().eval()
        if ema:
            copied.denoiser.load_state_dict(ema.module.state_dict())
        return copied

    def export(target: str, steps: int, minutes: float) -> None:
        bundle = Bundle(cfg, data.stats, data_cfg.actions, exported(), copy.deepcopy(classifier).cpu().eval(),
                        bundle_meta(data, data_cfg, stage1, device, args.seed,
                                    {"transition": "diffusion", "steps": steps, "minutes": round(minutes, 2),
                                     "preset": args.preset, "batch": args.batch, "lr": args.lr,
                                     "lr_schedule": args.lr_schedule, "ema": args.ema,
                                     "motion_weight": args.motion_weight, "class_dropout": args.class_dropout,
                                     "guidance": args.guidance, "class_guidance": args.class_guidance,
                                     "precision": precision_name(bfloat16)}))
        json_path, weights_path = save_bundle(target, bundle)
        print(f"bundle written: {json_path} + {weights_path.name}")

    classifier_values: dict[str, torch.Tensor] = {}
    t0 = time.time()
    bar = tqdm(range(start, args.steps), initial=start, total=args.steps, desc="stage 2 (diffusion)",
               dynamic_ncols=True)
    for step in bar:
        rows, labels = sampler.clip_rows(args.batch)
        real, labels = torch.from_numpy(sampler.vectors[rows]).to(device), torch.from_numpy(labels).to(device)
        class_weights = one_hot(labels)
        unconditioned = (torch.rand(len(labels), device=device) < args.class_dropout) if args.class_dropout else None
        with bfloat16_autocast(device, bfloat16):
            path_loss, motion_loss = model.training_loss(frame_latents[torch.from_numpy(rows).to(device)],
                                                         class_weights,
                                                         real[:MOTION_BATCH] if args.motion_weight else None,
                                                         unconditioned)
        loss = path_loss + args.motion_weight * motion_loss
        if step % CLASSIFIER_EVERY == 0:
            logits = classifier(real[:CLASSIFIER_BATCH])
            class_loss = F.cross_entropy(logits, labels[:CLASSIFIER_BATCH])
            classifier_values = {"ce_real": class_loss,
                                 "acc_real": (logits.argmax(1) == labels[:CLASSIFIER_BATCH]).float().mean()}
            loss = loss + class_loss
        optimizer.zero_grad(set_to_none=True)  # so Adam leaves the classifier alone on the other steps
        loss.backward()
        optimizer.step()
        scheduler.step()
        if ema:
            ema.update_parameters(model.denoiser)
        done = step + 1
        if done % args.log_every == 0 or done == args.steps:
            # the classifier's values are those of its last step (none yet on a resumed run's first steps)
            values = {"path_loss": path_loss.item(), "lr": scheduler.get_last_lr()[0],
                      **({"motion_loss": motion_loss.item()} if args.motion_weight else {}),
                      **{k: v.item() for k, v in classifier_values.items()}}
            check_finite(done, values)
            log.append(done, values)
            bar.set_postfix_str(f"path {values['path_loss']:.4f}")
        if done % args.checkpoint_every == 0 or done == args.steps:
            save_state(args.out, snapshot(2, done, elapsed + time.time() - t0, args, stateful, sampler.rng,
                                          model=cfg.to_dict()))
        if done % args.sample_every == 0 or done == args.steps:
            log.plot()
            sampling = exported()
            save_class_samples(f"{args.out}/samples_{done:06d}.png",
                               lambda cond: sampling(*sampling.sample_inputs(len(cond), frames), cond)[0],
                               data_cfg.actions, data.stats, torch.device("cpu"))
    bar.close()
    total = elapsed + time.time() - t0
    print(f"stage 2 (diffusion) done: {args.steps} iterations, {total / 60:.1f} min, state in {args.out}/state.pt")
    for target in filter(None, [f"{args.out}/actiongen.json", args.export]):
        export(target, args.steps, total / 60)


if __name__ == "__main__":
    main()
