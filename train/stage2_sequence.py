"""Stage 2: smooth latent transitions. Trains the transition generator and the action classifier
against the sequence discriminator on top of the frozen stage-1 pose decoder, then exports the bundle.

    python -m train.stage2_sequence --stage1 runs/stage1 --out runs/stage2 --export assets/actiongen.json
"""
from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from actiongen.checkpoint import Bundle, save_bundle
from actiongen.data import ClipSampler, load_pose_data
from actiongen.models import (LATENT_BOUNDARIES, ActionClassifier, LatentTransitionGenerator, ModelConfig,
                              MotionConvDiscriminator, PoseCritic, PoseDecoder, PoseEncoder, SequenceDiscriminator,
                              motion_features, per_step, velocity_and_acceleration)
from actiongen.skeleton import BONES, NUM_JOINTS
from train.common import (MetricLog, adam_pair, apply_preset, base_parser, bundle_meta, check_finite,
                          gradient_penalty, load_state, resume, save_class_samples, save_state, setup, snapshot,
                          stage1_dims)

# "paper": the seed's recipe (flattened bi-LSTM heads, z free to drift, lr 1e-4 halved every 15k, frozen decoder).
# "fast": pooled heads (25x fewer head weights, ~3x faster per iteration), z kept in the decoder's
# [-1, 1] box, twice the learning rate, and, for realism (issue: clips a classifier could tell from real ones
# 90 % of the time): the bi-LSTM and a multi-scale temporal conv discriminator over poses, velocities and
# accelerations, the per-class motion statistics term, the edge penalty, an EMA of the generator, and
# candidates every 250 iterations for train/select_checkpoint.py (the C2ST is lowest at 500-750 iterations,
# then the discriminators pull ahead and the arms jitter). The decoder is fine-tuned under a per-frame pose
# critic: fine-tuning alone lowered the C2ST but narrowed the poses (MMD 0.20 instead of 0.12-0.15); the
# critic keeps them real, and a slow fine-tune (5e-5; 2e-4 before) keeps the deeper stage-1 decoder's poses
# (MMD 0.10 / 0.11 against 0.15-0.20). With the decoder free, a light shift penalty (0.1 per clip; the seed's
# sum over the batch held clips to half the real joint speed) no longer makes the clips jitter, and the motion
# term at weight 5 brings the legs closer to real speed (weight 5 on the seed's decoder cost MMD; on the deeper
# decoder the MMD has room, and the C2ST is 0.02-0.035 lower than at weight 2 on two training seeds). See
# assets/MODEL_CARD.md, "Realism variants", rounds 1-3 and 9-12.
PRESETS = {
    "paper": dict(steps=12_500, batch=32, lr=1e-4, lr_decay_every=15_000, head="flatten", latent_boundary="none",
                  g_steps=2, shift_weight=0.1, shift_per_clip=False, disc="lstm", motion_weight=0.0, ema=0.0,
                  edge_weight=0.0, candidate_every=0, decoder_lr=0.0, bone_weight=0.0, pose_critic_weight=0.0,
                  spectrum_weight=0.0, coupling_weight=0.0, latent_feedback=False, prior_weight=0.0, replay=0),
    "fast": dict(steps=1_000, batch=32, lr=2e-4, lr_decay_every=2_000, head="pool", latent_boundary="clamp",
                 g_steps=2, shift_weight=0.1, shift_per_clip=True, disc="both", motion_weight=5.0, ema=0.995,
                 edge_weight=1.0, candidate_every=250, decoder_lr=5e-5, bone_weight=0.0,
                 pose_critic_weight=1.0, spectrum_weight=0.0, coupling_weight=0.0, latent_feedback=False,
                 prior_weight=0.0, replay=0),
}
SMOOTH_WEIGHT, CLASS_WEIGHT = 1e-4, 0.01
POSE_GP_WEIGHT = 10.0  # the stage-1 critic's gradient penalty
BONE_PARENTS, BONE_CHILDREN = [b[0] for b in BONES], [b[1] for b in BONES]
SPECTRUM_BANDS = 6  # 0-8.3 Hz in 1.4 Hz bands at 16.7 fps (a walking step: about 2 Hz)
# The retrace term's weight on the latent-path error beside the pose error: on the pose error alone the walk
# ignores its target for hundreds of steps (200 steps on the retrace term alone, with latent feedback: pose
# error 0.26 without it, 0.04 with it).
RETRACE_LATENT_WEIGHT = 10.0
MOTION_TARGET_CLIPS = 8192  # random training clips (~800 per class) behind the motion term's targets


