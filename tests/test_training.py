"""Both training stages on the synthetic archive: end to end, resume, frozen decoder, gradient penalty."""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from actiongen.checkpoint import DEFAULT_BUNDLES, load_bundle
from actiongen.data import ClipSampler, vectors_to_joints
from actiongen.generator import Generator
from actiongen.models import (LatentTransitionGenerator, ModelConfig, PoseCritic, PoseDecoder, PoseEncoder,
                              PoseRefiner, fold_into_box)
from actiongen.skeleton import BONES
from train import common, select_checkpoint, stage1_pose, stage2_diffusion, stage2_sequence
from train.common import check_finite, gradient_penalty, load_state

SUBJECTS = ["--train-subjects", "1", "5", "--test-subjects", "11"]
STAGE1_SIZE = ["--hidden", "64", *SUBJECTS]
TINY_REFINER = ["--refiner-steps", "2", "--refiner-channels", "8"]
STAGE2_SIZE = ["--lstm-hidden", "32", "--head-hidden", "64", *SUBJECTS]
SMALL = ["--steps", "4", "--batch", "8", "--log-every", "1", "--checkpoint-every", "2", "--sample-every", "4"]


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("ACTIONGEN_CACHE", str(tmp_path_factory.getbasetemp() / "train-cache"))


