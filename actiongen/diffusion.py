"""Stage 2 as a denoising diffusion model over whole latent paths: a class-conditioned 1D-conv network learns
the distribution of the latent paths that stage 1's encoder gives real clips, and the same frozen pose decoder
turns a sampled path into frames.

Beside the paper's LSTM walk (models.LatentTransitionGenerator) it keeps the same interface: `sample_inputs`
draws the inputs of a clip, `forward(z0, noise, class_weights)` gives frames, latents and shifts, so the
generator, app, evaluation and exports run either. Why it exists: the LSTM walk, trained as a GAN, is told
from real clips 80 % of the time however it is regularised (model card, rounds 1-19), while the paths the
encoder finds in real clips decode to clips told from real only at chance; a model fitted to those paths
directly inherits their motion (round 19: C2ST 0.69 after 28 CPU minutes).

Sampling solves the deterministic probability-flow ODE (DPM-Solver++, second order): all randomness is the
starting noise x_T, one d-vector per frame. The inputs keep the LSTM walk's form, z_0 uniform in [-1, 1]^d
(x_T of frame 0 by its inverse normal CDF) and one N(0, I) step-noise vector per later frame, so seeds and
interpolation mean the same in both models.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .models import ModelConfig, PoseDecoder, PoseRefiner, per_step, start_and_step_noise

GROUPS = 8  # GroupNorm groups of every block: diffusion_channels must be a multiple
SOLVER_ORDERS = (1, 2)  # 1: DDIM, 2: DPM-Solver++(2M)
DILATIONS = (1, 2, 4, 8)  # repeated over the blocks: two rounds see 61 frames, more than a 50-frame clip


def cosine_schedule(levels: int) -> torch.Tensor:
    """alpha_bar (levels + 1,): the share of signal variance left at each noise level, 1 at level 0 (clean),
    falling as cos^2 (Nichol and Dhariwal 2021), floored so the last level keeps a trace of signal."""
    s = torch.linspace(0, 1, levels + 1, dtype=torch.float64)
    alpha_bar = torch.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2
    return (alpha_bar / alpha_bar[0]).clamp(1e-5, 1.0).float()


def half_log_snr(alpha_bar: torch.Tensor) -> torch.Tensor:
    """lambda = log(alpha / sigma), the solver's time variable."""
    return 0.5 * torch.log(alpha_bar / (1 - alpha_bar))


class TimeConv(nn.Conv1d):
    """A same-length dilated convolution over time. For a single clip PyTorch runs a dilated conv1d of this size
    through its reference kernel (about 140 us for one clip of 96 channels and 50 frames); stacking the
    kernel's shifted views and taking one matrix product gives the same numbers to the bit in 40 % of the
    time, and a batch of two (a guided clip) in 80 %. From four clips on the library is faster, and a training
    batch of 128 takes its forward and backward pass in 45 % of the stacked version's time, so only batches of
    up to two are stacked (a trace keeps the branch of the batch it was made with). Undilated ones keep the
    library's kernel, which is fastest there."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dilation[0] == 1 or x.shape[0] > 2:
            return super().forward(x)
        frames, dilation, padding = x.shape[-1], self.dilation[0], self.padding[0]
        padded = F.pad(x, (padding, padding))
        taps = torch.stack([padded[..., i * dilation:i * dilation + frames] for i in range(self.kernel_size[0])],
                           dim=2)
        return torch.matmul(self.weight.reshape(self.out_channels, -1), taps.flatten(1, 2)) + self.bias[:, None]


class PathBlock(nn.Module):
    """Residual block: a dilated conv over time, then a conv, each after GroupNorm and SiLU; the noise level
    (per clip) and each frame's class weights scale and shift the features. Both enter linearly, as one
    embedding of level and class would, but the class part maps 10 weights per frame, not a whole embedding:
    half the cost of an iteration. `level_part` and `class_part` give the two parts of the scale and shift,
    `forward` applies their sum: a sampler computes the class part once per sample and the level part once per
    level (LatentPathDenoiser.class_films and level_films)."""

    def __init__(self, channels: int, num_classes: int, dilation: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.GroupNorm(GROUPS, channels), nn.GroupNorm(GROUPS, channels)
        self.conv1 = TimeConv(channels, channels, 3, padding=dilation, dilation=dilation)
        self.conv2 = nn.Conv1d(channels, channels, 3, padding=1)
        self.film_level = nn.Linear(channels, 2 * channels)
        self.film_class = nn.Linear(num_classes, 2 * channels, bias=False)

    def level_part(self, embedded_level: torch.Tensor) -> torch.Tensor:
        """(B, 2C, 1) for the noise level's embedding (B, C)."""
        return self.film_level(embedded_level)[:, :, None]

    def class_part(self, class_weights: torch.Tensor) -> torch.Tensor:
        """(B, 2C, T) for per-frame class weights (B, T, num_classes)."""
        return self.film_class(class_weights).transpose(1, 2)

    def forward(self, h: torch.Tensor, film: torch.Tensor) -> torch.Tensor:
        """Features h (B, C, T) with the block's scale and shift `film` (B, 2C, T or 1)."""
        scale, shift = film.chunk(2, dim=1)
        y = self.norm2(self.conv1(F.silu(self.norm1(h))))
        return h + self.conv2(F.silu(y * (1 + scale) + shift))


