"""The diffusion transition model (actiongen.diffusion) and its training stage (train.stage2_diffusion)."""
from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from actiongen.app_logic import ActionGenService, PageState
from actiongen.checkpoint import CheckpointError, load_bundle, save_bundle
from actiongen.diffusion import LatentPathDiffusion, TimeConv, cosine_schedule
from actiongen.generator import Generator
from actiongen.data import ClipSampler
from actiongen.models import ModelConfig, PoseDecoder, PoseEncoder, PoseRefiner, per_step
from synthetic_h36m import random_bundle
from train import stage1_pose, stage2_diffusion
from train.common import load_state, native_bfloat16

TINY = ModelConfig(latent_dim=4, decoder_hidden=16, critic_hidden=16, transition="diffusion", diffusion_channels=16,
                   diffusion_blocks=2, diffusion_levels=20, diffusion_sample_steps=5)
SUBJECTS = ["--train-subjects", "1", "5", "--test-subjects", "11"]
SMALL = ["--batch", "8", "--log-every", "1", "--checkpoint-every", "2", "--sample-every", "4"]
TINY_DENOISER = ["--channels", "16", "--blocks", "2", "--levels", "20", "--sample-steps", "4"]
TINY_REFINER = ["--refiner-steps", "3", "--refiner-channels", "8"]


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("ACTIONGEN_CACHE", str(tmp_path_factory.getbasetemp() / "train-cache"))


def tiny_model(seed: int = 0) -> LatentPathDiffusion:
    torch.manual_seed(seed)
    return LatentPathDiffusion(TINY, PoseDecoder(TINY)).eval()


def one_hot(labels: list[int]) -> torch.Tensor:
    return F.one_hot(torch.tensor(labels), TINY.num_classes).float()


def test_noise_schedule_runs_from_clean_to_almost_pure_noise():
    alpha_bar = cosine_schedule(200)
    assert alpha_bar.shape == (201,) and alpha_bar[0] == 1.0
    assert (alpha_bar[1:] < alpha_bar[:-1]).all() and alpha_bar[-1] < 1e-3


@pytest.mark.parametrize("frames", [2, 50, 73])
def test_samples_are_paths_in_the_decoders_box_for_any_length(frames):
    model = tiny_model()
    z0, noise = model.sample_inputs(3, frames, torch.Generator().manual_seed(0))
    assert z0.shape == (3, 4) and noise.shape == (3, frames - 1, 4) and z0.abs().max() <= 1
    with torch.no_grad():
        poses, latents, shifts = model(z0, noise, one_hot([0, 4, 9]))
    assert poses.shape == (3, frames, TINY.pose_dim) and torch.isfinite(poses).all()
    assert latents.shape == (3, frames, 4) and latents.abs().max() <= 1
    assert torch.allclose(shifts, latents[:, 1:] - latents[:, :-1])


def test_sampling_is_deterministic_and_each_row_depends_only_on_its_inputs():
    model = tiny_model()
    z0, noise = model.sample_inputs(2, 30, torch.Generator().manual_seed(1))
    cw = one_hot([2, 7])
    with torch.no_grad():
        both = model(z0, noise, cw)[1]
        again = model(z0, noise, cw)[1]
        first = model(z0[:1], noise[:1], cw[:1])[1]
        other_start = model(-z0, noise, cw)[1]
    assert torch.equal(both, again)
    assert torch.allclose(both[:1], first, atol=1e-5)
    assert not torch.allclose(both, other_start, atol=1e-3)


def test_class_weights_may_be_per_clip_or_per_frame():
    model = tiny_model()
    z0, noise = model.sample_inputs(1, 40, torch.Generator().manual_seed(2))
    walking = one_hot([9])
    changing = walking[:, None].repeat(1, 40, 1)
    changing[:, 20:] = one_hot([4])
    with torch.no_grad():
        per_clip = model(z0, noise, walking)[1]
        per_frame_same = model(z0, noise, walking[:, None].expand(-1, 40, -1))[1]
        per_frame_changing = model(z0, noise, changing)[1]
    assert torch.allclose(per_clip, per_frame_same, atol=1e-6)
    assert not torch.allclose(per_clip[:, 20:], per_frame_changing[:, 20:], atol=1e-3)