def yes_or_no(text: str) -> bool:
    """A boolean option's value: 1, true or yes (any case) is on, anything else off."""
    return text.lower() in ("1", "true", "yes")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--stage1", required=True, help="stage-1 run directory (its state.pt holds the decoder)")
    p.add_argument("--export", help="also write the inference bundle here (e.g. assets/actiongen.json)")
    p.add_argument("--lr-decay-every", type=int, help="halve the learning rate every N iterations")
    p.add_argument("--head", choices=["flatten", "pool"], help="discriminator/classifier head")
    p.add_argument("--latent-boundary", choices=LATENT_BOUNDARIES, help="what the latent walk does at the faces "
                   "of the decoder's [-1, 1] box: clamp, reflect (fold back in) or none (drift out, the seed)")
    p.add_argument("--latent-feedback", type=yes_or_no,
                   help="the transition LSTM also reads z_{t-1}, so its shifts can depend on where the walk is")
    p.add_argument("--g-steps", type=int, help="generator steps per discriminator step")
    p.add_argument("--shift-weight", type=float, help="weight of the squared latent shifts")
    p.add_argument("--shift-per-clip", type=yes_or_no,
                   help="average the shift penalty over the batch (the seed sums it)")
    p.add_argument("--lstm-hidden", type=int, default=256, help="LSTM width of every sequence network")
    p.add_argument("--head-hidden", type=int, default=1024, help="hidden width of the bi-LSTM heads")
    p.add_argument("--disc", choices=sorted(DISCRIMINATORS), help="clip discriminator(s): the seed's bi-LSTM, "
                   "a multi-scale temporal conv over poses, velocities and accelerations, or both")
    p.add_argument("--lr-d", type=float, help="discriminator learning rate (default: --lr)")
    p.add_argument("--motion-weight", type=float,
                   help="weight of the per-class motion statistics term (log speed, acceleration, spread)")
    p.add_argument("--spectrum-weight", type=float, help="weight of the per-class velocity spectrum term "
                   "(log amplitude in frequency bands: the rhythm of a gait)")
    p.add_argument("--coupling-weight", type=float, help="weight of the per-class velocity coupling term (log "
                   "of the squared correlation between every two pose dimensions' velocities within a clip)")
    p.add_argument("--edge-weight", type=float, help="weight of the penalty on latents near the box edge")
    p.add_argument("--prior-weight", type=float, help="weight of the sliced Wasserstein distance between the "
                   "latent path's points (all frames of a class's clips) and the decoder's U[-1, 1] prior")
    p.add_argument("--ema", type=float, help="decay of the exported moving average of generator weights (0: off)")
    p.add_argument("--decoder-lr", type=float, help="fine-tune the stage-1 decoder at this learning rate "
                   "(0: frozen, as in the paper)")
    p.add_argument("--bone-weight", type=float, help="weight of the within-clip bone-length variation, 3D "
                   "models only (real bones are rigid; in a 2D view their length changes as the person turns)")
    p.add_argument("--pose-critic-weight", type=float, help="weight of a per-frame pose critic: the stage-1 "
                   "WGAN-GP critic, trained on in stage 2 against the clips' frames, so that a fine-tuned decoder "
                   "and the latent path stay on the real pose distribution (0: off)")
    p.add_argument("--replay", type=int, help="keep this many earlier generated clips and show the clip "
                   "critics half old, half new fakes (0: off)")
    p.add_argument("--retrace-weight", type=float, default=0.0,
                   help="weight of the retrace term: a posterior infers the step noise that makes the transition "
                        "LSTM retrace each real clip's latent path (stage 1's encoder, --recon-weight), and the "
                        "retraced clip's pose and latent-path errors join the generator loss (0: off); use it with "
                        "--latent-feedback true: open loop the walk does not learn to follow its target")
    p.add_argument("--retrace-kl", type=float, default=0.01,
                   help="weight of the posterior's KL divergence to the step noise's prior (N(0, I), or the "
                        "learnt one of --noise-prior), relative to the retrace term's pose error")
    p.add_argument("--retrace-warmup", type=int, default=0,
                   help="train the first N of the --steps iterations on the retrace term alone (needs "
                        "--retrace-weight), before any critic and before the learning-rate schedule starts: the "
                        "walk learns real clips' paths first, then the GAN refines it")
    p.add_argument("--noise-prior", type=yes_or_no, default=False,
                   help="learn a prior over the step noise from the LSTM state, the walk's position and the class "
                        "(needs --latent-feedback true); with --retrace-weight the posterior's KL is taken to it, so "
                        "sampled noise can follow the structure the posterior finds in real clips")
    p.add_argument("--candidate-every", type=int,
                   help="also export a bundle every N iterations into <out>/candidates (for train.select_checkpoint)")
    return apply_preset(p.parse_args(argv), PRESETS)