class LatentPathDenoiser(nn.Module):
    """(noisy normalised path (B, d, T), noise level (B,), class weights (B, T, C)) -> v-prediction (B, d, T)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        ch = cfg.diffusion_channels
        self.channels, self.levels = ch, cfg.diffusion_levels
        self.inp = nn.Conv1d(cfg.latent_dim, ch, 3, padding=1)
        self.level_mlp = nn.Sequential(nn.Linear(ch, ch), nn.SiLU(), nn.Linear(ch, ch))
        self.blocks = nn.ModuleList(PathBlock(ch, cfg.num_classes, DILATIONS[i % len(DILATIONS)])
                                    for i in range(cfg.diffusion_blocks))
        self.out = nn.Conv1d(ch, cfg.latent_dim, 3, padding=1)

    def level_features(self, level: torch.Tensor) -> torch.Tensor:
        """Sinusoidal features of the noise level, on a 0-1000 scale whatever the number of levels."""
        half = self.channels // 2
        freqs = torch.exp(-math.log(1000.0) * torch.arange(half, device=level.device) / half)
        angle = level.float()[:, None] * (1000.0 / self.levels) * freqs[None]
        return torch.cat([angle.sin(), angle.cos()], dim=1)

    def level_embedding(self, level: torch.Tensor) -> torch.Tensor:
        """(B, C) for noise levels (B,): what every block's level part reads."""
        return self.level_mlp(self.level_features(level))

    def level_films(self, level: torch.Tensor) -> torch.Tensor:
        """The noise levels' part of every block's scale and shift: (blocks, B, 2C, 1) for levels (B,)."""
        embedded = self.level_embedding(level)
        return torch.stack([block.level_part(embedded) for block in self.blocks])

    def class_films(self, class_weights: torch.Tensor) -> torch.Tensor:
        """The class weights' part of every block's scale and shift: (blocks, B, 2C, T) for (B, T, C); zero
        for zero weights (no bias), which is what guidance's unconditioned prediction sees."""
        return torch.stack([block.class_part(class_weights) for block in self.blocks])

    def filmed(self, x: torch.Tensor, films: torch.Tensor | Iterable[torch.Tensor]) -> torch.Tensor:
        """The v-prediction given every block's scale and shift `films`, (blocks, B, 2C, T) or one per block."""
        h = self.inp(x)
        for block, film in zip(self.blocks, films):
            h = block(h, film)
        return self.out(F.silu(h))

    def forward(self, x: torch.Tensor, level: torch.Tensor, class_weights: torch.Tensor) -> torch.Tensor:
        # Block by block: stacking a training batch's films into one (blocks, B, 2C, T) tensor, and its gradient
        # back apart, took a tenth of an iteration.
        embedded = self.level_embedding(level)
        return self.filmed(x, (block.level_part(embedded) + block.class_part(class_weights) for block in self.blocks))


class Filmed(nn.Module):
    """A denoiser's `filmed` as a module's forward, the form torch.jit.trace takes."""

    def __init__(self, denoiser: LatentPathDenoiser) -> None:
        super().__init__()
        self.denoiser = denoiser
        self.training = False  # torch.jit.freeze takes only modules in eval mode; the denoiser's own flag stays

    def forward(self, x: torch.Tensor, films: torch.Tensor) -> torch.Tensor:
        return self.denoiser.filmed(x, films)