@pytest.fixture(scope="module")
def stage1_run(synthetic_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("stage1")  # without an encoder, as the LSTM walk's recipe trains it
    stage1_pose.main(["--data-root", str(synthetic_root), "--out", str(out), "--recon-weight", "0", *SMALL,
                      *STAGE1_SIZE])
    return out


def test_stage1_writes_state_log_and_samples(stage1_run):
    state = load_state(stage1_run)
    assert state["stage"] == 1 and state["step"] == 4
    lines = (stage1_run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(ln)["step"] for ln in lines] == [1, 2, 3, 4]
    assert (stage1_run / "samples_000004.png").stat().st_size > 0
    assert (stage1_run / "losses.png").stat().st_size > 0


def test_bfloat16_is_used_where_asked_for_or_native(monkeypatch):
    cpu = torch.device("cpu")
    for native in (False, True):
        monkeypatch.setattr(common, "native_bfloat16", lambda device, native=native: native)
        assert common.uses_bfloat16("auto", cpu) == native
        assert common.uses_bfloat16("bfloat16", cpu)
        assert not common.uses_bfloat16("float32", cpu)


def test_stage1_trains_in_the_precision_asked_for_and_records_it(synthetic_root, tmp_path):
    """Under bfloat16 autocast the critic's losses, gradient penalty included, stay float32 and finite, and the
    bundle says how its decoder was trained; float32 trains as before."""
    for precision in ("bfloat16", "float32"):
        out = tmp_path / precision
        stage1_pose.main(["--data-root", str(synthetic_root), "--out", str(out), "--precision", precision,
                          *SMALL, *STAGE1_SIZE, *TINY_REFINER])
        state = load_state(out)
        assert state["precision"] == precision
        assert common.stage1_record(state)["precision"] == precision
        rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
        assert all(math.isfinite(r[k]) for r in rows for k in ("loss_d", "gp", "recon"))
        assert all(v.dtype == torch.float32 for v in state["decoder"].values() if v.is_floating_point())
    legacy = {k: v for k, v in state.items() if k != "precision"}  # states before the option trained float32
    assert common.stage1_record(legacy)["precision"] == "float32"


def test_a_bfloat16_critic_loss_is_the_float32_loss_up_to_its_rounding():
    cfg = ModelConfig(latent_dim=6, pose_dim=30, critic_hidden=64, decoder_hidden=64)
    torch.manual_seed(0)
    critic = PoseCritic(cfg)
    real, fake, cond = torch.randn(64, 30), torch.randn(64, 30) * 1.5, torch.eye(10)[torch.randint(10, (64,))]
    eps = torch.rand(64, 1)

    def loss() -> torch.Tensor:
        wasserstein = critic(real, cond).float().mean() - critic(fake, cond).float().mean()
        return -wasserstein + 10 * gradient_penalty(critic, real, fake, cond, eps)

    full = loss()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rounded = loss()
    assert rounded.dtype == torch.float32
    assert rounded != full and abs(rounded - full) < 0.02 * abs(full)


@pytest.mark.parametrize("layers", [1, 2])
def test_stage1_latent_dim_and_depth_carry_into_stage2_and_the_bundle(synthetic_root, tmp_path, layers):
    stage1_pose.main(["--data-root", str(synthetic_root), "--out", str(tmp_path / "s1"), "--latent-dim", "5",
                      "--decoder-layers", str(layers), *TINY_REFINER, *SMALL, *STAGE1_SIZE])
    state = load_state(tmp_path / "s1")
    assert state["model"]["latent_dim"] == 5 and state["model"]["decoder_layers"] == layers
    assert sum(k.endswith("running_mean") for k in state["decoder"]) == layers  # one BatchNorm per hidden block
    stage2_sequence.main(["--data-root", str(synthetic_root), "--stage1", str(tmp_path / "s1"), "--out",
                          str(tmp_path / "s2"), *SMALL, *STAGE2_SIZE])
    generator = Generator.load(tmp_path / "s2" / "actiongen.json")
    assert generator.bundle.meta["training"]["stage1"]["recon_weight"] == 10.0  # the fast preset's encoder
    assert generator.bundle.config.decoder_layers == layers
    assert not generator.bundle.config.pose_refiner  # it was trained on the decoder this stage may fine-tune
    sample = generator.sample("Walking", seed=1, frames=12)
    assert sample.latents.shape == (12, 5) and np.isfinite(sample.joints).all()


def test_recon_weight_trains_an_encoder_and_lowers_its_reconstruction_error(synthetic_root, synthetic_data,
                                                                           tmp_path):
    def run(out, *extra):
        stage1_pose.main(["--data-root", str(synthetic_root), "--out", str(out), "--steps", "60", "--batch", "32",
                          "--log-every", "20", "--checkpoint-every", "60", "--sample-every", "60",
                          "--lr-decay-every", "1000", *extra, *STAGE1_SIZE])
        return load_state(out)

    plain = run(tmp_path / "plain", "--recon-weight", "0")
    assert "encoder" not in plain
    state = run(tmp_path / "recon", "--recon-weight", "10", "--refiner-steps", "0")
    cfg = ModelConfig.from_dict(state["model"])
    encoder = PoseEncoder(cfg).eval()
    encoder.load_state_dict(state["encoder"])
    logged = [json.loads(ln) for ln in (tmp_path / "recon" / "metrics.jsonl").read_text().splitlines()]
    assert logged[-1]["recon"] < 0.5 * logged[0]["recon"]  # the reconstruction is learnt, not just logged
    # ... for the decoder as stage 2 and inference run it, on BatchNorm's running statistics
    decoder = PoseDecoder(cfg).eval()
    decoder.load_state_dict(state["decoder"])
    real, labels = ClipSampler(synthetic_data, "train", seed=1).frames(256)
    real_cond = torch.eye(10)[labels]
    with torch.no_grad():
        roundtrip = decoder(encoder(real, real_cond), real_cond)
    assert torch.nn.functional.mse_loss(roundtrip, real) < 0.5 * logged[0]["recon"]
    torch.manual_seed(0)
    poses, cond = torch.randn(64, cfg.pose_dim), torch.eye(10)[torch.randint(10, (64,))]
    with torch.no_grad():
        latents = encoder(poses, cond)
    assert latents.shape == (64, cfg.latent_dim) and latents.abs().max() < 1


def test_stage1_trains_a_refiner_after_the_decoder_that_takes_round_trips_closer_to_the_real_clips(
        synthetic_root, synthetic_data, tmp_path):
    stage1_pose.main(["--data-root", str(synthetic_root), "--out", str(tmp_path), "--steps", "60", "--batch", "32",
                      "--log-every", "20", "--checkpoint-every", "60", "--sample-every", "60", "--lr-decay-every",
                      "1000", "--recon-weight", "10", "--refiner-steps", "150", "--refiner-channels", "32",
                      *STAGE1_SIZE])
    state = load_state(tmp_path)
    cfg = ModelConfig.from_dict(state["model"])
    assert cfg.pose_refiner and cfg.refiner_channels == 32 and state["step"] == 60
    decoder, encoder, refiner = PoseDecoder(cfg).eval(), PoseEncoder(cfg).eval(), PoseRefiner(cfg).eval()
    for module, key in ((decoder, "decoder"), (encoder, "encoder"), (refiner, "refiner")):
        module.load_state_dict(state[key])
    real, labels = ClipSampler(synthetic_data, "train", seed=7).clips(64)
    cw = torch.eye(10)[labels][:, None].expand(-1, real.shape[1], -1)
    with torch.no_grad():
        round_trip = decoder(encoder(real, cw), cw)
        refined = refiner(round_trip, cw)
    before, after = stage1_pose.refiner_errors(round_trip, real), stage1_pose.refiner_errors(refined, real)
    weights = torch.tensor(stage1_pose.REFINER_WEIGHTS)
    assert (weights * after).sum() < 0.8 * (weights * before).sum()
    assert after[2] < before[2]  # less jitter


def test_a_refiner_needs_the_encoder_and_the_fast_preset_trains_one_where_it_has_it(capsys):
    assert stage1_pose.parse_args(["--out", "s1"]).refiner_steps == stage1_pose.PRESETS["fast"]["refiner_steps"] > 0
    assert stage1_pose.parse_args(["--out", "s1", "--recon-weight", "0"]).refiner_steps == 0
    assert stage1_pose.parse_args(["--out", "s1", "--preset", "paper"]).refiner_steps == 0
    with pytest.raises(SystemExit):
        stage1_pose.parse_args(["--out", "s1", "--recon-weight", "0", "--refiner-steps", "5"])
    assert "--refiner-steps trains on the round trips of real clips through the encoder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        stage1_pose.parse_args(["--out", "s1", "--refiner-channels", "0"])
    assert "--refiner-channels at least 1" in capsys.readouterr().err


def test_reconstruction_error_decodes_on_the_running_statistics_and_leaves_them_alone():
    cfg = ModelConfig(latent_dim=4, decoder_hidden=16, critic_hidden=16)
    decoder, encoder = PoseDecoder(cfg).train(), PoseEncoder(cfg)
    torch.manual_seed(0)
    decoder(torch.rand(64, 4) * 2 - 1, torch.eye(10)[torch.randint(10, (64,))])  # running statistics of the prior
    running = {k: v.clone() for k, v in decoder.state_dict().items() if "running" in k}
    real, cond = torch.randn(8, cfg.pose_dim), torch.eye(10)[torch.randint(10, (8,))]
    error = stage1_pose.reconstruction_error(decoder, encoder, real, cond)
    assert decoder.training and all(torch.equal(decoder.state_dict()[k], v) for k, v in running.items())
    decoder.eval()
    with torch.no_grad():
        expected = torch.nn.functional.mse_loss(decoder(encoder(real, cond), cond), real)
    decoder.train()
    assert torch.allclose(error, expected)
    with torch.no_grad():  # a train-mode decode of the same batch normalises by its own statistics instead
        assert not torch.allclose(torch.nn.functional.mse_loss(decoder(encoder(real, cond), cond), real), expected)
    error.backward()
    assert decoder.net[0].weight.grad.abs().sum() > 0 and encoder.net[0].weight.grad.abs().sum() > 0


def test_stage2_exports_a_bundle_that_generates(synthetic_root, stage1_run, tmp_path):
    out = tmp_path / "stage2"
    stage2_sequence.main(["--data-root", str(synthetic_root), "--stage1", str(stage1_run), "--out", str(out),
                          "--export", str(tmp_path / "export" / "model.json"), *SMALL, *STAGE2_SIZE])
    bundle = load_bundle(tmp_path / "export" / "model.json")
    assert bundle.meta["training"]["stage2"]["steps"] == 4
    assert bundle.meta["training"]["stage1"]["steps"] == 4
    z0, noise = bundle.transition.sample_inputs(3, 50)
    with torch.no_grad():
        frames, latents, _ = bundle.transition(z0, noise, torch.eye(10)[:3])
    assert frames.shape == (3, 50, 30) and latents.shape == (3, 50, bundle.config.latent_dim)
    assert torch.isfinite(frames).all()


@pytest.mark.parametrize("model, options", [("2d", []),
                                            ("3d", ["--steps", "8000", "--class-dropout", "0", "--guidance", "0"])])
def test_the_default_presets_are_the_shipped_recipe(model, options):
    """Both shipped bundles come from the default presets of stage 1 (refiner included) and the diffusion
    stage, the 3D one with 8000 iterations and without guidance (the README's commands)."""
    shipped = load_bundle(DEFAULT_BUNDLES[model])
    fast1 = stage1_pose.parse_args(["--out", "s1", "--dims", model[0]])
    assert (fast1.decoder_layers, fast1.latent_dim) == (shipped.config.decoder_layers, shipped.config.latent_dim)
    for key in ("steps", "batch", "recon_weight", "refiner_steps"):
        assert getattr(fast1, key) == shipped.meta["training"]["stage1"][key], key
    assert shipped.config.pose_refiner and shipped.config.refiner_channels == fast1.refiner_channels
    recipe = shipped.meta["training"]["stage2"]
    assert recipe["transition"] == shipped.config.transition == "diffusion"
    fast2 = stage2_diffusion.parse_args(["--stage1", "s1", "--out", "s2", *options])
    for key in ("steps", "batch", "lr", "lr_schedule", "ema", "motion_weight", "class_dropout", "guidance"):
        assert getattr(fast2, key) == recipe[key], key
    assert shipped.config.diffusion_guidance == fast2.guidance
    assert fast2.class_guidance == recipe.get("class_guidance", {})  # bundles before round 31: none
    assert shipped.config.diffusion_class_guidance == (
        tuple(fast2.class_guidance.get(a, fast2.guidance) for a in shipped.actions) if fast2.class_guidance else ())
    if common.native_bfloat16(torch.device("cpu")):  # elsewhere "auto" trains in float32
        for args, record in ((fast1, shipped.meta["training"]["stage1"]), (fast2, recipe)):
            precision = common.precision_name(common.uses_bfloat16(args.precision, torch.device("cpu")))
            assert precision == record.get("precision", "float32")  # bundles before round 30/31: float32
    assert (fast2.channels, fast2.blocks, fast2.levels, fast2.sample_steps) == (
        shipped.config.diffusion_channels, shipped.config.diffusion_blocks, shipped.config.diffusion_levels,
        shipped.config.diffusion_sample_steps)


def test_the_paper_preset_is_the_seeds_and_an_explicit_value_beats_a_preset(synthetic_root, tmp_path):
    paper1 = stage1_pose.parse_args(["--out", "s1", "--preset", "paper"])
    assert (paper1.decoder_layers, paper1.latent_dim, paper1.recon_weight) == (1, 12, 0.0)
    assert stage1_pose.parse_args(["--out", "s1", "--latent-dim", "7"]).latent_dim == 7
    stage1_pose.main(["--data-root", str(synthetic_root), "--out", str(tmp_path / "paper"), "--preset", "paper",
                      *SMALL, *STAGE1_SIZE])
    state = load_state(tmp_path / "paper")
    assert (state["model"]["decoder_layers"], state["model"]["latent_dim"]) == (1, 12) and "encoder" not in state


def test_paper_preset_leaves_the_decoder_untouched_and_the_pose_critic_off(synthetic_root, stage1_run, tmp_path):
    before = load_state(stage1_run)["decoder"]
    out = tmp_path / "stage2"
    stage2_sequence.main(["--data-root", str(synthetic_root), "--stage1", str(stage1_run), "--out", str(out),
                          "--preset", "paper", *SMALL, *STAGE2_SIZE])
    state = load_state(out)
    for name, tensor in before.items():  # weights and BatchNorm running statistics alike
        assert torch.equal(state["transition"][f"decoder.{name}"], tensor), name
    assert "pose_critic" not in state


def test_decoder_lr_fine_tunes_the_decoder_weights_but_not_its_batchnorm_statistics(synthetic_root, stage1_run,
                                                                                    tmp_path):
    before = load_state(stage1_run)["decoder"]
    out = tmp_path / "stage2"
    stage2_sequence.main(["--data-root", str(synthetic_root), "--stage1", str(stage1_run), "--out", str(out),
                          *SMALL, *STAGE2_SIZE, "--decoder-lr", "1e-3", "--ema", "0"])
    after = load_state(out)["transition"]
    changed = {name for name, tensor in before.items() if not torch.equal(after[f"decoder.{name}"], tensor)}
    assert {"net.0.weight", "net.3.weight"} <= changed
    assert not any("running" in name for name in changed)
    bundle = load_bundle(out / "actiongen.json")
    assert torch.equal(bundle.decoder.state_dict()["net.3.weight"], after["decoder.net.3.weight"])
    assert bundle.meta["training"]["stage2"]["decoder_lr"] == 1e-3


def test_pose_critic_starts_from_the_stage1_critic_trains_on_and_resumes(synthetic_root, stage1_run, tmp_path):
    common = ["--data-root", str(synthetic_root), "--stage1", str(stage1_run), "--batch", "8", "--log-every", "1",
              "--checkpoint-every", "2", "--sample-every", "100", *STAGE2_SIZE, "--pose-critic-weight", "1",
              "--decoder-lr", "1e-3", "--spectrum-weight", "1"]
    stage2_sequence.main([*common, "--out", str(tmp_path / "straight"), "--steps", "4"])
    stage2_sequence.main([*common, "--out", str(tmp_path / "split"), "--steps", "2"])
    stage2_sequence.main([*common, "--out", str(tmp_path / "split"), "--steps", "4", "--resume"])
    straight, split = load_state(tmp_path / "straight"), load_state(tmp_path / "split")
    _states_equal(straight, split)
    critic = load_state(stage1_run)["critic"]
    assert critic.keys() == straight["pose_critic"].keys()
    assert not torch.equal(critic["net.0.weight"], straight["pose_critic"]["net.0.weight"])
    log = [json.loads(ln) for ln in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(row[key]) for row in log for key in ("g_pose", "pose_wasserstein", "g_spectrum"))
    meta = load_bundle(tmp_path / "straight" / "actiongen.json").meta["training"]["stage2"]
    assert meta["pose_critic_weight"] == 1 and meta["spectrum_weight"] == 1


def _states_equal(a: dict, b: dict) -> None:
    for key in ("decoder", "critic", "encoder", "refiner", "transition", "classifier", "discriminator", "pose_critic"):
        if key in a:
            for name in a[key]:
                assert torch.equal(a[key][name], b[key][name]), f"{key}.{name}"
    if "replay" in a:
        assert a["replay"]["size"] == b["replay"]["size"] == 12
        assert torch.equal(a["replay"]["clips"], b["replay"]["clips"])


@pytest.mark.parametrize("stage", [1, 2])
def test_resume_continues_at_the_saved_step_with_equal_state(synthetic_root, stage1_run, tmp_path, stage):
    module = stage1_pose if stage == 1 else stage2_sequence
    # Stage 1 with its refiner, which the split run trains after step 2 as well and again after step 4.
    extra = ([*STAGE1_SIZE, *TINY_REFINER] if stage == 1
             else ["--stage1", str(stage1_run), *STAGE2_SIZE, "--replay", "12"])
    common = ["--data-root", str(synthetic_root), "--batch", "8", "--log-every", "1", "--checkpoint-every", "2",
              "--sample-every", "100", *extra]
    module.main([*common, "--out", str(tmp_path / "straight"), "--steps", "4"])
    module.main([*common, "--out", str(tmp_path / "split"), "--steps", "2"])
    assert load_state(tmp_path / "split")["step"] == 2
    module.main([*common, "--out", str(tmp_path / "split"), "--steps", "4", "--resume"])
    straight, split = load_state(tmp_path / "straight"), load_state(tmp_path / "split")
    assert split["step"] == 4
    _states_equal(straight, split)
    lines = (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(ln)["step"] for ln in lines] == [1, 2, 3, 4]


def test_same_seed_gives_the_same_first_steps(synthetic_root, tmp_path):
    for name in ("a", "b"):
        stage1_pose.main(["--data-root", str(synthetic_root), "--out", str(tmp_path / name), *SMALL, *STAGE1_SIZE,
                          *TINY_REFINER])
    _states_equal(load_state(tmp_path / "a"), load_state(tmp_path / "b"))
    logs = [[{k: v for k, v in json.loads(ln).items() if k != "time"}
             for ln in (tmp_path / n / "metrics.jsonl").read_text().splitlines()] for n in ("a", "b")]
    assert logs[0] == logs[1]


def test_resume_without_state_is_a_clear_error(synthetic_root, tmp_path):
    with pytest.raises(SystemExit, match="state.pt does not exist"):
        stage1_pose.main(["--data-root", str(synthetic_root), "--out", str(tmp_path), "--resume", *SMALL, *STAGE1_SIZE])


def test_non_finite_loss_stops_with_a_clear_error():
    check_finite(3, {"loss": 1.0})
    with pytest.raises(FloatingPointError, match="step 7.*loss_d"):
        check_finite(7, {"loss_d": math.nan, "loss_g": 0.5})


def test_gradient_penalty_matches_a_hand_computation():
    torch.manual_seed(0)
    critic = PoseCritic(ModelConfig(pose_dim=2, num_classes=1, critic_hidden=3))
    real, fake, cond = torch.tensor([[1.0, 2.0]]), torch.tensor([[-1.0, 0.5]]), torch.ones(1, 1)
    eps = torch.tensor([[0.25]])
    # By hand: x_hat = real + eps (fake - real); the critic is w2 . relu(W1 [x_hat, c] + b1) + b2, so its
    # gradient in x is W1[:, :2]^T (w2 * 1[pre-activation > 0]).
    x_hat = real + eps * (fake - real)
    first, last = critic.net[0], critic.net[2]
    pre = first.weight @ torch.cat([x_hat, cond], 1)[0] + first.bias
    grad = first.weight[:, :2].T @ (last.weight[0] * (pre > 0).float())
    expected = (grad.norm() - 1) ** 2
    got = gradient_penalty(critic, real, fake, cond, eps=eps)
    assert torch.allclose(got, expected.detach(), atol=1e-6)
    assert torch.allclose(x_hat, torch.tensor([[0.5, 1.625]]))


@pytest.mark.parametrize("feedback", [False, True])
@pytest.mark.parametrize("frames", [2, 50, 500])
@pytest.mark.parametrize("boundary", ["clamp", "reflect", "none"])
def test_generator_shapes_for_any_length(frames, boundary, feedback):
    cfg = ModelConfig(latent_boundary=boundary, latent_feedback=feedback)
    gen = LatentTransitionGenerator(cfg, PoseDecoder(cfg)).eval()
    z0, noise = gen.sample_inputs(2, frames)
    with torch.no_grad():
        out, latents, shifts = gen(z0, noise, torch.eye(10)[:2])
    assert out.shape == (2, frames, 30) and latents.shape == (2, frames, 12) and shifts.shape == (2, frames - 1, 12)
    assert torch.equal(latents[:, 0], z0)
    assert shifts.abs().max() <= 1
    if boundary == "none":
        assert torch.allclose(latents[:, 1:] - latents[:, :-1], shifts, atol=1e-5)
    else:
        assert latents.abs().max() <= 1


@pytest.mark.parametrize("boundary", ["clamp", "reflect", "none"])
def test_latent_feedback_makes_the_shifts_depend_on_where_the_walk_is(boundary):
    torch.manual_seed(0)
    shifts_from = {}
    for feedback in (False, True):
        cfg = ModelConfig(latent_boundary=boundary, latent_feedback=feedback)
        gen = LatentTransitionGenerator(cfg, PoseDecoder(cfg)).eval()
        z0, noise = gen.sample_inputs(2, 20)
        with torch.no_grad():
            gen.to_shift.weight.mul_(20)  # shifts large enough to hit the faces of the box
            _, latents, shifts = gen(torch.stack([z0[0], -z0[0]]), noise[:1].expand(2, -1, -1), torch.eye(10)[[0, 0]])
        shifts_from[feedback] = shifts
        expected = latents[:, :-1] + shifts
        if boundary == "clamp":
            expected = expected.clamp(-1, 1)
        elif boundary == "reflect":
            expected = fold_into_box(expected)
        if feedback or boundary != "reflect":  # without feedback a reflected walk folds the unbounded sum
            assert torch.allclose(latents[:, 1:], expected, atol=1e-5)
    # The same noise and class from two starting points: the seed's LSTM emits the same shifts, feedback doesn't.
    assert torch.equal(shifts_from[False][0], shifts_from[False][1])
    assert not torch.allclose(shifts_from[True][0], shifts_from[True][1], atol=1e-3)


def test_per_step_class_weights_drive_each_frame():
    cfg = ModelConfig()
    gen = LatentTransitionGenerator(cfg, PoseDecoder(cfg)).eval()
    z0, noise = gen.sample_inputs(1, 10)
    walking, phoning = torch.eye(10)[9], torch.eye(10)[4]
    per_step = torch.stack([walking] * 5 + [phoning] * 5)[None]
    with torch.no_grad():
        mixed, latents, _ = gen(z0, noise, per_step)
        expected = gen.decoder(latents, per_step)
        walk_only, _, _ = gen(z0, noise, walking[None])
    assert torch.allclose(mixed, expected)
    assert torch.allclose(mixed[0, 0], walk_only[0, 0])  # frame 0 and its latent depend on the class at frame 0
    assert not torch.allclose(mixed[0, 5:], walk_only[0, 5:])
    with pytest.raises(ValueError, match="expected 10"):
        gen(z0, noise, per_step[:, :7])


def test_shipped_checkpoint_generates_plausible_people():
    try:
        bundle = load_bundle()
    except Exception as err:  # noqa: BLE001 - the reason is shown in the skip
        pytest.skip(f"shipped checkpoint not loadable: {err}")
    torch.manual_seed(0)
    cond = torch.eye(bundle.config.num_classes).repeat_interleave(10, 0)
    z0, noise = bundle.transition.sample_inputs(len(cond), 50)
    with torch.no_grad():
        frames, _, _ = bundle.transition(z0, noise, cond)
    joints = vectors_to_joints(frames, bundle.stats)
    assert np.isfinite(joints).all()
    for parent, child, _ in BONES:
        length = np.linalg.norm(joints[..., child, :] - joints[..., parent, :], axis=-1)
        assert 3 < length.mean() < 120, (parent, child, length.mean())
    head_y = joints[..., 9, 1].mean(axis=1)
    assert (head_y < 0).mean() > 0.9  # upright: the head above the hip in image coordinates


def test_generator_loss_terms_follow_the_seed_and_the_per_clip_option():
    frames = torch.zeros(2, 3, 1)
    frames[:, 1] = 1.0  # each clip: squared differences 1 + 1
    shifts = torch.full((2, 2, 1), 0.5)  # each clip: 2 * 0.25
    gan = torch.tensor(math.log(2))  # the BCE of a discriminator that can't tell
    seed_terms = stage2_sequence.generator_loss(gan, frames, shifts, torch.tensor(1.0), torch.tensor(2.0))
    assert seed_terms["smooth"].item() == pytest.approx(2.0)
    assert seed_terms["shift"].item() == pytest.approx(1.0)  # summed over the batch as well
    assert seed_terms["total"].item() == pytest.approx(math.log(2) + 1e-4 * 2 + 0.1 * 1.0 + 0.01 * 3)
    per_clip = stage2_sequence.generator_loss(gan, frames, shifts, torch.tensor(1.0), torch.tensor(2.0),
                                              shift_weight=0.2, shift_per_clip=True)
    assert per_clip["shift"].item() == pytest.approx(0.5)
    assert per_clip["total"].item() == pytest.approx(math.log(2) + 1e-4 * 2 + 0.2 * 0.5 + 0.01 * 3)


def test_clip_statistics_measure_speed_acceleration_and_spread():
    t = torch.arange(6, dtype=torch.float32)
    clip = torch.stack([2.0 * t, t ** 2], dim=-1)[None]  # dim 0: constant speed 2; dim 1: acceleration 2
    stats = stage2_sequence.clip_statistics(clip)[0]
    assert stats[0].tolist() == pytest.approx([2.0, 5.0])  # mean |velocity|: 2; (1+3+5+7+9)/5
    assert stats[1].tolist() == pytest.approx([0.0, 2.0])
    assert stats[2].tolist() == pytest.approx([clip[0, :, 0].std().item(), clip[0, :, 1].std().item()])


def test_motion_loss_is_zero_on_target_and_grows_with_the_speed_ratio():
    rng = np.random.default_rng(0)
    frames = torch.from_numpy(rng.normal(size=(80, 10, 3)).astype(np.float32))
    labels = torch.tensor([0] * 40 + [2] * 40)  # class 1 absent from the batch
    frames[labels == 2] *= 2
    targets = stage2_sequence.class_statistics(frames, labels, 3)
    assert targets[1].abs().sum() == 0 and targets[2, 0].mean() > 1.5 * targets[0, 0].mean()
    assert stage2_sequence.motion_loss(frames, labels, targets).item() == pytest.approx(0.0, abs=1e-10)
    slow = stage2_sequence.motion_loss(frames * 0.5, labels, targets).item()
    slower = stage2_sequence.motion_loss(frames * 0.25, labels, targets).item()
    assert 0 < slow < slower


def test_velocity_spectrum_puts_a_rhythm_in_its_band_and_ignores_steady_drift():
    fps, t = 50 / 3, torch.arange(50, dtype=torch.float32)
    step, shake = torch.sin(2 * math.pi * 2.0 * t / fps), torch.sin(2 * math.pi * 6.0 * t / fps)
    clip = torch.stack([step, shake, 0.3 * t], dim=-1)[None]  # a 2 Hz gait, a 6 Hz jitter, steady drift
    spectrum = stage2_sequence.velocity_spectrum(clip)[0]  # (bands, dims): 1.4 Hz bands up to 8.3 Hz
    assert spectrum.shape == (stage2_sequence.SPECTRUM_BANDS, 3)
    assert spectrum[:, 0].argmax().item() == 1 and spectrum[:, 1].argmax().item() == 4
    assert spectrum[:, 2].abs().max().item() < 1e-5
    slow_gait = torch.stack([0.5 * step, shake, 0.3 * t], dim=-1)[None]
    labels = torch.tensor([0])
    targets = stage2_sequence.class_statistics(clip, labels, 1, stage2_sequence.velocity_spectrum)
    assert stage2_sequence.motion_loss(clip, labels, targets, stage2_sequence.velocity_spectrum).item() == \
        pytest.approx(0.0, abs=1e-10)
    assert stage2_sequence.motion_loss(slow_gait, labels, targets, stage2_sequence.velocity_spectrum).item() > 0.01


def test_velocity_coupling_sees_joints_that_move_together():
    gen = torch.Generator().manual_seed(0)
    walk = torch.randn(64, 200, 2, generator=gen).cumsum(dim=1)  # two independent random walks
    together = torch.cat([walk, 2 * walk[..., :1] + 1], dim=-1)  # a third dimension moving with the first
    coupling = stage2_sequence.velocity_coupling(together)  # pairs (0, 1), (0, 2), (1, 2)
    assert coupling.shape == (64, 3)
    assert coupling[:, 0].mean().item() < 0.02 and coupling[:, 2].mean().item() < 0.02
    assert torch.allclose(coupling[:, 1], torch.ones(64), atol=1e-4)
    still = stage2_sequence.velocity_coupling(torch.zeros(2, 10, 3))
    assert torch.isfinite(still).all() and still.abs().max().item() == 0
    labels = torch.zeros(64, dtype=torch.long)
    independent = torch.cat([walk, torch.randn(64, 200, 1, generator=gen).cumsum(dim=1)], dim=-1)
    targets = stage2_sequence.class_statistics(independent, labels, 1, stage2_sequence.velocity_coupling)
    loss = lambda clips: stage2_sequence.motion_loss(clips, labels, targets, stage2_sequence.velocity_coupling)
    assert loss(independent).item() == pytest.approx(0.0, abs=1e-10) and loss(together).item() > 1.0


def test_edge_penalty_ignores_the_inside_of_the_box():
    inside = torch.full((2, 5, 3), 0.85)
    assert stage2_sequence.edge_penalty(inside).item() == 0.0
    assert stage2_sequence.edge_penalty(torch.full((2, 5, 3), 1.0)).item() == pytest.approx(0.01)


def test_prior_distance_is_small_on_the_prior_and_large_for_a_settled_or_edge_walk():
    torch.manual_seed(0)
    on_prior = torch.rand(32, 50, 12) * 2 - 1
    one_class = torch.zeros(32, dtype=torch.long)
    floor = stage2_sequence.prior_distance(on_prior, one_class).item()
    assert floor < 3e-3
    settled = on_prior * 0.3 + 0.2  # the walk stays in one region of the box
    at_faces = on_prior.sign()  # every coordinate on a face of the box
    assert stage2_sequence.prior_distance(settled, one_class).item() > 30 * floor
    # On the axes alone, a coordinate always at +-1 is 1/3 from uniform on [-1, 1] in mean square:
    # E[(sign(u) - u)^2] = 1/3.
    assert stage2_sequence.prior_distance(at_faces, one_class, projections=0).item() == pytest.approx(1 / 3, rel=0.05)
    settled.requires_grad_(True)
    stage2_sequence.prior_distance(settled, one_class).backward()
    assert settled.grad.abs().sum() > 0


def test_prior_distance_is_per_class():
    torch.manual_seed(0)
    halves = torch.rand(64, 50, 12) * 2 - 1
    halves[:, :, 0] = halves[:, :, 0].abs() * torch.tensor([1.0, -1.0]).repeat(32)[:, None]
    labels = torch.tensor([0, 1]).repeat(32)  # class 0 lives at z_0 > 0, class 1 at z_0 < 0: pooled uniform
    pooled = stage2_sequence.prior_distance(halves, torch.zeros_like(labels)).item()
    per_class = stage2_sequence.prior_distance(halves, labels).item()
    assert pooled < 3e-3 < 10 * pooled < per_class


def _standardised(joints: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (joints[..., 1:, :].flatten(-2) - mean) / std


def test_bone_variation_is_zero_for_a_rigid_skeleton_and_the_cv_of_a_stretching_bone():
    torch.manual_seed(0)
    rest = torch.randn(16, 3) * 100
    rest[0] = 0
    angles = torch.linspace(0, 1.5, 20)
    rotations = torch.stack([torch.tensor([[c, -s, 0], [s, c, 0], [0, 0, 1]]) for c, s in
                             zip(angles.cos(), angles.sin())])
    rigid = torch.einsum("tij,nj->tni", rotations, rest)[None]  # (1, T, 16, 3), moving but rigid
    mean, std = torch.randn(45), torch.rand(45) + 0.5
    frames = _standardised(rigid, mean, std)
    assert stage2_sequence.bone_variation(frames, mean, std, 3).item() == pytest.approx(0.0, abs=1e-5)
    stretched = rigid.clone()
    scale = torch.tensor([0.9, 1.1]).repeat(10)  # the head alone: lengths 0.9, 1.1, ...: CV 0.1 (population)
    head, thorax = BONES[8][1], BONES[8][0]
    stretched[0, :, head] = rigid[0, :, thorax] + (rigid[0, :, head] - rigid[0, :, thorax]) * scale[:, None]
    cv = stage2_sequence.bone_variation(_standardised(stretched, mean, std), mean, std, 3).item()
    sample_cv = 0.1 * math.sqrt(20 / 19)  # torch.std is the sample deviation
    assert cv == pytest.approx(sample_cv / len(BONES), rel=1e-3)


@pytest.mark.parametrize("option, message", [
    (["--replay", "5"], r"--replay .* must be 0 \(off\) or at least the batch size \(8\); got 5"),
    (["--bone-weight", "1"], "--bone-weight applies to 3D models only"),
    (["--retrace-weight", "1"], "--retrace-weight needs a stage-1 encoder.*--recon-weight"),  # stage 1 without one
    (["--noise-prior", "true"], "--noise-prior .* needs --latent-feedback true"),
    (["--retrace-warmup", "2"], "--retrace-warmup .* needs --retrace-weight"),
    (["--retrace-weight", "1", "--retrace-warmup", "4"], r"--retrace-warmup must be .* less than --steps \(4\); got 4"),
])
def test_stage2_option_misuse_is_a_clear_error(synthetic_root, stage1_run, tmp_path, option, message):
    with pytest.raises(SystemExit, match=message):
        stage2_sequence.main(["--data-root", str(synthetic_root), "--stage1", str(stage1_run), "--out",
                              str(tmp_path), *option, *SMALL, *STAGE2_SIZE])


def test_a_noise_prior_without_latent_feedback_is_a_clear_error():
    with pytest.raises(ValueError, match="needs latent_feedback"):
        LatentTransitionGenerator(ModelConfig(noise_prior=True), PoseDecoder(ModelConfig()))


@pytest.mark.parametrize("disc", ["lstm", "conv", "both"])
def test_stage2_trains_with_each_discriminator_and_the_realism_terms(synthetic_root, stage1_run, tmp_path, disc):
    out = tmp_path / "stage2"
    stage2_sequence.main(["--data-root", str(synthetic_root), "--stage1", str(stage1_run), "--out", str(out),
                          *SMALL, *STAGE2_SIZE, "--steps", "4", "--disc", disc, "--motion-weight", "1",
                          "--edge-weight", "1", "--ema", "0.9", "--candidate-every", "2", "--spectrum-weight", "1",
                          "--coupling-weight", "1", "--latent-feedback", str(disc == "both"),
                          "--prior-weight", "1", "--replay", "8"])
    assert sorted(p.name for p in (out / "candidates").glob("*.json")) == ["step_000002.json", "step_000004.json"]
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"g_motion", "g_spectrum", "g_coupling", "g_edge", "g_prior", "at_edge"} <= set(logged[-1])
    bundle = load_bundle(out / "actiongen.json")
    assert bundle.meta["training"]["stage2"]["disc"] == disc
    assert bundle.meta["training"]["stage2"]["prior_weight"] == 1.0
    assert bundle.meta["training"]["stage2"]["replay"] == 8
    assert bundle.config.latent_feedback == bundle.meta["training"]["stage2"]["latent_feedback"] == (disc == "both")
    clip = Generator.load(out / "actiongen.json").sample("Walking", seed=3)
    assert clip.joints.shape == (50, 16, 2) and np.isfinite(clip.joints).all()


@pytest.fixture(scope="module")
def stage1_encoder_run(synthetic_root, tmp_path_factory):
    """A stage-1 run with an encoder (--recon-weight), what the retrace term needs."""
    out = tmp_path_factory.mktemp("stage1-encoder")
    stage1_pose.main(["--data-root", str(synthetic_root), "--out", str(out), "--recon-weight", "10",
                      *SMALL, *STAGE1_SIZE, *TINY_REFINER])
    return out


@pytest.mark.parametrize("noise_prior", [False, True])
def test_retrace_term_trains_a_posterior_beside_the_generator_and_resumes(synthetic_root, stage1_encoder_run,
                                                                          tmp_path, noise_prior):
    args = ["--data-root", str(synthetic_root), "--stage1", str(stage1_encoder_run), "--out", str(tmp_path / "s2"),
            "--retrace-weight", "2", "--retrace-kl", "0.5", *SMALL, *STAGE2_SIZE]
    if noise_prior:
        args += ["--latent-feedback", "true", "--noise-prior", "true"]
    stage2_sequence.main([*args, "--steps", "2"])
    stage2_sequence.main([*args, "--resume"])
    state = load_state(tmp_path / "s2")
    assert state["step"] == 4 and any(k.startswith("gru.") for k in state["posterior"])
    assert any(k.startswith("step_prior.") for k in state["transition"]) == noise_prior
    logged = [json.loads(line) for line in (tmp_path / "s2" / "metrics.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in logged] == [1, 2, 3, 4]
    assert all(entry["g_retrace"] > 0 and entry["g_retrace_latent"] > 0 and entry["g_retrace_kl"] >= 0
               for entry in logged)
    bundle = load_bundle(tmp_path / "s2" / "actiongen.json")
    meta = bundle.meta["training"]["stage2"]
    assert (meta["retrace_weight"], meta["retrace_kl"], meta["noise_prior"]) == (2.0, 0.5, noise_prior)
    assert bundle.config.noise_prior == noise_prior
    clip = Generator.load(tmp_path / "s2" / "actiongen.json").sample("Walking", seed=3)
    assert clip.joints.shape == (50, 16, 2) and np.isfinite(clip.joints).all()


def test_retrace_warmup_trains_the_walk_alone_before_the_critics_start(synthetic_root, stage1_encoder_run, tmp_path,
                                                                        monkeypatch):
    saved = {}
    write = stage2_sequence.save_state
    monkeypatch.setattr(stage2_sequence, "save_state",
                        lambda run_dir, state: (saved.__setitem__(state["step"], copy.deepcopy(state)),
                                                write(run_dir, state)))
    out = tmp_path / "s2"
    stage2_sequence.main(["--data-root", str(synthetic_root), "--stage1", str(stage1_encoder_run), "--out", str(out),
                          "--retrace-weight", "2", "--retrace-warmup", "2", *SMALL, *STAGE2_SIZE])
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [set(entry) - {"step", "time"} for entry in logged[:2]] == [
        {"g_retrace", "g_retrace_latent", "g_retrace_kl", "g_total"}] * 2
    assert all({"loss_d", "g_gan", "g_retrace"} <= set(entry) for entry in logged[2:])
    assert (out / "losses.png").is_file()  # drawn from rows of both phases
    # At the end of the warm-up the generator has taken steps, the critics and their schedule none.
    warm = saved[2]
    assert warm["opt_g"]["state"] and not warm["opt_d"]["state"]
    assert warm["sched_g"]["last_epoch"] == 0 and saved[4]["sched_g"]["last_epoch"] == 2
    assert saved[4]["opt_d"]["state"]
    assert load_bundle(out / "actiongen.json").meta["training"]["stage2"]["retrace_warmup"] == 2


def test_noise_prior_starts_as_standard_normal_and_retrace_follows_the_sampling_path():
    torch.manual_seed(0)
    with_prior = ModelConfig(latent_feedback=True, noise_prior=True)
    gen = LatentTransitionGenerator(with_prior, PoseDecoder(with_prior)).eval()
    plain = LatentTransitionGenerator(ModelConfig(latent_feedback=True), gen.decoder).eval()
    plain.load_state_dict({k: v for k, v in gen.state_dict().items() if not k.startswith("step_prior.")})
    z0, draws = gen.sample_inputs(3, 20)
    cond = torch.eye(10)[[0, 4, 9]]
    with torch.no_grad():
        assert torch.equal(gen(z0, draws, cond)[1], plain(z0, draws, cond)[1])  # untrained: N(0, I) itself
        torch.nn.init.normal_(gen.step_prior[-1].weight, std=0.2)
        frames, latents, mean, log_var = gen.retrace(z0, draws, cond)
        assert mean.shape == log_var.shape == draws.shape and mean.abs().max() > 0.1 and log_var.abs().max() > 0.1
        # The same walk as sampling with the draws that the prior turns into the noise retrace was given.
        sampled_frames, sampled_latents, _ = gen(z0, (draws - mean) / (0.5 * log_var).exp(), cond)
        assert torch.allclose(sampled_latents, latents, atol=1e-5) and torch.allclose(sampled_frames, frames, atol=1e-4)
        assert not torch.allclose(gen(z0, draws, cond)[1], plain(z0, draws, cond)[1], atol=1e-3)
        plain_retrace = plain.retrace(z0, draws, cond)
        assert torch.equal(plain_retrace[1], plain(z0, draws, cond)[1])
        assert plain_retrace[2].eq(0).all() and plain_retrace[3].eq(0).all()


def _tiny_retrace_setup(**config) -> tuple:
    """A tiny transition generator, posterior and encoder, and 16 "real" clips the decoder can make: a smooth
    latent path per clip, decoded."""
    torch.manual_seed(0)
    cfg = ModelConfig(latent_dim=4, decoder_hidden=16, critic_hidden=16, lstm_hidden=16, noise_dim=8, **config)
    decoder, encoder = PoseDecoder(cfg).eval(), PoseEncoder(cfg).eval()
    transition, posterior = LatentTransitionGenerator(cfg, decoder), stage2_sequence.NoisePosterior(cfg)
    cond = torch.eye(10)[torch.randint(10, (16,))]
    t = torch.linspace(0, 3, 12)[None, :, None]
    paths = 0.8 * torch.sin(t * torch.rand(16, 1, 4) * 3 + torch.rand(16, 1, 4) * 6)
    with torch.no_grad():
        real = decoder(paths, cond[:, None].expand(-1, 12, -1))
    return transition, posterior, encoder, real, cond


def _train_retrace(transition, posterior, encoder, real, cond, steps: int, kl_weight: float) -> dict:
    """Adam on the retrace term alone (the transition's own weights and the posterior); the last step's terms."""
    optim = torch.optim.Adam([p for n, p in transition.named_parameters() if not n.startswith("decoder.")]
                             + list(posterior.parameters()), lr=1e-2)
    for _ in range(steps):
        terms = stage2_sequence.retrace_terms(transition, posterior, encoder, real, cond)
        optim.zero_grad()
        (terms["retrace"] + 10 * terms["retrace_latent"] + kl_weight * terms["retrace_kl"]).backward()
        optim.step()
    return terms


def test_retrace_terms_learn_to_retrace_a_real_latent_path():
    transition, posterior, encoder, real, cond = _tiny_retrace_setup()
    first = stage2_sequence.retrace_terms(transition, posterior, encoder, real, cond)
    assert set(first) == {"retrace", "retrace_latent", "retrace_kl"}
    first["retrace"].backward()
    assert posterior.gru.weight_ih_l0.grad.abs().sum() > 0 and transition.lstm.weight_ih_l0.grad.abs().sum() > 0
    assert all(p.grad is None for p in encoder.parameters())
    terms = _train_retrace(transition, posterior, encoder, real, cond, steps=200, kl_weight=1e-3)
    # the posterior finds noise that steers the walk along each clip's path
    assert terms["retrace"] < 0.5 * first["retrace"] and terms["retrace_latent"] < 0.5 * first["retrace_latent"]
    assert terms["retrace_kl"] > 0
    torch.nn.init.zeros_(posterior.to_noise.weight)
    torch.nn.init.zeros_(posterior.to_noise.bias)  # the prior itself: mean 0, log-variance 0
    assert stage2_sequence.retrace_terms(transition, posterior, encoder, real, cond)["retrace_kl"] == 0


def test_a_learnt_noise_prior_comes_closer_to_the_posterior_than_standard_normal_noise():
    transition, posterior, encoder, real, cond = _tiny_retrace_setup(latent_feedback=True, noise_prior=True)
    _train_retrace(transition, posterior, encoder, real, cond, steps=150, kl_weight=0.1)
    assert transition.step_prior[-1].weight.abs().max() > 0  # the KL trains the prior
    with torch.no_grad():
        mean, log_var = posterior(encoder(real, cond[:, None].expand(-1, 12, -1)), cond)
        to_standard = 0.5 * (mean.square() + log_var.exp() - 1.0 - log_var).sum(dim=-1).mean()
        torch.manual_seed(1)
        to_learnt = stage2_sequence.retrace_terms(transition, posterior, encoder, real, cond)["retrace_kl"]
    assert to_learnt < 0.5 * to_standard


def test_replay_buffer_shows_half_old_fakes_once_filled_and_keeps_the_newest_in_free_slots():
    buffer = stage2_sequence.ReplayBuffer(capacity=6)
    batch = lambda value: (torch.full((4, 3, 2), value), torch.full((4, 5), value))
    fake, cond = buffer.mix(*batch(1.0))
    assert torch.equal(fake, batch(1.0)[0]) and buffer.size == 4  # nothing stored yet: the batch as it is
    fake, cond = buffer.mix(*batch(2.0))
    assert fake[:2].eq(2.0).all() and fake[2:].eq(1.0).all() and cond[2:].eq(1.0).all()
    assert buffer.size == 6 and buffer.clips[4:].eq(2.0).all()  # two free slots took two new clips
    buffer.mix(*batch(3.0))  # full: new clips overwrite random slots
    assert buffer.size == 6 and buffer.clips.eq(3.0).all(dim=(1, 2)).sum().item() == 4  # two older clips stay
    restored = stage2_sequence.ReplayBuffer(capacity=6)
    restored.load_state_dict(copy.deepcopy(buffer.state_dict()))  # as saved and loaded
    torch.manual_seed(0)
    expected = buffer.mix(*batch(4.0))
    torch.manual_seed(0)
    assert all(torch.equal(a, b) for a, b in zip(restored.mix(*batch(4.0)), expected))


def test_reflecting_walk_bounces_off_the_faces_and_stays_uniform():
    u = torch.tensor([0.0, 0.5, 1.0, 1.25, 2.0, 3.0, 3.5, -1.25, -3.0, 5.0])
    expected = torch.tensor([0.0, 0.5, 1.0, 0.75, 0.0, -1.0, -0.5, -0.75, 1.0, 1.0])
    assert torch.allclose(fold_into_box(u), expected)
    walk = torch.randn(200_000).mul(3.0)  # a spread-out walk folds to a near-uniform box
    folded = fold_into_box(walk)
    assert folded.abs().max() <= 1 and (folded.abs() > 0.99).float().mean() < 0.02
    assert abs(folded.mean().item()) < 0.01 and folded.std().item() == pytest.approx(1 / 3 ** 0.5, rel=0.02)


def test_bundles_from_before_latent_boundary_still_load():
    assert ModelConfig.from_dict({"clamp_latent": True}).latent_boundary == "clamp"
    assert ModelConfig.from_dict({"clamp_latent": False}).latent_boundary == "none"


def test_select_checkpoint_exports_the_candidate_with_the_lowest_c2st(synthetic_root, stage1_run, tmp_path,
                                                                      monkeypatch):
    out = tmp_path / "stage2"
    stage2_sequence.main(["--data-root", str(synthetic_root), "--stage1", str(stage1_run), "--out", str(out),
                          *SMALL, *STAGE2_SIZE, "--steps", "6", "--candidate-every", "2"])
    fake_scores = {"step_000002": 0.9, "step_000004": 0.7, "step_000006": 0.8}
    skipped = []

    def fake_evaluate(path, *args, skip_frames=0, **kwargs):
        skipped.append(skip_frames)
        return {"c2st": fake_scores[Path(path).stem]}

    monkeypatch.setattr(select_checkpoint, "evaluate_bundle", fake_evaluate)
    scores = select_checkpoint.main(["--run", str(out), "--export", str(tmp_path / "chosen.json"),
                                     "--data-root", str(synthetic_root), "--skip-frames", "20"])
    assert scores == fake_scores and skipped == [20, 20, 20]
    chosen = load_bundle(tmp_path / "chosen.json")
    assert chosen.meta["training"]["selection"]["chosen"] == "step_000004"
    assert chosen.meta["training"]["selection"]["skip_frames"] == 20
    assert chosen.meta["training"]["stage2"]["steps"] == 4
    expected = load_bundle(out / "candidates" / "step_000004.json").transition.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in chosen.transition.state_dict().items())
