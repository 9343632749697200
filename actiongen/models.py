"""The networks of the two-stage method: pose decoder (GSDC) and critic, latent transition generator,
sequence discriminator and action classifier.

Class inputs are weight vectors over the actions (one-hot for a plain action, any non-negative mix
otherwise) and may differ per time step, so blends and A -> B transitions use the same code path.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .skeleton import ACTIONS, POSE_DIM


LATENT_BOUNDARIES = ("clamp", "reflect", "none")
# Stage 2's model of the latent path: the paper's LSTM walk, or a diffusion model over whole paths
# (actiongen.diffusion).
TRANSITIONS = ("lstm", "diffusion")


def fold_into_box(u: torch.Tensor) -> torch.Tensor:
    """The walk u reflected at the faces of [-1, 1] (a triangle wave of period 4): the identity inside the
    box, and what a walk that bounces off each face would reach, for any number of bounces."""
    return (torch.remainder(u - 1.0, 4.0) - 2.0).abs() - 1.0


@dataclass(frozen=True)
class ModelConfig:
    latent_dim: int = 12
    num_classes: int = len(ACTIONS)
    pose_dim: int = POSE_DIM
    decoder_hidden: int = 1024
    decoder_layers: int = 1  # hidden Linear-BatchNorm-ReLU blocks of the pose decoder (the seed: 1)
    critic_hidden: int = 1024
    noise_dim: int = 64
    lstm_hidden: int = 256
    head_hidden: int = 1024
    # "flatten": the seed's head over all T-1 bi-LSTM outputs (fixed clip length);
    # "pool": mean over time plus both final states, any length and 25x fewer head weights.
    head: str = "pool"
    clip_frames: int = 50
    # What z_t does at the faces of [-1, 1]^d, the region the decoder was trained on: "none" drifts out (the
    # seed), "clamp" sticks to the face (a fifth of all coordinates end up there), "reflect" folds the walk
    # back in, so its coordinates stay uniform on the box like the decoder's training prior.
    latent_boundary: str = "clamp"
    # The seed's LSTM reads only noise and class, so it emits the same shifts wherever z_0 lies and cannot
    # steer a gait cycle around the decoder's pose manifold; with feedback it also reads z_{t-1}.
    latent_feedback: bool = False
    # A learnt prior over the step noise (needs latent_feedback): each step's noise is mean + scale * N(0, I),
    # both read from the LSTM state, z_{t-1} and the class, so sampled noise can carry the structure that the
    # retrace term's posterior finds in real clips (9-11 nats per step away from N(0, I), model card round 15).
    noise_prior: bool = False
    transition: str = "lstm"  # one of TRANSITIONS
    # The diffusion transition's denoiser (width, residual blocks), its noise levels in training, the solver
    # steps of one sample and the solver's order (1: DDIM; 2: DPM-Solver++(2M), as good in half the steps).
    diffusion_channels: int = 96
    diffusion_blocks: int = 8
    diffusion_levels: int = 200
    diffusion_sample_steps: int = 50
    diffusion_solver_order: int = 2
    # Classifier-free guidance at sampling: v = v(class) + w (v(class) - v(no class)), with "no class" the zero
    # class weights that a denoiser trained with --class-dropout has learnt; 0: off (one denoiser pass a step).
    diffusion_guidance: float = 0.0
    # Per-class guidance weights (one per class) in place of diffusion_guidance; a frame's weight is its class
    # weights' mix of them. Empty: diffusion_guidance for every class. Walking guided at 1 was told from real
    # clips a little less often, at a higher MMD (model card, round 31).
    diffusion_class_guidance: tuple[float, ...] = ()
    # A temporal refiner after the pose decoder (PoseRefiner), trained at the end of stage 1: the decoder maps
    # each frame on its own, and its small per-frame errors show as jitter (stage 1's round trips of real
    # Walking clips move the wrists with 1.3x the real acceleration) that a two-sample test reads.
    pose_refiner: bool = False
    refiner_channels: int = 128

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        d = dict(d)
        if "clamp_latent" in d:  # bundles written before latent_boundary: true meant clamp, false a free walk
            d["latent_boundary"] = "clamp" if d.pop("clamp_latent") else "none"
        if d.get("latent_boundary", "clamp") not in LATENT_BOUNDARIES:
            raise ValueError(f"unknown latent_boundary {d['latent_boundary']!r}; valid: {', '.join(LATENT_BOUNDARIES)}")
        if d.get("transition", "lstm") not in TRANSITIONS:
            raise ValueError(f"unknown transition {d['transition']!r}; valid: {', '.join(TRANSITIONS)}")
        if "diffusion_class_guidance" in d:  # a JSON list
            d["diffusion_class_guidance"] = tuple(d["diffusion_class_guidance"])
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config keys {sorted(unknown)}; valid: {sorted(known)}")
        return cls(**d)


class PoseDecoder(nn.Module):
    """GSDC: (z in [-1,1]^d, d = 12 in the seed, class weights) -> Linear 1024 -> BatchNorm -> ReLU -> pose;
    `decoder_layers` > 1 repeats the hidden block (the seed's layer names stay those of the first)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        widths = [cfg.latent_dim + cfg.num_classes] + [cfg.decoder_hidden] * cfg.decoder_layers
        blocks = [layer for n_in, n_out in zip(widths, widths[1:])
                  for layer in (nn.Linear(n_in, n_out), nn.BatchNorm1d(n_out), nn.ReLU())]
        self.net = nn.Sequential(*blocks, nn.Linear(cfg.decoder_hidden, cfg.pose_dim))

    def forward(self, z: torch.Tensor, class_weights: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]
        x = torch.cat([z, class_weights.expand(*lead, class_weights.shape[-1])], dim=-1)
        return self.net(x.reshape(-1, x.shape[-1])).reshape(*lead, -1)


class PoseEncoder(nn.Module):
    """(pose, class weights) -> Linear 1024 -> ReLU -> tanh latent in (-1, 1)^d: the decoder's inverse, trained
    with it in stage 1 so that every real pose has a latent the decoder reproduces (the WGAN alone covers the
    poses loosely: the closest latent path to a real clip misses it by a mean squared error of 0.03-0.16)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(cfg.pose_dim + cfg.num_classes, cfg.critic_hidden),
            nn.ReLU(),
            nn.Linear(cfg.critic_hidden, cfg.latent_dim),
            nn.Tanh(),
        )

    def forward(self, pose: torch.Tensor, class_weights: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([pose, class_weights], dim=-1))


class PoseRefiner(nn.Module):
    """(decoded frames (B, T, pose_dim), per-frame class weights (B, T, C)) -> refined frames: a residual stack
    of 1D convolutions over time (kernel 5, dilations 1, 2, 4, 1: each frame sees 20 frames either side),
    trained on stage 1's round trips of real clips to give back the real clips, so that it removes the decoder's
    frame-to-frame errors and keeps real motion (a Gaussian filter removes both; model card, round 33). Its
    output layer starts at zero: an untrained refiner passes the frames through. `device` lets
    torch.nn.utils.skip_init build one without drawing random numbers, for weights that are loaded anyway."""

    DILATIONS = (1, 2, 4, 1)

    def __init__(self, cfg: ModelConfig, device: torch.device | str | None = None) -> None:
        super().__init__()
        ch = cfg.refiner_channels
        self.inp = nn.Conv1d(cfg.pose_dim + cfg.num_classes, ch, 5, padding=2, device=device)
        self.blocks = nn.ModuleList(nn.Conv1d(ch, ch, 5, padding=2 * d, dilation=d, device=device)
                                    for d in self.DILATIONS)
        self.out = nn.Conv1d(ch, cfg.pose_dim, 5, padding=2, device=device)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, frames: torch.Tensor, class_weights: torch.Tensor) -> torch.Tensor:
        h = self.inp(torch.cat([frames, per_step(class_weights, frames.shape[1])], dim=-1).transpose(1, 2))
        for block in self.blocks:
            h = h + block(F.silu(h))
        return frames + self.out(F.silu(h)).transpose(1, 2)


class PoseCritic(nn.Module):
    """WGAN critic on single poses: (pose, class weights) -> Linear 1024 -> ReLU -> score."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(cfg.pose_dim + cfg.num_classes, cfg.critic_hidden),
            nn.ReLU(),
            nn.Linear(cfg.critic_hidden, 1),
        )

    def forward(self, pose: torch.Tensor, class_weights: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([pose, class_weights], dim=-1)).squeeze(-1)