def generator_loss(gan: torch.Tensor, frames: torch.Tensor, shifts: torch.Tensor,
                   ce_real: torch.Tensor, ce_fake: torch.Tensor, shift_weight: float = 0.1,
                   shift_per_clip: bool = False) -> dict[str, torch.Tensor]:
    """The seed's objective: GAN (the critics' BCE on generated clips labelled real) + 1e-4 smoothness
    + 0.1 shift magnitude + 0.01 (CE real + CE fake)."""
    smooth = (frames[:, 1:] - frames[:, :-1]).pow(2).sum(dim=(1, 2)).mean()
    shift = shifts.pow(2).sum() / (len(shifts) if shift_per_clip else 1)
    total = gan + SMOOTH_WEIGHT * smooth + shift_weight * shift + CLASS_WEIGHT * (ce_real + ce_fake)
    return {"total": total, "gan": gan, "smooth": smooth, "shift": shift}


def clip_statistics(x: torch.Tensor) -> torch.Tensor:
    """Per clip and pose dimension: mean |velocity|, mean |acceleration| and the spread over time,
    (B, T, D) -> (B, 3, D). These are what a viewer (and a two-sample test) sees first in motion."""
    velocity, acceleration = velocity_and_acceleration(x)
    return torch.stack([velocity.abs().mean(dim=1), acceleration.abs().mean(dim=1), x.std(dim=1)], dim=1)