class FrozenTrace(NamedTuple):
    """A frozen trace of a denoiser's `filmed` and what it was made from: it is stale once the denoiser object,
    the device or any parameter's version (its count of in-place changes) differs."""

    denoiser: LatentPathDenoiser
    device: torch.device
    parameters: list[torch.Tensor]
    versions: tuple[int, ...]
    traced: torch.jit.ScriptModule

    def fits(self, denoiser: LatentPathDenoiser, device: torch.device) -> bool:
        return (self.denoiser is denoiser and self.device == device
                and tuple(p._version for p in self.parameters) == self.versions)


class LatentPathDiffusion(nn.Module):
    """The diffusion transition model: a denoiser over latent paths standardised per latent dimension
    (`path_mean`, `path_std`: statistics of the encoder's paths of real clips), sampled by an ODE solver in
    `diffusion_sample_steps` steps, decoded frame by frame by the pose decoder, then over time by stage 1's
    refiner where the config has one (`pose_refiner`)."""

    def __init__(self, cfg: ModelConfig, decoder: PoseDecoder, refiner: PoseRefiner | None = None) -> None:
        super().__init__()
        if (refiner is not None) != cfg.pose_refiner:
            raise ValueError(f"the config's pose_refiner is {cfg.pose_refiner} but a refiner was "
                             f"{'given' if refiner is not None else 'not given'}")
        if cfg.diffusion_channels % GROUPS:
            raise ValueError(f"diffusion_channels must be a multiple of {GROUPS}; got {cfg.diffusion_channels}")
        if cfg.diffusion_solver_order not in SOLVER_ORDERS:
            raise ValueError(f"diffusion_solver_order must be one of {SOLVER_ORDERS}; got {cfg.diffusion_solver_order}")
        if not (math.isfinite(cfg.diffusion_guidance) and cfg.diffusion_guidance >= 0):
            raise ValueError(f"diffusion_guidance must be a finite number >= 0; got {cfg.diffusion_guidance}")
        by_class = cfg.diffusion_class_guidance
        if by_class and (len(by_class) != cfg.num_classes or not all(math.isfinite(w) and w >= 0 for w in by_class)):
            raise ValueError(f"diffusion_class_guidance must be empty or {cfg.num_classes} finite numbers >= 0; "
                             f"got {list(by_class)}")
        if cfg.diffusion_sample_steps > cfg.diffusion_levels:
            raise ValueError(f"diffusion_sample_steps ({cfg.diffusion_sample_steps}) must be at most "
                             f"diffusion_levels ({cfg.diffusion_levels})")
        self.cfg = cfg
        self.decoder = decoder
        self.refiner = refiner
        self.denoiser = LatentPathDenoiser(cfg)
        self.register_buffer("path_mean", torch.zeros(cfg.latent_dim))
        self.register_buffer("path_std", torch.ones(cfg.latent_dim))
        self.register_buffer("alpha_bar", cosine_schedule(cfg.diffusion_levels), persistent=False)
        # A NamedTuple, not a submodule: the trace stays out of the state dict and the module tree.
        self._frozen: FrozenTrace | None = None

    def set_path_statistics(self, latents: torch.Tensor) -> None:
        """Standardise paths by the per-dimension mean and spread of `latents` (B, T, d), real clips' paths;
        a dimension the encoder hardly uses keeps a floor of spread, so its noise is not blown up."""
        self.path_mean.copy_(latents.mean(dim=(0, 1)))
        self.path_std.copy_(latents.std(dim=(0, 1)).clamp(min=0.05))

    def standardise(self, latents: torch.Tensor) -> torch.Tensor:
        """Latent paths (B, T, d) -> the denoiser's coordinates (B, d, T)."""
        return ((latents - self.path_mean) / self.path_std).transpose(1, 2)

    def unstandardise(self, x: torch.Tensor) -> torch.Tensor:
        """The denoiser's coordinates (B, d, T) -> latent paths (B, T, d)."""
        return x.transpose(1, 2) * self.path_std + self.path_mean

    def sample_inputs(self, batch: int, frames: int, generator: torch.Generator | None = None,
                      device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """z_0 (B, d) uniform in [-1, 1] and step noise (B, T-1, d) standard normal, in this order."""
        return start_and_step_noise(batch, frames, self.cfg.latent_dim, self.cfg.latent_dim, generator, device)

    def training_loss(self, latents: torch.Tensor, class_weights: torch.Tensor, frames: torch.Tensor | None = None,
                      unconditioned: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean squared error of the v-prediction at a random noise level per path, and the motion error: the
        mean squared difference between the frame-to-frame velocities of the decoded clean-path prediction and
        of `frames` (B', T, pose_dim), real clips of the first B' paths (zero without them), each clip weighted
        by the share of signal at its level, so that only levels where the path is discernible count.
        `latents` (B, T, d) are the real clips' paths, `class_weights` (B, C) or (B, T, C); the denoiser sees
        zero class weights for the paths where `unconditioned` (B,) is true, which guidance needs (the
        decoder still gets their class). Random numbers come from torch's global generator."""
        x0 = self.standardise(latents)
        level = torch.randint(1, self.cfg.diffusion_levels + 1, (len(x0),), device=x0.device)
        a = self.alpha_bar[level][:, None, None]
        eps = torch.randn_like(x0)
        noisy = a.sqrt() * x0 + (1 - a).sqrt() * eps
        cw = per_step(class_weights, latents.shape[1])
        seen = cw if unconditioned is None else cw * ~unconditioned[:, None, None]
        v = self.denoiser(noisy, level, seen)
        path_loss = F.mse_loss(v, a.sqrt() * eps - (1 - a).sqrt() * x0)
        if frames is None:
            return path_loss, path_loss.new_zeros(())
        n = len(frames)
        clean = a[:n].sqrt() * noisy[:n] - (1 - a[:n]).sqrt() * v[:n]
        decoded = self.decode(self.unstandardise(clean), cw[:n])
        velocity_error = (decoded.diff(dim=1) - frames.diff(dim=1)).pow(2).mean(dim=(1, 2))
        return path_loss, (a[:n, 0, 0] * velocity_error).mean()

    def latent_path(self, z0: torch.Tensor, noise: torch.Tensor, class_weights: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Latents (B, T, d) in [-1, 1] and shifts (B, T-1, d), solved from the inputs' starting noise."""
        first = math.sqrt(2.0) * torch.erfinv(z0.clamp(-1 + 1e-6, 1 - 1e-6))
        x = torch.cat([first[:, None], noise], dim=1).transpose(1, 2)
        cw = per_step(class_weights, x.shape[2])
        grid = torch.linspace(self.cfg.diffusion_levels, 0, self.cfg.diffusion_sample_steps + 1).round().long()
        x = self.solve(x, cw, grid.tolist())
        latents = self.unstandardise(x).clamp(-1.0, 1.0)
        return latents, latents[:, 1:] - latents[:, :-1]

    def velocity_field(self, class_weights: torch.Tensor, levels: list[int]
                       ) -> Callable[[torch.Tensor, int], torch.Tensor]:
        """v(x, i): the v-prediction for noisy paths `x` with these class weights (B, T, C) at levels[i], guided
        by the weight w of `guidance`: (1 + w) times the class-conditioned prediction minus w times the
        unconditioned one (zero class weights), both from one batched pass (round 23, untraced: a single
        guided clip took 180-190 ms against 240 ms for two passes). The blocks' class scale and shift are
        computed once for all levels, and their level part once per level: a sampler's passes then run only
        the convolutions (a 3D clip's pass 20-30 % faster than computing both every pass; app requests 7-18 %,
        round 25)."""
        w = self.guidance(class_weights)
        seen = torch.cat([class_weights, torch.zeros_like(class_weights)]) if w is not None else class_weights
        if type(self.denoiser) is LatentPathDenoiser:
            class_films = self.denoiser.class_films(seen)
            level_films = self.denoiser.level_films(torch.tensor(levels, device=seen.device))

            def predict(x: torch.Tensor, i: int) -> torch.Tensor:
                return self.filmed(x, level_films[:, i:i + 1] + class_films)
        else:  # any other (v, level, class weights) network, such as the tests' doubles

            def predict(x: torch.Tensor, i: int) -> torch.Tensor:
                return self.denoiser(x, torch.full((len(x),), levels[i], device=x.device), seen)

        def field(x: torch.Tensor, i: int) -> torch.Tensor:
            if w is None:
                return predict(x, i)
            conditioned, unconditioned = predict(torch.cat([x, x]), i).chunk(2)
            return conditioned + w * (conditioned - unconditioned)
        return field

    def guidance(self, class_weights: torch.Tensor) -> float | torch.Tensor | None:
        """The guidance weight for paths with these class weights (B, T, C): `diffusion_guidance`, or with
        `diffusion_class_guidance` each frame's mix of the per-class weights (B, 1, T); None where unguided."""
        by_class = self.cfg.diffusion_class_guidance
        if not by_class:
            return self.cfg.diffusion_guidance or None
        if not any(by_class):
            return None
        return (class_weights @ class_weights.new_tensor(by_class))[:, None, :]

    def filmed(self, x: torch.Tensor, films: torch.Tensor) -> torch.Tensor:
        """The denoiser's v-prediction given its blocks' scale and shift. Sampling outside training and
        autograd runs a frozen TorchScript trace of it: the same numbers up to float rounding, in about 60 %
        of the time for one clip, whose eager pass spends most of its time in Python and module calls rather
        than arithmetic. The trace is made on first use and again whenever the weights, the denoiser or the
        device change."""
        if self.training or torch.is_grad_enabled():
            return self.denoiser.filmed(x, films)
        # A tensor's _version counts its in-place changes (optimiser steps, load_state_dict): new weights. The
        # parameters are listed once per trace: walking the module tree on every pass took 0.1 ms of its 1.7.
        frozen = self._frozen
        if frozen is None or not frozen.fits(self.denoiser, x.device):
            with warnings.catch_warnings():
                # torch 2.13 marks torch.jit deprecated (in favour of torch.compile, whose C++ build takes
                # minutes); the pinned version has it, and the trace is checked against the module in the tests.
                warnings.simplefilter("ignore")
                traced = torch.jit.freeze(torch.jit.trace(Filmed(self.denoiser), (x, films),
                                                          check_trace=False))
            parameters = list(self.denoiser.parameters())
            frozen = self._frozen = FrozenTrace(self.denoiser, x.device, parameters,
                                                tuple(p._version for p in parameters), traced)
        return frozen.traced(x, films)

    def solve(self, x: torch.Tensor, class_weights: torch.Tensor, levels: list[int]) -> torch.Tensor:
        """The clean path from noisy paths `x` at levels[0], along the descending `levels` (ending at 0), by
        the deterministic DPM-Solver++ (Lu et al. 2022) of order `diffusion_solver_order`. Order 1 is DDIM;
        order 2 extrapolates the clean-path prediction from the last two, so 50 steps come as close to the exact
        solution as DDIM's 100 (model card, round 21). The last step returns the prediction itself."""
        prediction = step_before = None
        velocity = self.velocity_field(class_weights, levels[:-1])
        for i, (level, level_next) in enumerate(zip(levels[:-1], levels[1:])):
            a, a_next = self.alpha_bar[level], self.alpha_bar[level_next]
            v = velocity(x, i)
            clean = a.sqrt() * x - (1 - a).sqrt() * v
            if level_next == 0:
                return clean
            step = half_log_snr(a_next) - half_log_snr(a)
            target = clean
            if self.cfg.diffusion_solver_order == 2 and prediction is not None:
                r = step_before / step
                target = (1 + 0.5 / r) * clean - (0.5 / r) * prediction
            x = ((1 - a_next) / (1 - a)).sqrt() * x - a_next.sqrt() * torch.expm1(-step) * target
            prediction, step_before = clean, step
        return x

    def decode(self, latents: torch.Tensor, class_weights: torch.Tensor) -> torch.Tensor:
        """Frames (B, T, pose_dim) of latent paths (B, T, d) under per-frame class weights (B, T, C)."""
        frames = self.decoder(latents, class_weights)
        return frames if self.refiner is None else self.refiner(frames, class_weights)

    def forward(self, z0: torch.Tensor, noise: torch.Tensor, class_weights: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Frames (B, T, pose_dim), latents (B, T, d), shifts (B, T-1, d)."""
        latents, shifts = self.latent_path(z0, noise, class_weights)
        return self.decode(latents, per_step(class_weights, latents.shape[1])), latents, shifts