def start_and_step_noise(batch: int, frames: int, latent_dim: int, noise_dim: int,
                         generator: torch.Generator | None = None, device: torch.device | str = "cpu"
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """The random inputs of every transition model, drawn in this order: z_0 (B, latent_dim) uniform in [-1, 1],
    then step noise (B, frames-1, noise_dim) standard normal."""
    z0 = torch.rand(batch, latent_dim, generator=generator, device=device) * 2 - 1
    noise = torch.randn(batch, frames - 1, noise_dim, generator=generator, device=device)
    return z0, noise


def per_step(class_weights: torch.Tensor, steps: int) -> torch.Tensor:
    """(B, C) or (B, T, C) class weights -> (B, steps, C)."""
    if class_weights.dim() == 2:
        return class_weights[:, None, :].expand(-1, steps, -1)
    if class_weights.shape[1] != steps:
        raise ValueError(f"per-step class weights have {class_weights.shape[1]} steps; expected {steps}")
    return class_weights


class LatentTransitionGenerator(nn.Module):
    """z_0 ~ U[-1,1]^d; an LSTM reads per-step noise and class weights and emits shifts clipped to
    [-1,1]; z_t = z_{t-1} + shift_t; every frame is decoded by the (frozen) pose decoder."""

    def __init__(self, cfg: ModelConfig, decoder: PoseDecoder) -> None:
        super().__init__()
        self.cfg = cfg
        self.decoder = decoder
        if cfg.noise_prior and not cfg.latent_feedback:
            raise ValueError("noise_prior reads the walk's position, so it needs latent_feedback")
        feedback = cfg.latent_dim if cfg.latent_feedback else 0
        self.lstm = nn.LSTM(cfg.noise_dim + cfg.num_classes + feedback, cfg.lstm_hidden, batch_first=True)
        self.to_shift = nn.Linear(cfg.lstm_hidden, cfg.latent_dim)
        self.step_prior = None
        if cfg.noise_prior:
            self.step_prior = nn.Sequential(nn.Linear(cfg.lstm_hidden + cfg.num_classes + cfg.latent_dim,
                                                      cfg.lstm_hidden),
                                            nn.ReLU(), nn.Linear(cfg.lstm_hidden, 2 * cfg.noise_dim))
            # starts as N(0, I): mean 0, log-variance 0
            nn.init.zeros_(self.step_prior[-1].weight)
            nn.init.zeros_(self.step_prior[-1].bias)

    def sample_inputs(self, batch: int, frames: int, generator: torch.Generator | None = None,
                      device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """z_0 (B, d) uniform in [-1, 1] and step noise (B, T-1, noise_dim) standard normal."""
        return start_and_step_noise(batch, frames, self.cfg.latent_dim, self.cfg.noise_dim, generator, device)

    def latent_path(self, z0: torch.Tensor, noise: torch.Tensor, class_weights: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Latents (B, T, d) and shifts (B, T-1, d); `class_weights` (B, C) or (B, T, C)."""
        steps = noise.shape[1]
        cw = per_step(class_weights, steps + 1)
        if self.cfg.latent_feedback:
            latents, shifts, _ = self._feedback_path(z0, noise, cw[:, 1:], draws=True)
            return latents, shifts
        hidden, _ = self.lstm(torch.cat([noise, cw[:, 1:]], dim=-1))
        shifts = self.to_shift(hidden).clamp(-1.0, 1.0)
        if self.cfg.latent_boundary != "clamp":  # a cumulative sum: one kernel instead of T small ones
            walk = z0[:, None] + shifts.cumsum(dim=1)
            if self.cfg.latent_boundary == "reflect":
                walk = fold_into_box(walk)
            return torch.cat([z0[:, None], walk], dim=1), shifts
        z = z0
        path = [z0]
        for t in range(steps):
            z = self._step(z, shifts[:, t])
            path.append(z)
        return torch.stack(path, dim=1), shifts

    def _step(self, z: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        """One step of the walk with the boundary applied at once: a reflected walk bounces off a face and
        moves on from where it landed (the paths without feedback fold their cumulative sum instead)."""
        z = z + shift
        if self.cfg.latent_boundary == "clamp":
            return z.clamp(-1.0, 1.0)
        return fold_into_box(z) if self.cfg.latent_boundary == "reflect" else z

    def _feedback_path(self, z0: torch.Tensor, noise: torch.Tensor, step_weights: torch.Tensor, draws: bool
                       ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """The latent walk with z_{t-1} as an LSTM input, one step at a time; `step_weights` (B, T-1, C) are the
        class weights of frames 1..T-1. With the learnt prior, `noise` holds N(0, I) draws that the prior scales
        and shifts (`draws`) or the noise the LSTM reads as it is (a posterior's), and the prior's mean and
        log-variance of every step, (B, T-1, noise_dim) each, come back too (else None)."""
        z, state, path, shifts, prior = z0, None, [z0], [], []
        for t in range(noise.shape[1]):
            context = torch.cat([step_weights[:, t], z], dim=-1)
            step_noise = noise[:, t]
            if self.step_prior is not None:
                previous = state[0][0] if state is not None else z.new_zeros(len(z), self.cfg.lstm_hidden)
                mean, log_var = self.step_prior(torch.cat([previous, context], dim=-1)).chunk(2, dim=-1)
                log_var = log_var.clamp(-8.0, 4.0)
                prior.append((mean, log_var))
                if draws:
                    step_noise = mean + (0.5 * log_var).exp() * step_noise
            hidden, state = self.lstm(torch.cat([step_noise, context], dim=-1)[:, None], state)
            shift = self.to_shift(hidden[:, 0]).clamp(-1.0, 1.0)
            z = self._step(z, shift)
            path.append(z)
            shifts.append(shift)
        prior_stats = tuple(torch.stack(s, dim=1) for s in zip(*prior)) if prior else None
        return torch.stack(path, dim=1), torch.stack(shifts, dim=1), prior_stats

    def retrace(self, z0: torch.Tensor, step_noise: torch.Tensor, class_weights: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The walk with `step_noise` (B, T-1, noise_dim) as the LSTM's noise input itself, not as draws for the
        prior to scale: frames, latents, and the prior's mean and log-variance of each step's noise (zeros for
        the N(0, I) prior), what a posterior's noise is measured against."""
        if self.step_prior is None:
            frames, latents, _ = self(z0, step_noise, class_weights)
            zeros = torch.zeros_like(step_noise)
            return frames, latents, zeros, zeros
        cw = per_step(class_weights, step_noise.shape[1] + 1)
        latents, _, (mean, log_var) = self._feedback_path(z0, step_noise, cw[:, 1:], draws=False)
        return self.decoder(latents, cw), latents, mean, log_var

    def forward(self, z0: torch.Tensor, noise: torch.Tensor, class_weights: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Frames (B, T, 30), latents (B, T, d), shifts (B, T-1, d)."""
        latents, shifts = self.latent_path(z0, noise, class_weights)
        cw = per_step(class_weights, latents.shape[1])
        return self.decoder(latents, cw), latents, shifts


def velocity_and_acceleration(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """First and second differences over time: (B, T, D) -> (B, T-1, D), (B, T-2, D)."""
    velocity = x[:, 1:] - x[:, :-1]
    return velocity, velocity[:, 1:] - velocity[:, :-1]


def motion_features(x: torch.Tensor) -> torch.Tensor:
    """[x_t, x_{t+1} - x_t] for t = 0..T-2: (B, T, D) -> (B, T-1, 2D)."""
    return torch.cat([x[:, :-1], x[:, 1:] - x[:, :-1]], dim=-1)


class BiLSTMHead(nn.Module):
    """Bidirectional LSTM(256) over motion features, then Linear 1024 -> ReLU -> outputs."""

    def __init__(self, cfg: ModelConfig, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.head_kind = cfg.head
        self.lstm = nn.LSTM(in_dim, cfg.lstm_hidden, batch_first=True, bidirectional=True)
        if cfg.head == "flatten":
            head_in = 2 * cfg.lstm_hidden * (cfg.clip_frames - 1)
        elif cfg.head == "pool":
            head_in = 4 * cfg.lstm_hidden
        else:
            raise ValueError(f"unknown head {cfg.head!r}; valid heads: flatten, pool")
        self.head = nn.Sequential(nn.Linear(head_in, cfg.head_hidden), nn.ReLU(), nn.Linear(cfg.head_hidden, out_dim))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        out, (h, _) = self.lstm(features)
        if self.head_kind == "flatten":
            pooled = out.reshape(out.shape[0], -1)
        else:
            pooled = torch.cat([out.mean(dim=1), h[0], h[1]], dim=-1)
        return self.head(pooled)


class SequenceDiscriminator(nn.Module):
    """Real/fake logit of a clip from [x_t, x_{t+1} - x_t, class]."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.body = BiLSTMHead(cfg, 2 * cfg.pose_dim + cfg.num_classes, 1)

    def forward(self, x: torch.Tensor, class_weights: torch.Tensor) -> torch.Tensor:
        feats = motion_features(x)
        cw = per_step(class_weights, x.shape[1])[:, :-1]
        return self.body(torch.cat([feats, cw], dim=-1)).squeeze(-1)


class MotionConvDiscriminator(nn.Module):
    """Real/fake logit of a clip from poses, velocities and accelerations, seen by a stack of dilated
    temporal convolutions (receptive fields of 3 to 31 frames, so both a single step and a whole stride
    cycle are in view); every scale is pooled over time, and the class enters by projection."""

    def __init__(self, cfg: ModelConfig, channels: int = 128, dilations: tuple[int, ...] = (1, 2, 4, 8)) -> None:
        super().__init__()
        self.inp = nn.Conv1d(3 * cfg.pose_dim, channels, kernel_size=3, padding=1)
        self.layers = nn.ModuleList(nn.Conv1d(channels, channels, kernel_size=3, dilation=d, padding=d)
                                    for d in dilations)
        pooled = 2 * channels * (len(dilations) + 1)
        self.out = nn.Linear(pooled, 1)
        self.embed = nn.Linear(cfg.num_classes, pooled, bias=False)

    def forward(self, x: torch.Tensor, class_weights: torch.Tensor) -> torch.Tensor:
        velocity, acceleration = velocity_and_acceleration(x)
        feats = torch.cat([x[:, 2:], velocity[:, 1:], acceleration], dim=-1).transpose(1, 2)
        h = F.leaky_relu(self.inp(feats), 0.2)
        scales = [h]
        for layer in self.layers:
            h = h + F.leaky_relu(layer(h), 0.2)
            scales.append(h)
        pooled = torch.cat([torch.cat([s.mean(dim=2), s.amax(dim=2)], dim=1) for s in scales], dim=1)
        cw = class_weights if class_weights.dim() == 2 else class_weights.mean(dim=1)
        return self.out(pooled).squeeze(-1) + (self.embed(cw) * pooled).sum(dim=-1) / pooled.shape[-1] ** 0.5


class ActionClassifier(nn.Module):
    """Action logits of a clip from [x_t, x_{t+1} - x_t]."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.body = BiLSTMHead(cfg, 2 * cfg.pose_dim, cfg.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(motion_features(x))