def class_means(values: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class means of (B, ...) values as (C, ...) and the (C,) counts, without a loop over classes
    (no host sync on a GPU); classes absent from the batch get zeros."""
    onehot = F.one_hot(labels, num_classes).to(values.dtype)
    counts = onehot.sum(dim=0)
    sums = onehot.T @ values.flatten(1)
    return (sums / counts.clamp(min=1)[:, None]).view(num_classes, *values.shape[1:]), counts


def velocity_spectrum(x: torch.Tensor) -> torch.Tensor:
    """Per clip and pose dimension: the velocity's amplitude in SPECTRUM_BANDS equal frequency bands from 0
    to the Nyquist rate, (B, T, D) -> (B, bands, D). The rhythm of a motion (a gait's step frequency), which
    the mean speed does not see: slow legs with jittering wrists can have the right mean speeds."""
    velocity = velocity_and_acceleration(x)[0]
    power = torch.fft.rfft(velocity - velocity.mean(dim=1, keepdim=True), dim=1, norm="ortho").abs().pow(2)
    return torch.stack([band.mean(dim=1) for band in torch.tensor_split(power, SPECTRUM_BANDS, dim=1)], dim=1).sqrt()


def velocity_coupling(x: torch.Tensor) -> torch.Tensor:
    """Per clip: the squared correlation over time between the velocities of every two pose dimensions,
    (B, T, D) -> (B, D (D - 1) / 2). A latent path through a small decoder moves every joint together (a
    foot and the opposite shoulder at |r| 0.6 in generated Walking, 0.07 in real clips); the means and
    spectra of single dimensions cannot see that."""
    velocity = velocity_and_acceleration(x)[0]
    velocity = velocity - velocity.mean(dim=1, keepdim=True)
    covariance = velocity.transpose(1, 2) @ velocity / velocity.shape[1]
    scale = (covariance.diagonal(dim1=1, dim2=2) + 1e-6).sqrt()
    correlation = covariance / (scale[:, :, None] * scale[:, None, :])
    rows, cols = torch.triu_indices(x.shape[-1], x.shape[-1], offset=1, device=x.device)
    return correlation[:, rows, cols].pow(2)


def class_statistics(clips: torch.Tensor, labels: torch.Tensor, num_classes: int,
                     statistics: Callable[[torch.Tensor], torch.Tensor] = clip_statistics) -> torch.Tensor:
    """Mean clip statistics of real clips per class: (C, ...), the motion terms' targets."""
    return class_means(statistics(clips), labels, num_classes)[0]


def motion_loss(frames: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor,
                statistics: Callable[[torch.Tensor], torch.Tensor] = clip_statistics) -> torch.Tensor:
    """Squared log ratio of the generated clips' mean statistics to the real ones, per class present in
    the batch: a direct signal for limb speed and jitter (or rhythm) that a GAN loss gives only slowly."""
    means, counts = class_means(statistics(frames), labels, targets.shape[0])
    error = (torch.log(means + 1e-3) - torch.log(targets + 1e-3)).pow(2).flatten(1).mean(dim=1)
    present = (counts > 0).to(error.dtype)
    return (error * present).sum() / present.sum()


def bone_lengths(frames: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, dims: int) -> torch.Tensor:
    """Length of every bone in every frame, (B, T, pose_dim) standardised poses -> (B, T, bones), in the
    data's units (the hip, the origin, is not part of the pose vector). A differentiable counterpart of
    actiongen.realism.bone_length_cvs, for the training loss."""
    joints = (frames * std + mean).unflatten(-1, (NUM_JOINTS - 1, dims))
    joints = F.pad(joints, (0, 0, 1, 0))
    return (joints[..., BONE_CHILDREN, :] - joints[..., BONE_PARENTS, :]).norm(dim=-1)


def bone_variation(frames: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, dims: int) -> torch.Tensor:
    """Mean over clips and bones of the within-clip coefficient of variation of bone length: 0 for a rigid
    skeleton (real 3D clips: 0.2 %), what the evaluation reports in %."""
    lengths = bone_lengths(frames, mean, std, dims)
    return (lengths.std(dim=1) / lengths.mean(dim=1).clamp(min=1e-6)).mean()


def frame_rows(clips: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, D) clips and their (B, C) class weights -> (B * T, D) frames and (B * T, C) class weights,
    what the per-frame pose critic reads."""
    return clips.reshape(-1, clips.shape[-1]), cond.repeat_interleave(clips.shape[1], dim=0)


def edge_penalty(latents: torch.Tensor, margin: float = 0.9) -> torch.Tensor:
    """Mean squared excess of |z| over `margin`: keeps the path inside the box the decoder was trained on
    rather than on its faces, where a clamped path otherwise spends a fifth of its time."""
    return F.relu(latents.abs() - margin).pow(2).mean()


def prior_distance(latents: torch.Tensor, labels: torch.Tensor, projections: int = 64) -> torch.Tensor:
    """Sliced squared Wasserstein-2 distance between the points of each class's latent paths, (B, T, d) pooled
    over its clips and frames, and as many fresh draws from U[-1, 1]^d, along the d axes and `projections`
    random directions; the mean over the classes in the batch. The decoder maps that prior onto the real pose
    distribution of each class, so a walk whose frames fill the box evenly shows real poses as often as real
    clips do; a walk that settles in a few regions (latent feedback: MMD 0.2-0.4) or on the faces (the clamp:
    a fifth of the time) does not. Per class, because the decoder is conditional: classes that each fill a
    different half of the box pass a pooled test. About 1e-3 for 1600 points drawn from the prior itself,
    but 0.15-0.19 for 3 clips of a smooth walk whose frames are uniform over many clips: with a few clips of
    a class per batch the term also pushes each clip to sweep the box (model card, round 5)."""
    dim = latents.shape[-1]
    directions = torch.cat([torch.eye(dim, device=latents.device),
                            F.normalize(torch.randn(dim, projections, device=latents.device), dim=0)], dim=1)
    distances = []
    for label in labels.unique():
        points = latents[labels == label].reshape(-1, dim)
        prior = torch.rand_like(points) * 2 - 1
        along_path, along_prior = ((x @ directions).sort(dim=0).values for x in (points, prior))
        distances.append((along_path - along_prior).pow(2).mean())
    return torch.stack(distances).mean()


class ClipCritics(nn.Module):
    """The clip discriminator(s) of `--disc`: one logit vector each; their BCE losses add."""

    def __init__(self, cfg: ModelConfig, kind: str) -> None:
        super().__init__()
        self.nets = nn.ModuleList(DISCRIMINATORS[kind](cfg))

    def forward(self, clips: torch.Tensor, cond: torch.Tensor) -> list[torch.Tensor]:
        return [net(clips, cond) for net in self.nets]

    @staticmethod
    def loss(logits: list[torch.Tensor], target: float) -> torch.Tensor:
        return sum(F.binary_cross_entropy_with_logits(l, torch.full_like(l, target)) for l in logits)

    @staticmethod
    def probability(logits: list[torch.Tensor]) -> float:
        """Mean sigmoid over the clips and the discriminators, for the log."""
        return float(torch.stack([torch.sigmoid(l.detach()).mean() for l in logits]).mean())


class NoisePosterior(nn.Module):
    """q(step noise | a real clip's latent path, class): a bidirectional GRU over [z_t, z_{t+1} - z_t, class]
    gives each step's noise mean and log-variance. With the transition LSTM as its decoder this is a sequence
    VAE: the LSTM learns to retrace real clips' latent paths, a per-clip target where matching the paths'
    statistics left Walking's legs at 0.4x real speed (model card, round 14); with it they reach 0.9x
    (round 15)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.gru = nn.GRU(2 * cfg.latent_dim + cfg.num_classes, cfg.lstm_hidden, batch_first=True,
                          bidirectional=True)
        self.to_noise = nn.Linear(2 * cfg.lstm_hidden, 2 * cfg.noise_dim)

    def forward(self, latents: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latents (B, T, d) -> noise mean and log-variance (B, T-1, noise_dim)."""
        features = torch.cat([motion_features(latents), per_step(cond, latents.shape[1] - 1)], dim=-1)
        mean, log_var = self.to_noise(self.gru(features)[0]).chunk(2, dim=-1)
        return mean, log_var.clamp(-8.0, 4.0)


def retrace_terms(transition: LatentTransitionGenerator, posterior: NoisePosterior, encoder: PoseEncoder,
                  real: torch.Tensor, cond: torch.Tensor) -> dict[str, torch.Tensor]:
    """Real clips retraced by the transition generator from their encoded first latent and posterior noise:
    the pose error, the latent-path error against the encoded path, and the posterior's KL divergence to the
    step noise's prior, N(0, I) or the learnt one (summed over a step's noise, mean over steps)."""
    with torch.no_grad():
        latents = encoder(real, per_step(cond, real.shape[1]))
    mean, log_var = posterior(latents, cond)
    noise = mean + torch.randn_like(mean) * (0.5 * log_var).exp()
    retraced, retraced_latents, prior_mean, prior_log_var = transition.retrace(latents[:, 0], noise, cond)
    kl = 0.5 * (prior_log_var - log_var + (log_var.exp() + (mean - prior_mean).square()) / prior_log_var.exp() - 1.0)
    return {"retrace": F.mse_loss(retraced, real), "retrace_latent": F.mse_loss(retraced_latents, latents),
            "retrace_kl": kl.sum(dim=-1).mean()}


def retrace_loss(terms: dict[str, torch.Tensor], kl_weight: float) -> torch.Tensor:
    """The retrace term from `retrace_terms`' parts, before its --retrace-weight."""
    return terms["retrace"] + RETRACE_LATENT_WEIGHT * terms["retrace_latent"] + kl_weight * terms["retrace_kl"]


class ReplayBuffer:
    """Generated clips of earlier iterations for the clip critics (Shrivastava et al. 2017). A critic that
    sees only the latest fakes forgets what the generator made before, so the two can chase each other in a
    cycle (Walking's C2ST swung between 0.7 and 0.99 from one candidate to the next, model card round 7)."""

    def __init__(self, capacity: int) -> None:  # at least a batch (main checks --replay)
        self.capacity = capacity
        self.clips = self.cond = None
        self.size = 0

    def mix(self, fake: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch the critics see: once the buffer holds half a batch, the second half of `fake` swapped
        for stored clips (with their class vectors). Then `fake` joins the buffer, over random old entries
        once it is full."""
        fake, cond = fake.detach(), cond.detach()
        half = len(fake) // 2
        mixed_fake, mixed_cond = fake, cond
        if self.size >= half > 0:
            old = torch.randint(self.size, (half,), device=fake.device)
            mixed_fake = torch.cat([fake[:len(fake) - half], self.clips[old]])
            mixed_cond = torch.cat([cond[:len(fake) - half], self.cond[old]])
        if self.clips is None:
            self.clips = fake.new_zeros((self.capacity, *fake.shape[1:]))
            self.cond = cond.new_zeros((self.capacity, *cond.shape[1:]))
        free = min(self.capacity - self.size, len(fake))
        # distinct slots: with a repeated index, which clip lands there would depend on the thread order
        taken = torch.randperm(self.size, device=fake.device)[:len(fake) - free]
        slots = torch.cat([torch.arange(self.size, self.size + free, device=fake.device), taken])
        self.clips[slots], self.cond[slots] = fake, cond
        self.size += free
        return mixed_fake, mixed_cond

    def state_dict(self) -> dict:
        return {"clips": self.clips, "cond": self.cond, "size": self.size}

    def load_state_dict(self, state: dict) -> None:
        self.clips, self.cond, self.size = state["clips"], state["cond"], state["size"]


DISCRIMINATORS = {
    "lstm": lambda cfg: [SequenceDiscriminator(cfg)],
    "conv": lambda cfg: [MotionConvDiscriminator(cfg)],
    "both": lambda cfg: [SequenceDiscriminator(cfg), MotionConvDiscriminator(cfg)],
}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    stage1 = load_state(args.stage1)
    if stage1.get("stage") != 1:
        raise SystemExit(f"error: {args.stage1}/state.pt is not a stage-1 state")
    args.dims = stage1_dims(stage1, args.dims)
    if 0 < args.replay < args.batch:
        raise SystemExit(f"error: --replay keeps earlier clips for half of each batch, so it must be 0 (off) or at "
                         f"least the batch size ({args.batch}); got {args.replay}")
    if args.bone_weight and args.dims != 3:
        raise SystemExit("error: --bone-weight applies to 3D models only (in a 2D view bones change length as "
                         "the person turns); this stage-1 decoder is 2D, so leave it out or give --bone-weight 0")
    if args.noise_prior and not args.latent_feedback:
        raise SystemExit("error: --noise-prior reads the walk's position, so it needs --latent-feedback true")
    if args.retrace_warmup and not args.retrace_weight:
        raise SystemExit("error: --retrace-warmup trains on the retrace term alone, so it needs --retrace-weight "
                         "(e.g. 2)")
    if not 0 <= args.retrace_warmup < args.steps:
        raise SystemExit(f"error: --retrace-warmup must be at least 0 and less than --steps ({args.steps}); "
                         f"got {args.retrace_warmup}")
    device, data_cfg = setup(args)
    data = load_pose_data(data_cfg)
    sampler = ClipSampler(data, "train", seed=args.seed)
    # Without stage 1's refiner, if it has one: it was trained on the decoder's round trips, and this stage may
    # fine-tune the decoder.
    cfg = replace(ModelConfig.from_dict(stage1["model"]), head=args.head, latent_boundary=args.latent_boundary,
                  latent_feedback=args.latent_feedback, noise_prior=args.noise_prior,
                  clip_frames=data_cfg.clip_frames, lstm_hidden=args.lstm_hidden, head_hidden=args.head_hidden,
                  pose_refiner=False)
    decoder = PoseDecoder(cfg)
    decoder.load_state_dict(stage1["decoder"])
    # BatchNorm stays on its running statistics; the weights are frozen (the paper) or fine-tuned slowly.
    decoder.eval().requires_grad_(args.decoder_lr > 0)
    transition = LatentTransitionGenerator(cfg, decoder).to(device)
    classifier = ActionClassifier(cfg).to(device)
    critics = ClipCritics(cfg, args.disc).to(device)
    g_params = [p for n, p in transition.named_parameters() if not n.startswith("decoder.")]
    # The retrace term's posterior trains with the generator; the encoder stays as stage 1 left it.
    posterior = encoder = None
    if args.retrace_weight:
        if "encoder" not in stage1:
            raise SystemExit(f"error: --retrace-weight needs a stage-1 encoder, and {args.stage1} was trained "
                             f"without one; train stage 1 with --recon-weight (e.g. 10) or leave --retrace-weight out")
        encoder = PoseEncoder(cfg).to(device)
        encoder.load_state_dict(stage1["encoder"])
        encoder.eval().requires_grad_(False)
        posterior = NoisePosterior(cfg).to(device)
        g_params += list(posterior.parameters())
    g_groups = [{"params": g_params + list(classifier.parameters())}]
    if args.decoder_lr > 0:
        g_groups.append({"params": list(decoder.parameters()), "lr": args.decoder_lr})
    # The per-frame pose critic starts from stage 1's and trains beside the clip critics, on their optimiser.
    pose_critic = None
    if args.pose_critic_weight:
        pose_critic = PoseCritic(cfg).to(device)
        pose_critic.load_state_dict(stage1["critic"])
    d_params = [*critics.parameters(), *(pose_critic.parameters() if pose_critic is not None else ())]
    optim = adam_pair(g_groups, d_params, args)
    opt_g, opt_d, sched_g, sched_d = optim.values()
    # The exported generator: a moving average of the trained one (GAN weights oscillate around a good
    # solution; their average samples it more steadily), or the trained one itself.
    ema = (AveragedModel(transition, multi_avg_fn=get_ema_multi_avg_fn(args.ema), use_buffers=True)
           if args.ema else None)
    replay = ReplayBuffer(args.replay) if args.replay else None
    stateful = {"transition": transition, "classifier": classifier, "discriminator": critics, **optim,
                **({"ema": ema} if ema else {}), **({"pose_critic": pose_critic} if pose_critic is not None else {}),
                **({"replay": replay} if replay else {}), **({"posterior": posterior} if posterior is not None else {})}
    # Drawn before a resume restores the sampler's stream, so a resumed run continues the same batches.
    # The statistic terms: each matches a per-class mean statistic of the generated clips to the real one.
    chosen = [(name, weight, statistic) for name, weight, statistic in (
        ("motion", args.motion_weight, clip_statistics), ("spectrum", args.spectrum_weight, velocity_spectrum),
        ("coupling", args.coupling_weight, velocity_coupling)) if weight]
    target_clips = sampler.clips(MOTION_TARGET_CLIPS) if chosen else None
    statistic_terms = {name: (weight, statistic, class_statistics(*target_clips, cfg.num_classes, statistic).to(device))
                       for name, weight, statistic in chosen}
    # The bone-length term reads lengths in mm, so it undoes the standardisation.
    pose_stats = (tuple(torch.as_tensor(v, dtype=torch.float32, device=device)
                        for v in (data.stats.mean, data.stats.std)) if args.bone_weight else None)
    log = MetricLog(args.out)
    start, elapsed = resume(args.out, stateful, sampler.rng, log) if args.resume else (0, 0.0)

    def generate(cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z0, noise = transition.sample_inputs(cond.shape[0], data_cfg.clip_frames, device=device)
        return transition(z0, noise, cond)

    def export(target: str, steps: int, minutes: float) -> None:
        exported = ema.module if ema else transition
        bundle = Bundle(cfg, data.stats, data_cfg.actions, copy.deepcopy(exported).cpu(),
                        copy.deepcopy(classifier).cpu(),
                        bundle_meta(data, data_cfg, stage1, device, args.seed, stage2_record(args, steps, minutes)))
        json_path, weights_path = save_bundle(target, bundle)
        print(f"bundle written: {json_path} + {weights_path.name}")

    t0 = time.time()
    bar = tqdm(range(start, args.steps), initial=start, total=args.steps, desc="stage 2", dynamic_ncols=True)

    def generator_update(loss: torch.Tensor) -> None:
        """One step of the generator's optimiser on `loss`, and of its moving average."""
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()
        if ema:
            ema.update_parameters(transition)

    def end_of_step(done: int, measure: Callable[[], tuple[dict[str, float], str]]) -> None:
        """Log (`measure` gives the values and the progress bar's summary; called only on logging steps, as
        reading values synchronises a GPU), checkpoint, export a candidate and draw samples on their schedules."""
        if done % args.log_every == 0 or done == args.steps:
            values, summary = measure()
            check_finite(done, values)
            log.append(done, values)
            bar.set_postfix_str(summary)
        if done % args.checkpoint_every == 0 or done == args.steps:
            save_state(args.out, snapshot(2, done, elapsed + time.time() - t0, args, stateful, sampler.rng,
                                          model=cfg.to_dict()))
        if args.candidate_every and done % args.candidate_every == 0:
            export(f"{args.out}/candidates/step_{done:06d}.json", done, (elapsed + time.time() - t0) / 60)
        if done % args.sample_every == 0 or done == args.steps:
            log.plot()
            save_class_samples(f"{args.out}/samples_{done:06d}.png", lambda cond: generate(cond)[0],
                               data_cfg.actions, data.stats, device)

    for step in bar:
        real, labels = sampler.clips(args.batch)
        real, labels = real.to(device), labels.to(device)
        cond = F.one_hot(labels, cfg.num_classes).float()

        if step < args.retrace_warmup:
            losses = retrace_terms(transition, posterior, encoder, real, cond)
            losses["total"] = retrace_loss(losses, args.retrace_kl)
            generator_update(losses["total"])

            def measure_warmup() -> tuple[dict[str, float], str]:
                values = {f"g_{k}": v.item() for k, v in losses.items()}
                return values, f"retrace {values['g_retrace']:.3f}"

            end_of_step(step + 1, measure_warmup)
            continue

        with torch.no_grad():
            fake = generate(cond)[0]
        shown, shown_cond = replay.mix(fake, cond) if replay else (fake, cond)
        d_real, d_fake = critics(real, cond), critics(shown, shown_cond)
        loss_d = critics.loss(d_real, 1.0) + critics.loss(d_fake, 0.0)
        loss_pose = 0.0
        if pose_critic is not None:
            (frames_real, frames_cond), (frames_fake, _) = frame_rows(real, cond), frame_rows(fake, cond)
            wasserstein = pose_critic(frames_real, frames_cond).mean() - pose_critic(frames_fake, frames_cond).mean()
            loss_pose = -wasserstein + POSE_GP_WEIGHT * gradient_penalty(pose_critic, frames_real, frames_fake,
                                                                         frames_cond)
        opt_d.zero_grad(set_to_none=True)
        (loss_d + loss_pose).backward()
        opt_d.step()

        for g_step in range(args.g_steps):
            fake, latents, shifts = generate(cond)
            if g_step == 0:  # the real clips don't change between generator steps: classify them once
                logits_real = classifier(real)
                ce_real = F.cross_entropy(logits_real, labels)
            else:
                ce_real = ce_real.detach()
            logits_fake = classifier(fake)
            ce_fake = F.cross_entropy(logits_fake, labels)
            losses = generator_loss(critics.loss(critics(fake, cond), 1.0), fake, shifts, ce_real, ce_fake,
                                    args.shift_weight, args.shift_per_clip)
            for name, (weight, statistic, target) in statistic_terms.items():
                losses[name] = motion_loss(fake, labels, target, statistic)
                losses["total"] = losses["total"] + weight * losses[name]
            if args.edge_weight:
                losses["edge"] = edge_penalty(latents)
                losses["total"] = losses["total"] + args.edge_weight * losses["edge"]
            if args.prior_weight:
                losses["prior"] = prior_distance(latents, labels)
                losses["total"] = losses["total"] + args.prior_weight * losses["prior"]
            if pose_critic is not None:
                losses["pose"] = -pose_critic(*frame_rows(fake, cond)).mean()
                losses["total"] = losses["total"] + args.pose_critic_weight * losses["pose"]
            if posterior is not None:
                losses.update(retrace_terms(transition, posterior, encoder, real, cond))
                losses["total"] = losses["total"] + args.retrace_weight * retrace_loss(losses, args.retrace_kl)
            if args.bone_weight:
                losses["bone"] = bone_variation(fake, *pose_stats, args.dims)
                losses["total"] = losses["total"] + args.bone_weight * losses["bone"]
            generator_update(losses["total"])
        sched_g.step()
        sched_d.step()

        def measure() -> tuple[dict[str, float], str]:
            values = {"loss_d": loss_d.item(), **{f"g_{k}": v.item() for k, v in losses.items()},
                      "ce_real": ce_real.item(), "ce_fake": ce_fake.item(),
                      "acc_real": (logits_real.argmax(1) == labels).float().mean().item(),
                      "acc_fake": (logits_fake.argmax(1) == labels).float().mean().item(),
                      "d_real": critics.probability(d_real), "d_fake": critics.probability(d_fake),
                      **({"pose_wasserstein": wasserstein.item()} if pose_critic is not None else {}),
                      "at_edge": (latents.detach().abs() > 0.99).float().mean().item(),
                      "lr": sched_g.get_last_lr()[0]}
            return values, f"d {values['loss_d']:.3f} g {values['g_gan']:.3f} acc {values['acc_fake']:.2f}"

        end_of_step(step + 1, measure)
    bar.close()
    total = elapsed + time.time() - t0
    print(f"stage 2 done: {args.steps} iterations, {total / 60:.1f} min, state in {args.out}/state.pt")
    for target in filter(None, [f"{args.out}/actiongen.json", args.export]):
        export(target, args.steps, total / 60)


def stage2_record(args: argparse.Namespace, steps: int, minutes: float) -> dict:
    """What a bundle records of this stage's recipe."""
    return {"steps": steps, "minutes": round(minutes, 2), "preset": args.preset,
            "batch": args.batch, "lr": args.lr, "lr_d": args.lr_d, "shift_weight": args.shift_weight,
            "shift_per_clip": args.shift_per_clip, "disc": args.disc,
            "motion_weight": args.motion_weight, "spectrum_weight": args.spectrum_weight,
            "coupling_weight": args.coupling_weight,
            "edge_weight": args.edge_weight, "prior_weight": args.prior_weight, "ema": args.ema,
            "decoder_lr": args.decoder_lr,
            "bone_weight": args.bone_weight, "pose_critic_weight": args.pose_critic_weight,
            "latent_feedback": args.latent_feedback, "replay": args.replay,
            "retrace_weight": args.retrace_weight, "retrace_kl": args.retrace_kl,
            "retrace_warmup": args.retrace_warmup,
            "noise_prior": args.noise_prior}


if __name__ == "__main__":
    main()