def ddim(model: LatentPathDiffusion, x: torch.Tensor, cw: torch.Tensor, levels: list[int]) -> torch.Tensor:
    """DDIM written out from its definition: re-noise the clean-path prediction to the next level with the
    noise the model's prediction implies."""
    for level, level_next in zip(levels[:-1], levels[1:]):
        a, a_next = model.alpha_bar[level], model.alpha_bar[level_next]
        v = model.denoiser(x, torch.full((len(x),), level), cw)
        clean, eps = a.sqrt() * x - (1 - a).sqrt() * v, (1 - a).sqrt() * x + a.sqrt() * v
        x = a_next.sqrt() * clean + (1 - a_next).sqrt() * eps
    return x


def test_the_first_order_solver_is_ddim_and_the_second_order_one_converges_faster():
    torch.manual_seed(4)
    cfg = replace(TINY, diffusion_levels=100)
    x = torch.randn(3, 4, 12)
    cw = per_step(one_hot([1, 5, 8]), 12)
    first, second = (LatentPathDiffusion(replace(cfg, diffusion_solver_order=order), PoseDecoder(cfg)).eval()
                     for order in (1, 2))
    second.load_state_dict(first.state_dict())
    for model in (first, second):  # a denoiser that predicts more than zeros, so the path bends
        for p in model.denoiser.out.parameters():
            p.data.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(5)) * 0.3)

    def solved(model: LatentPathDiffusion, steps: int) -> torch.Tensor:
        with torch.no_grad():
            return model.solve(x, cw, torch.linspace(100, 0, steps + 1).round().long().tolist())

    with torch.no_grad():
        assert torch.allclose(solved(first, 10), ddim(first, x, cw, torch.linspace(100, 0, 11).round().long().tolist()),
                              atol=1e-5)
    exact = solved(second, 100)
    error = {(order, steps): (solved(model, steps) - exact).abs().max().item()
             for order, model in ((1, first), (2, second)) for steps in (10, 25)}
    assert error[2, 25] < error[2, 10] and error[1, 25] < error[1, 10]
    assert error[2, 10] < 0.5 * error[1, 10] and error[2, 25] < 0.5 * error[1, 25]


def test_training_learns_each_classs_paths():
    """Class 0's real paths sit at +0.5 in every latent dimension, class 1's at -0.5: after a short fit the samples
    of each class are where its paths are, so the training loss and the sampler agree on what is predicted."""
    model = tiny_model()
    model.set_path_statistics(torch.tensor([0.5, -0.5])[:, None, None].expand(2, 20, 4))
    optimizer = torch.optim.Adam(model.denoiser.parameters(), lr=3e-3)
    labels = torch.arange(32) % 2
    paths = (0.5 - labels.float())[:, None, None].expand(-1, 20, 4) + 0.02 * torch.randn(32, 20, 4)
    model.train()
    losses = []
    for _ in range(300):
        loss, no_motion = model.training_loss(paths, one_hot(labels.tolist()))
        assert no_motion == 0
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    assert np.mean(losses[-20:]) < 0.5 * np.mean(losses[:20])
    z0, noise = model.sample_inputs(16, 20, torch.Generator().manual_seed(3))
    with torch.no_grad():
        latents = model(z0, noise, one_hot([0] * 8 + [1] * 8))[1]
    assert latents[:8].mean() > 0.3 and latents[8:].mean() < -0.3


class OracleDenoiser(torch.nn.Module):
    """Knows the clean paths, so it predicts every v exactly: v = (sqrt(a) x_t - x_0) / sqrt(1 - a)."""

    def __init__(self, clean: torch.Tensor, alpha_bar: torch.Tensor) -> None:
        super().__init__()
        self.clean, self.alpha_bar = clean, alpha_bar

    def forward(self, x: torch.Tensor, level: torch.Tensor, class_weights: torch.Tensor) -> torch.Tensor:
        a = self.alpha_bar[level][:, None, None]
        return (a.sqrt() * x - self.clean) / (1 - a).sqrt()


