"""Stage 1: the global skeleton decoder (GSDC), a conditional WGAN-GP on single frames.

    python -m train.stage1_pose --out runs/stage1            # add --dims 3 for world-frame 3D poses
"""
from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from actiongen.data import ClipSampler, load_pose_data, vectors_to_joints
from actiongen.models import ModelConfig, PoseCritic, PoseDecoder, PoseEncoder, PoseRefiner
from train.common import (MetricLog, adam_pair, add_precision_option, apply_preset, base_parser, bfloat16_autocast,
                          check_finite, gradient_penalty, load_state, precision_name, resume, save_sample_sheet,
                          save_state, setup, snapshot, uses_bfloat16)

# The seed trains one hidden block on a 12-d latent box with lr 1e-3, halved every 25k generator steps.
# "fast", the shipped decoder, has two hidden blocks on a 24-d box: on its own it is closer to the real poses
# (per-frame MMD 0.05 against 0.09; model card, rounds 9-11). It trains an encoder beside the decoder, which the
# diffusion stage 2 needs, and takes batches of 256 for 10 000 steps, halving the rate every 3000: in a third
# of the time of 40 000 steps of 64, and the diffusion stage on it comes closer to the training clips (MMD 0.100
# against 0.113; model card, round 21), so both stages fit the budget.
PRESETS = {
    "paper": dict(steps=50_000, batch=64, lr=1e-3, lr_decay_every=25_000, critic_steps=5, gp_weight=10.0,
                  decoder_layers=1, latent_dim=12, recon_weight=0.0, refiner_steps=0),
    "fast": dict(steps=10_000, batch=256, lr=1e-3, lr_decay_every=3_000, critic_steps=5, gp_weight=10.0,
                 decoder_layers=2, latent_dim=24, recon_weight=10.0, refiner_steps=3000),
}
# The refiner learns to give back real clips from their round trips through encoder and decoder, on batches of
# 64 clips at a cosine-decayed rate. Its loss weighs velocity and acceleration errors far above position errors:
# those are what the decoder's jitter adds, and they are 10x smaller. Weights (1, 10, 30) took a held-out
# subject's round trips closer to its real wrist acceleration than (1, 1, 1) or (1, 3, 10), and 3000 steps of the
# 128-channel refiner (2.5 min) gave clips told from real less often than 1200 steps or 64 channels (model card,
# round 33).
REFINER_BATCH, REFINER_LR, REFINER_WEIGHTS = 64, 1e-3, (1.0, 10.0, 30.0)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--lr-decay-every", type=int, help="halve the learning rate every N generator steps")
    p.add_argument("--critic-steps", type=int, help="critic updates per generator update")
    p.add_argument("--gp-weight", type=float, help="gradient penalty weight")
    p.add_argument("--hidden", type=int, default=1024, help="width of the decoder and critic hidden layers")
    p.add_argument("--decoder-layers", type=int, help="hidden layers of the pose decoder (the seed: 1)")
    p.add_argument("--latent-dim", type=int, help="size of the decoder's latent box (the seed: 12)")
    p.add_argument("--recon-weight", type=float,
                   help="train an encoder beside the decoder and add this weight times the mean squared error of "
                        "decoder(encoder(real pose)) to the decoder's loss, so every real pose has a latent (0: off)")
    # float32 by default: bfloat16 trains the preset in 10.3 min instead of 14.3 (its losses follow float32's),
    # but the one such run so far gave a stage 2 that the two-sample test told from real clips more often
    # (C2ST 0.73-0.76 against 0.71-0.73) at a higher FID (7.2-7.6 against 5.3); model card, round 31.
    add_precision_option(p, "the networks'", "float32")
    p.add_argument("--refiner-steps", type=int,
                   help="after the decoder, train a temporal refiner of the decoded frames for this many steps "
                        "(needs the encoder, --recon-weight; 0: none)")
    p.add_argument("--refiner-channels", type=int, default=128, help="width of the refiner's convolutions")
    args = p.parse_args(argv)
    asked_for_refiner = bool(args.refiner_steps)
    args = apply_preset(args, PRESETS)
    if args.refiner_steps < 0 or args.refiner_channels < 1:
        p.error(f"--refiner-steps must be at least 0 and --refiner-channels at least 1; got {args.refiner_steps} "
                f"and {args.refiner_channels}")
    if not args.recon_weight:  # the refiner learns from round trips through the encoder
        if asked_for_refiner:
            p.error("--refiner-steps trains on the round trips of real clips through the encoder: give "
                    "--recon-weight (e.g. 10), or --refiner-steps 0")
        args.refiner_steps = 0
    return args