def test_the_motion_error_compares_decoded_velocities_with_the_real_clips():
    """With exact predictions the motion error is zero for clips that move as the decoded paths do, wherever they
    are, and grows with frame-to-frame jitter the paths do not have; it covers only the clips it is given."""
    model = tiny_model()
    torch.manual_seed(1)
    paths = (0.2 * torch.randn(6, 20, 4)).cumsum(dim=1).tanh()
    model.set_path_statistics(paths)
    model.denoiser = OracleDenoiser(model.standardise(paths), model.alpha_bar)
    cw = one_hot([0, 1, 2, 3, 4, 5])
    with torch.no_grad():
        decoded = model.decoder(paths, per_step(cw, 20))
        path_loss, no_motion = model.training_loss(paths, cw)
        _, moved = model.training_loss(paths, cw, decoded[:4] + 2.0)
        jitter = torch.randn(4, 20, TINY.pose_dim)
        _, jittered = model.training_loss(paths, cw, decoded[:4] + 0.1 * jitter)
        _, more_jittered = model.training_loss(paths, cw, decoded[:4] + 0.3 * jitter)
    assert path_loss < 1e-6 and no_motion == 0 and moved < 1e-6
    assert 1e-4 < jittered < more_jittered


class RecordingDenoiser(torch.nn.Module):
    """Predicts v = x + class weights of class 0 (so guidance has something to amplify) and records the class
    weights it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor, level: torch.Tensor, class_weights: torch.Tensor) -> torch.Tensor:
        self.seen.append(class_weights.clone())
        return x + class_weights[:, None, :, 0]


def test_guidance_extrapolates_from_the_unconditioned_prediction_to_the_conditioned_one():
    model = tiny_model()
    x, cw = torch.randn(3, TINY.latent_dim, 10), per_step(one_hot([0, 0, 1]), 10)
    with torch.no_grad():
        conditioned = model.denoiser(x, torch.full((3,), 7), cw)
        unconditioned = model.denoiser(x, torch.full((3,), 7), torch.zeros_like(cw))

        def velocity() -> torch.Tensor:  # the field reads the guidance weight when it is made
            return model.velocity_field(cw, [7])(x, 0)
        torch.testing.assert_close(velocity(), conditioned)  # guidance 0: the plain prediction
        model.cfg = replace(TINY, diffusion_guidance=2.0)
        torch.testing.assert_close(velocity(), conditioned + 2.0 * (conditioned - unconditioned))
    assert not torch.allclose(conditioned, unconditioned)
    recording = RecordingDenoiser()
    model.denoiser = recording
    with torch.no_grad():
        guided, _ = model.latent_path(*model.sample_inputs(3, 10), one_hot([0, 0, 1]))
    # one batched pass a step: the clips with their classes, then the same clips with none
    assert len(recording.seen) == TINY.diffusion_sample_steps
    assert all(len(seen) == 6 and seen[:3].sum() == 30 and seen[3:].abs().sum() == 0 for seen in recording.seen)
    assert guided.shape == (3, 10, TINY.latent_dim) and torch.isfinite(guided).all()
    with pytest.raises(ValueError, match="diffusion_guidance must be a finite number >= 0; got -1.0"):
        LatentPathDiffusion(replace(TINY, diffusion_guidance=-1.0), PoseDecoder(TINY))


def test_class_guidance_weighs_each_frame_by_its_class_mix_and_leaves_the_other_classes_alone():
    model = tiny_model()
    cw = per_step(one_hot([0, 1]), 6).clone()
    cw[1, 3:] = 0.5 * (one_hot([1]) + one_hot([2]))  # the second clip blends into class 2 halfway
    by_class = [0.5] * TINY.num_classes
    by_class[2] = 2.0
    model.cfg = replace(TINY, diffusion_guidance=0.5, diffusion_class_guidance=tuple(by_class))
    torch.testing.assert_close(model.guidance(cw), torch.tensor([[[0.5] * 6], [[0.5] * 3 + [1.25] * 3]]))
    inputs = model.sample_inputs(2, 6, torch.Generator().manual_seed(3))
    with torch.no_grad():
        per_class, _ = model.latent_path(*inputs, one_hot([0, 2]))
        model.cfg = replace(TINY, diffusion_guidance=0.5)
        shared, _ = model.latent_path(*inputs, one_hot([0, 2]))
    assert torch.equal(per_class[0], shared[0])  # class 0 keeps the shared weight: the same clip, bit for bit
    assert not torch.allclose(per_class[1], shared[1])
    model.cfg = replace(TINY, diffusion_class_guidance=(0.0,) * TINY.num_classes)
    assert model.guidance(cw) is None  # all zero: one unguided pass a step
    for bad in ((1.0,) * 3, (-1.0,) + (0.5,) * (TINY.num_classes - 1)):
        with pytest.raises(ValueError, match=f"diffusion_class_guidance must be empty or {TINY.num_classes} finite"):
            LatentPathDiffusion(replace(TINY, diffusion_class_guidance=bad), PoseDecoder(TINY))


def test_class_guidance_options_name_the_valid_actions_and_need_class_dropout(capsys):
    base = ["--stage1", "s1", "--out", "s2"]
    assert stage2_diffusion.parse_args([*base, "--class-guidance", "Walking=1", "Eating=0"]).class_guidance == {
        "Walking": 1.0, "Eating": 0.0}
    assert stage2_diffusion.parse_args([*base, "--class-guidance"]).class_guidance == {}
    for item, message in (("Running=1", "unknown action 'Running' in 'Running=1'; valid: Directions, Discussion"),
                          ("Walking=fast", "'Walking=fast' needs a weight >= 0, as in Walking=1"),
                          ("Walking=-1", "'Walking=-1' needs a weight >= 0"),
                          ("Walking=1 --class-dropout 0 --guidance 0", "need a denoiser that has learnt paths")):
        with pytest.raises(SystemExit):
            stage2_diffusion.parse_args([*base, "--class-guidance", *item.split()])
        assert message in capsys.readouterr().err


def test_class_dropout_hides_the_class_from_the_denoiser_only():
    """Paths marked unconditioned reach the denoiser with zero class weights; the others keep theirs."""
    model = tiny_model()
    model.denoiser = RecordingDenoiser()
    paths, cw = torch.rand(4, 12, TINY.latent_dim) * 2 - 1, one_hot([0, 1, 2, 3])
    model.training_loss(paths, cw, unconditioned=torch.tensor([True, False, True, False]))
    seen = model.denoiser.seen[0]
    assert seen[[0, 2]].abs().sum() == 0
    assert torch.equal(seen[[1, 3]], per_step(cw, 12)[[1, 3]])


@pytest.mark.parametrize("dilation", [1, 2, 8])
def test_time_conv_computes_the_dilated_convolution_on_one_clip_and_on_batches(dilation):
    """The stacked path of one clip or a guided pair (shifted views, one matrix product) and the library's
    kernel of larger batches give what nn.Conv1d gives, with the same weights and state dict keys, so bundles
    trained before it load and sample as they did."""
    torch.manual_seed(dilation)
    reference = torch.nn.Conv1d(12, 8, 3, padding=dilation, dilation=dilation)
    conv = TimeConv(12, 8, 3, padding=dilation, dilation=dilation)
    conv.load_state_dict(reference.state_dict())
    for batch in (1, 2, 3, 16):
        x = torch.randn(batch, 12, 50)
        with torch.no_grad():
            torch.testing.assert_close(conv(x), reference(x), rtol=1e-6, atol=1e-6)


def test_sampling_runs_a_trace_of_the_denoiser_that_follows_its_weights():
    """Outside training and autograd the denoiser runs as a frozen trace, which predicts what the module does for
    any batch and length; new weights are traced again; with autograd the module itself runs and gradients
    reach it. The films a sampler computes once (class part per sample, level part per level) give the
    module's prediction."""
    model = tiny_model()
    cw = per_step(one_hot([0, 3, 9]), 30)
    x, level = torch.randn(3, 4, 30), torch.tensor([3, 10, 20])

    def films(level: torch.Tensor, cw: torch.Tensor) -> torch.Tensor:
        return model.denoiser.level_films(level) + model.denoiser.class_films(cw)
    with torch.no_grad():
        torch.testing.assert_close(model.filmed(x, films(level, cw)), model.denoiser(x, level, cw))
        assert isinstance(model._frozen.traced, torch.jit.ScriptModule)
        for batch, frames in ((1, 30), (5, 7), (2, 80)):
            xb, cb = torch.randn(batch, 4, frames), per_step(one_hot([2] * batch), frames)
            lb = torch.full((batch,), 7)
            torch.testing.assert_close(model.filmed(xb, films(lb, cb)), model.denoiser(xb, lb, cb))
            field = model.velocity_field(cb, [7, 3])
            torch.testing.assert_close(field(xb, 0), model.denoiser(xb, lb, cb))
            torch.testing.assert_close(field(xb, 1), model.denoiser(xb, torch.full((batch,), 3), cb))
        model.denoiser.load_state_dict(tiny_model(seed=1).denoiser.state_dict())
        torch.testing.assert_close(model.filmed(x, films(level, cw)), model.denoiser(x, level, cw))
        torch.testing.assert_close(model.filmed(x, films(level, cw)), tiny_model(seed=1).denoiser(x, level, cw))
    model.filmed(x, films(level, cw)).sum().backward()
    assert all(p.grad is not None for p in model.denoiser.parameters())


def test_config_names_the_valid_transitions_and_checks_the_sampler():
    with pytest.raises(ValueError, match="unknown transition 'gru'; valid: lstm, diffusion"):
        ModelConfig.from_dict({"transition": "gru"})
    with pytest.raises(ValueError, match=r"diffusion_sample_steps \(30\) must be at most diffusion_levels \(20\)"):
        LatentPathDiffusion(replace(TINY, diffusion_sample_steps=30), PoseDecoder(TINY))
    with pytest.raises(ValueError, match=r"diffusion_solver_order must be one of \(1, 2\); got 3"):
        LatentPathDiffusion(replace(TINY, diffusion_solver_order=3), PoseDecoder(TINY))
    with pytest.raises(ValueError, match="diffusion_channels must be a multiple of 8; got 12"):
        LatentPathDiffusion(replace(TINY, diffusion_channels=12), PoseDecoder(TINY))


def test_a_diffusion_bundle_round_trips_and_generates_through_the_generator(synthetic_data, tmp_path):
    bundle = random_bundle(synthetic_data.stats, replace(TINY, pose_dim=synthetic_data.stats.pose_dim))
    bundle.transition.set_path_statistics(torch.rand(8, 10, 4) * 0.6 - 0.3)
    json_path, _ = save_bundle(tmp_path / "d.json", bundle)
    loaded = load_bundle(json_path)
    assert isinstance(loaded.transition, LatentPathDiffusion) and loaded.config.transition == "diffusion"
    assert torch.equal(loaded.transition.path_std, bundle.transition.path_std)
    generator = Generator(loaded)
    clip = generator.sample("Walking", seed=5, frames=60)
    assert clip.joints.shape == (60, 16, 2) and np.isfinite(clip.joints).all()
    other_weights = Generator(random_bundle(synthetic_data.stats, bundle.config, seed=1))
    assert not np.allclose(other_weights.sample("Walking", seed=5, frames=60).joints, clip.joints)
    assert np.allclose(generator.sample("Walking", seed=5, frames=60).joints, clip.joints)
    blend = generator.sample({"Walking": 0.5, "Phoning": 0.5}, seed=5, to_action="Sitting", transition=(10, 40),
                             seed_b=6, alpha=0.5)
    assert np.isfinite(blend.joints).all()
    batch = generator.sample_many(["Walking", "Eating"], [5, 8], frames=60)
    assert np.allclose(batch.joints[0], clip.joints, atol=1e-3)