def reconstruction_error(decoder: PoseDecoder, encoder: PoseEncoder, real: torch.Tensor,
                         cond: torch.Tensor) -> torch.Tensor:
    """Mean squared error of decoder(encoder(real pose)) with the decoder on BatchNorm's running statistics,
    as stage 2 and inference decode; the statistics stay the prior's. Decoded in one train-mode call with the
    prior's latents, the decoder learnt to lean on the batch's mix: its eval-mode error was 2.7 against 0.026
    in training."""
    decoder.eval()
    try:
        return F.mse_loss(decoder(encoder(real, cond), cond), real)
    finally:
        decoder.train()


def refiner_errors(refined: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """(3,) mean squared errors of refined clips (B, T, D) against the real ones in position, velocity and
    acceleration (frame differences of first and second order)."""
    return torch.stack([F.mse_loss(refined, real), F.mse_loss(refined.diff(dim=1), real.diff(dim=1)),
                        F.mse_loss(refined.diff(dim=1, n=2), real.diff(dim=1, n=2))])


def round_trips(decoder: PoseDecoder, encoder: PoseEncoder, vectors: torch.Tensor, class_weights: torch.Tensor,
                chunk: int = 8192) -> torch.Tensor:
    """decoder(encoder(frame)) of every frame (N, pose_dim) under its class weights (N, C), as stage 2 and
    inference decode (eval mode)."""
    decoder.eval()
    encoder.eval()
    with torch.no_grad():
        return torch.cat([decoder(encoder(frames, weights), weights)
                          for frames, weights in zip(vectors.split(chunk), class_weights.split(chunk))])


def train_refiner(decoder: PoseDecoder, encoder: PoseEncoder, sampler: ClipSampler, cfg: ModelConfig, steps: int,
                  seed: int, device: torch.device) -> tuple[PoseRefiner, dict[str, list[float]]]:
    """A refiner trained for `steps` steps to turn the round trips of real training clips back into the clips,
    and its errors (position, velocity, acceleration) on its last batch beside the round trips' own. Seeded
    here and drawing clips from the sampler's stream, so a resumed run trains the same one."""
    torch.manual_seed(seed)
    refiner = PoseRefiner(cfg).to(device)
    vectors = torch.from_numpy(sampler.vectors).to(device)
    class_weights = F.one_hot(torch.from_numpy(sampler.frame_labels()).to(device), cfg.num_classes).float()
    decoded = round_trips(decoder, encoder, vectors, class_weights)
    optimizer = torch.optim.Adam(refiner.parameters(), lr=REFINER_LR)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    weights = torch.tensor(REFINER_WEIGHTS, device=device)
    for _ in tqdm(range(steps), desc="stage 1 refiner", dynamic_ncols=True):
        rows = torch.from_numpy(sampler.clip_rows(REFINER_BATCH)[0]).to(device)
        errors = refiner_errors(refiner(decoded[rows], class_weights[rows]), vectors[rows])
        optimizer.zero_grad(set_to_none=True)
        (weights * errors).sum().backward()
        optimizer.step()
        schedule.step()
    refiner.eval()
    return refiner, {"refined": errors.tolist(), "round_trip": refiner_errors(decoded[rows], vectors[rows]).tolist()}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device, data_cfg = setup(args)
    data = load_pose_data(data_cfg)
    sampler = ClipSampler(data, "train", seed=args.seed)
    cfg = ModelConfig(latent_dim=args.latent_dim, num_classes=len(data_cfg.actions), pose_dim=data.stats.pose_dim,
                      decoder_hidden=args.hidden, critic_hidden=args.hidden,
                      decoder_layers=args.decoder_layers, refiner_channels=args.refiner_channels)
    decoder, critic = PoseDecoder(cfg).to(device), PoseCritic(cfg).to(device)
    encoder = PoseEncoder(cfg).to(device) if args.recon_weight else None
    optim = adam_pair([*decoder.parameters(), *(encoder.parameters() if encoder else ())], critic.parameters(), args)
    opt_g, opt_d, sched_g, sched_d = optim.values()
    stateful = {"decoder": decoder, "critic": critic, **optim, **({"encoder": encoder} if encoder else {})}
    log = MetricLog(args.out)
    saved = load_state(args.out) if args.resume else {}
    start, elapsed = resume(args.out, stateful, sampler.rng, log, saved) if args.resume else (0, 0.0)
    last_saved = saved  # what state.pt holds, kept so that the refiner is added to it without reading it back
    bfloat16 = uses_bfloat16(args.precision, device)

    def onehot(labels: torch.Tensor) -> torch.Tensor:
        return F.one_hot(labels, cfg.num_classes).float().to(device)

    def latent(n: int) -> torch.Tensor:
        return torch.rand(n, cfg.latent_dim, device=device) * 2 - 1

    t0 = time.time()
    bar = tqdm(range(start, args.steps), initial=start, total=args.steps, desc="stage 1", dynamic_ncols=True)
    for step in bar:
        for _ in range(args.critic_steps):
            real, labels = sampler.frames(args.batch)
            real, cond = real.to(device), onehot(labels)
            with bfloat16_autocast(device, bfloat16):
                with torch.no_grad():
                    fake = decoder(latent(args.batch), cond).float()
                wasserstein = critic(real, cond).float().mean() - critic(fake, cond).float().mean()
                gp = gradient_penalty(critic, real, fake, cond)
                loss_d = -wasserstein + args.gp_weight * gp
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
        real, labels = sampler.frames(args.batch)
        cond, prior = onehot(labels), latent(args.batch)
        with bfloat16_autocast(device, bfloat16):
            fake = decoder(prior, cond)
            recon = None if encoder is None else reconstruction_error(decoder, encoder, real.to(device), cond)
            loss_g = -critic(fake, cond).float().mean() + (args.recon_weight * recon if recon is not None else 0.0)
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        sched_g.step()
        sched_d.step()

        done = step + 1
        if done % args.log_every == 0 or done == args.steps:
            values = {"loss_d": loss_d.item(), "loss_g": loss_g.item(), "wasserstein": wasserstein.item(),
                      "gp": gp.item(), "lr": sched_g.get_last_lr()[0],
                      **({"recon": recon.item()} if recon is not None else {})}
            check_finite(done, values)
            log.append(done, values)
            bar.set_postfix(d=f"{values['loss_d']:.3f}", g=f"{values['loss_g']:.3f}", w=f"{values['wasserstein']:.3f}")
        if done % args.checkpoint_every == 0 or done == args.steps:
            last_saved = snapshot(1, done, elapsed + time.time() - t0, args, stateful, sampler.rng,
                                  model=cfg.to_dict(), stats=data.stats.to_dict(), precision=precision_name(bfloat16))
            save_state(args.out, last_saved)
        if done % args.sample_every == 0 or done == args.steps:
            log.plot()
            decoder.eval()
            with torch.no_grad():
                rows = [(name, vectors_to_joints(decoder(latent(6), onehot(torch.full((6,), c))), data.stats)[:, None])
                        for c, name in enumerate(data_cfg.actions)]
            decoder.train()
            save_sample_sheet(f"{args.out}/samples_{done:06d}.png", rows, frames_shown=1)
    bar.close()
    total = elapsed + time.time() - t0
    # Trained after the decoder, in one go: an interrupted refiner is trained again from the start on resume
    # (about 3 min), as is a stale one after more decoder steps.
    if args.refiner_steps and ("refiner" not in saved or start < args.steps):
        # Added to the state the decoder's last step saved, random streams included: a run resumed for more
        # decoder steps continues them as a run without a refiner would.
        t1 = time.time()
        refiner, errors = train_refiner(decoder, encoder, sampler, cfg, args.refiner_steps, args.seed, device)
        total += time.time() - t1
        save_state(args.out, {**last_saved, "args": vars(args), "model": replace(cfg, pose_refiner=True).to_dict(),
                              "elapsed": total, "refiner": refiner.state_dict()})
        print("refiner: squared error of position / velocity / acceleration on its last batch "
              + " / ".join(f"{e:.2g}" for e in errors["refined"]) + " (round trips: "
              + " / ".join(f"{e:.2g}" for e in errors["round_trip"]) + ")")
    print(f"stage 1 done: {args.steps} steps, {total / 60:.1f} min, state in {args.out}/state.pt")


if __name__ == "__main__":
    main()