def test_the_app_serves_a_diffusion_bundle_in_every_mode(synthetic_data, tmp_path):
    json_path, _ = save_bundle(tmp_path / "d.json", random_bundle(synthetic_data.stats, replace(
        TINY, pose_dim=synthetic_data.stats.pose_dim)))
    service = ActionGenService(json_path, device="cpu", work_dir=tmp_path)
    one = service.view(PageState(action="Walking", seed=4, frames=40))
    assert one.sample.joints.shape == (40, 16, 2) and len(json.loads(one.skeleton)["frames"]) == 40
    switched = service.view(PageState(action="Walking", seed=4, frames=40, mode="transition", action_b="Sitting"))
    assert not np.allclose(switched.sample.joints, one.sample.joints)
    ends = service.view(PageState(action="Walking", seed=4, seed_b=9, alpha=0.0, frames=40, mode="interpolate"))
    np.testing.assert_allclose(ends.sample.joints, one.sample.joints, atol=1e-5)
    assert len(json.loads(service.gallery(PageState(action="Walking", seed=4, frames=40)))["frames"]) == 40
    assert {".gif", ".json"} <= set(service.export(PageState(action="Walking", seed=4, frames=40)))


def test_a_bundle_with_an_unknown_transition_is_refused_with_the_valid_ones(synthetic_data, tmp_path):
    json_path, _ = save_bundle(tmp_path / "d.json", random_bundle(synthetic_data.stats, replace(
        TINY, pose_dim=synthetic_data.stats.pose_dim)))
    doc = json.loads(json_path.read_text())
    doc["model"]["transition"] = "transformer"
    json_path.write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="unknown transition 'transformer'; valid: lstm, diffusion"):
        load_bundle(json_path)


@pytest.fixture(scope="module")
def stage1_encoder_run(synthetic_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("stage1-encoder")
    stage1_pose.main(["--data-root", str(synthetic_root), "--out", str(out), "--recon-weight", "10", "--steps", "4",
                      "--hidden", "64", "--latent-dim", "6", *TINY_REFINER, *SMALL, *SUBJECTS])
    return out


def test_stage2_diffusion_trains_resumes_and_exports_a_bundle_that_generates(synthetic_root, stage1_encoder_run,
                                                                              tmp_path, monkeypatch):
    unguided = ["--data-root", str(synthetic_root), "--stage1", str(stage1_encoder_run), *SMALL, *SUBJECTS,
                *TINY_DENOISER, "--motion-weight", "10"]
    common = [*unguided, "--class-dropout", "0.5", "--guidance", "1.5", "--class-guidance", "Walking=2"]
    stage2_diffusion.main([*common, "--out", str(tmp_path / "straight"), "--steps", "4"])
    save_state = stage2_diffusion.save_state

    def interrupted_after_step_2(run_dir, state):
        save_state(run_dir, state)
        if state["step"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(stage2_diffusion, "save_state", interrupted_after_step_2)
    with pytest.raises(KeyboardInterrupt):
        stage2_diffusion.main([*common, "--out", str(tmp_path / "split"), "--steps", "4"])
    monkeypatch.setattr(stage2_diffusion, "save_state", save_state)
    stage2_diffusion.main([*common, "--out", str(tmp_path / "split"), "--steps", "4", "--resume"])
    straight, split = load_state(tmp_path / "straight"), load_state(tmp_path / "split")
    assert straight["step"] == split["step"] == 4
    for key in ("transition", "classifier"):
        for name, value in straight[key].items():
            assert torch.equal(value, split[key][name]), f"{key}.{name}"
    logged = [json.loads(line) for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in logged] == [1, 2, 3, 4] and all(row["path_loss"] > 0 for row in logged)
    assert all(row["motion_loss"] > 0 for row in logged)
    assert [round(row["lr"] / 1e-3, 3) for row in logged] == [0.854, 0.5, 0.146, 0.0]  # the cosine, resumed
    with pytest.raises(SystemExit, match="decays its learning rate over --steps 4; resume it with the same --steps"):
        stage2_diffusion.main([*common, "--out", str(tmp_path / "split"), "--steps", "8", "--resume"])
    with pytest.raises(SystemExit, match="was trained with --lr-schedule cosine; resume it with the same"):
        stage2_diffusion.main([*common, "--out", str(tmp_path / "split"), "--steps", "8", "--resume",
                               "--lr-schedule", "constant"])
    # The preset's class dropout (0.1) and guidance would otherwise change a run trained with 0.5 mid-way.
    with pytest.raises(SystemExit, match="was trained with --class-dropout 0.5; resume it with the same"):
        stage2_diffusion.main([*unguided, "--out", str(tmp_path / "split"), "--steps", "4", "--resume"])
    assert (tmp_path / "straight" / "samples_000004.png").stat().st_size > 0
    stage1 = load_state(stage1_encoder_run)
    bundle = load_bundle(tmp_path / "straight" / "actiongen.json")
    assert bundle.config.transition == "diffusion" and bundle.config.latent_dim == 6
    assert bundle.meta["training"]["stage2"]["transition"] == "diffusion"
    assert bundle.meta["training"]["stage2"]["motion_weight"] == 10
    assert bundle.meta["training"]["stage2"]["class_dropout"] == 0.5
    assert bundle.config.diffusion_guidance == bundle.meta["training"]["stage2"]["guidance"] == 1.5
    assert bundle.meta["training"]["stage2"]["class_guidance"] == {"Walking": 2.0}
    assert bundle.config.diffusion_class_guidance == (1.5,) * 9 + (2.0,)  # Walking is the last action
    native = native_bfloat16(torch.device("cpu"))
    assert bundle.meta["training"]["stage2"]["precision"] == ("bfloat16" if native else "float32")
    for part in ("decoder", "refiner"):  # stage 1's, untouched
        for name, value in stage1[part].items():
            assert torch.equal(getattr(bundle.transition, part).state_dict()[name], value), f"{part}.{name}"
    assert bundle.config.pose_refiner and bundle.meta["training"]["stage1"]["refiner_steps"] == 3
    clip = Generator.load(tmp_path / "straight" / "actiongen.json").sample("Walking", seed=3)
    assert clip.joints.shape == (50, 16, 2) and np.isfinite(clip.joints).all()


def test_how_often_the_classifier_trains_leaves_the_denoiser_bit_for_bit_the_same(synthetic_root, stage1_encoder_run,
                                                                                tmp_path, monkeypatch):
    """The classifier draws no random numbers and has its own gradients, so its schedule is free to change."""
    options = ["--data-root", str(synthetic_root), "--stage1", str(stage1_encoder_run), *SMALL, *SUBJECTS,
               *TINY_DENOISER, "--steps", "4"]
    for every in (1, 3):
        monkeypatch.setattr(stage2_diffusion, "CLASSIFIER_EVERY", every)
        stage2_diffusion.main([*options, "--out", str(tmp_path / f"every{every}")])
    often, seldom = load_state(tmp_path / "every1"), load_state(tmp_path / "every3")
    for name, value in often["transition"].items():
        assert torch.equal(value, seldom["transition"][name]), name
    assert any(not torch.equal(value, seldom["classifier"][name]) for name, value in often["classifier"].items())


def test_a_refiner_leaves_the_denoiser_bit_for_bit_the_same_and_refines_the_decoded_frames(synthetic_root, tmp_path):
    """Stage 2 builds stage 1's refiner without drawing random numbers, so a refiner added to a finished stage 1
    (on resume) leaves the denoiser's training as it was; the bundle's frames are the refined decoder output."""
    stage1 = ["--data-root", str(synthetic_root), "--recon-weight", "10", "--steps", "4", "--hidden", "64",
              "--latent-dim", "6", *SMALL, *SUBJECTS]
    stage1_pose.main([*stage1, "--out", str(tmp_path / "plain"), "--refiner-steps", "0"])
    shutil.copytree(tmp_path / "plain", tmp_path / "refined")
    stage1_pose.main([*stage1, "--out", str(tmp_path / "refined"), "--resume", *TINY_REFINER])
    plain, refined = load_state(tmp_path / "plain"), load_state(tmp_path / "refined")
    assert "refiner" not in plain and not plain["model"]["pose_refiner"] and refined["model"]["pose_refiner"]
    for name, value in plain["decoder"].items():
        assert torch.equal(value, refined["decoder"][name])
    options = [*SMALL, *SUBJECTS, *TINY_DENOISER, "--steps", "4", "--data-root", str(synthetic_root)]
    for name in ("plain", "refined"):
        stage2_diffusion.main([*options, "--stage1", str(tmp_path / name), "--out", str(tmp_path / f"s2-{name}")])
    without, with_refiner = load_state(tmp_path / "s2-plain"), load_state(tmp_path / "s2-refined")
    for name, value in without["transition"].items():
        assert torch.equal(value, with_refiner["transition"][name]), name
    bundle = load_bundle(tmp_path / "s2-refined" / "actiongen.json")
    assert bundle.meta["training"]["stage1"]["refiner_steps"] == 3  # the resumed run's, which trained it
    z0, noise = bundle.transition.sample_inputs(3, 20, torch.Generator().manual_seed(1))
    cw = per_step(one_hot([0, 4, 9]), 20)
    with torch.no_grad():
        frames, latents, _ = bundle.transition(z0, noise, cw)
        decoded = bundle.transition.decoder(latents, cw)
        torch.testing.assert_close(frames, bundle.transition.refiner(decoded, cw))
    assert not torch.allclose(frames, decoded, atol=1e-4)  # three steps moved the refiner off the identity


def test_a_diffusion_model_has_a_refiner_exactly_when_its_config_says():
    with pytest.raises(ValueError, match="the config's pose_refiner is True but a refiner was not given"):
        LatentPathDiffusion(replace(TINY, pose_refiner=True), PoseDecoder(TINY))
    with pytest.raises(ValueError, match="the config's pose_refiner is False but a refiner was given"):
        LatentPathDiffusion(TINY, PoseDecoder(TINY), PoseRefiner(TINY))


def test_the_refiner_starts_as_the_identity_and_sees_twenty_frames_either_side():
    torch.manual_seed(0)
    cfg = replace(TINY, refiner_channels=8)
    refiner = PoseRefiner(cfg).eval()
    frames, cw = torch.randn(2, 60, cfg.pose_dim), one_hot([3, 7])
    with torch.no_grad():
        assert torch.equal(refiner(frames, cw), frames)
        torch.nn.init.normal_(refiner.out.weight, std=0.1)
        moved = frames.clone()
        moved[:, 30] += 1.0
        change = (refiner(moved, cw) - refiner(frames, cw)).abs().amax(dim=(0, 2))
        assert (change[10:51] > 0).all() and (change[:10] == 0).all() and (change[51:] == 0).all()
        per_frame = per_step(cw, 60).clone()
        per_frame[:, 40:] = one_hot([0, 0])[:, None]  # per-frame class weights: a change of action
        assert refiner(frames, per_frame)[:, :15].equal(refiner(frames, cw)[:, :15])
        assert not refiner(frames, per_frame)[:, 45:].equal(refiner(frames, cw)[:, 45:])
        assert refiner(frames[:, :1], cw).shape == (2, 1, cfg.pose_dim)  # any length, one frame too


def test_encoded_frames_give_every_clip_the_path_its_frames_encode_to(synthetic_data):
    torch.manual_seed(0)
    encoder = PoseEncoder(TINY).eval()
    sampler = ClipSampler(synthetic_data, "train", seed=1)
    assert len(sampler.vectors) > 300  # so that the chunks below split the frames
    latents = stage2_diffusion.encode_frames(encoder, sampler.vectors, sampler.frame_labels(), TINY.num_classes,
                                             torch.device("cpu"), chunk=100)
    rows, labels = sampler.clip_rows(6)
    with torch.no_grad():
        expected = encoder(torch.from_numpy(sampler.vectors[rows]), per_step(one_hot(labels.tolist()), 50))
    torch.testing.assert_close(latents[torch.from_numpy(rows)], expected)


def test_a_bfloat16_training_loss_is_the_float32_loss_up_to_its_rounding():
    model = tiny_model()
    latents, class_weights = torch.rand(16, 50, TINY.latent_dim) * 2 - 1, one_hot([i % 10 for i in range(16)])
    model.set_path_statistics(latents)
    torch.manual_seed(1)
    full, _ = model.training_loss(latents, class_weights)
    torch.manual_seed(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rounded, _ = model.training_loss(latents, class_weights)
    assert rounded.dtype == torch.float32
    assert rounded != full and abs(rounded - full) < 0.02 * full


def test_stage2_diffusion_refuses_a_stage1_without_encoder_and_the_paper_preset(synthetic_root, tmp_path):
    stage1_pose.main(["--data-root", str(synthetic_root), "--out", str(tmp_path / "s1"), "--steps", "2",
                      "--hidden", "64", "--recon-weight", "0", *SMALL, *SUBJECTS])
    common = ["--data-root", str(synthetic_root), "--stage1", str(tmp_path / "s1"), "--out", str(tmp_path / "s2"),
              "--steps", "2", *SMALL, *SUBJECTS]
    with pytest.raises(SystemExit, match="trained without one; train stage 1 with --recon-weight"):
        stage2_diffusion.main(common)
    with pytest.raises(SystemExit, match="only the fast preset"):
        stage2_diffusion.main([*common, "--preset", "paper"])


@pytest.mark.parametrize("options, message", [
    (["--class-dropout", "0", "--guidance", "2"],
     "--guidance and --class-guidance need a denoiser that has learnt paths without their class: give "
     "--class-dropout"),
    (["--class-dropout", "1"], r"--class-dropout must be in \[0, 1\); got 1.0"),
    (["--class-dropout", "0.1", "--guidance", "-1"], "--guidance must be at least 0; got -1.0")])
def test_stage2_diffusion_refuses_guidance_it_cannot_give(options, message, capsys):
    with pytest.raises(SystemExit):
        stage2_diffusion.parse_args(["--stage1", "s1", "--out", "s2", *options])
    assert re.search(message, capsys.readouterr().err)
