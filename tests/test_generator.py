"""The generator API on a randomly initialised bundle: shapes and units, determinism (across calls,
threads and processes), mixing, transitions, latent interpolation and input checking."""
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from actiongen.checkpoint import DEFAULT_BUNDLE, CheckpointError, save_bundle
from actiongen.data import joints_to_vectors, vectors_to_joints
from actiongen.generator import CHUNK_ROWS, FPS, MAX_BATCH_FRAMES, Generator, int_from_text, resolve_device, slerp
from actiongen.models import ModelConfig
from actiongen.skeleton import ACTIONS, HIP, JOINT_NAMES
from synthetic_h36m import random_bundle, write_random_bundle

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bundle_path(random_bundle_path) -> Path:
    return random_bundle_path


@pytest.fixture(scope="module")
def gen(bundle_path) -> Generator:
    return Generator.load(bundle_path, device="cpu")


# ----------------------------------------------------------------------------- loading

def test_load_is_cached_per_resolved_path_and_device(gen, bundle_path):
    assert Generator.load(bundle_path.parent, device="cpu") is gen  # the directory holding the bundle
    assert Generator.load(str(bundle_path), device="cpu") is gen
    assert gen.device == torch.device("cpu")
    assert not gen.bundle.transition.training and not gen.bundle.classifier.training


def test_load_reloads_a_rewritten_bundle(synthetic_data, tmp_path):
    path = write_random_bundle(tmp_path / "m.json", synthetic_data.stats)
    first = Generator.load(path, device="cpu")
    write_random_bundle(path, synthetic_data.stats, ModelConfig(latent_boundary="none"))
    second = Generator.load(path, device="cpu")
    assert second is not first and second.bundle.config.latent_boundary == "none"


def test_missing_checkpoint_raises_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        Generator.load(tmp_path / "nothing.json")


def test_default_path_is_the_shipped_bundle():
    if DEFAULT_BUNDLE.is_file():
        assert Generator.load(device="cpu").bundle.meta  # a trained bundle records its provenance
    else:
        with pytest.raises(CheckpointError, match=DEFAULT_BUNDLE.name):
            Generator.load()


def test_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="valid: auto, cpu, cuda"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


# ----------------------------------------------------------------------------- one sample

def test_sample_shapes_and_units(gen):
    s = gen.sample("Walking", 3, frames=60)
    assert s.joints.shape == (60, len(JOINT_NAMES), 2) and s.joints.dtype == np.float32
    assert s.latents.shape == (60, gen.bundle.config.latent_dim)
    assert s.class_weights.shape == (60, len(ACTIONS)) and s.probabilities.shape == (len(ACTIONS),)
    assert s.fps == pytest.approx(FPS) and s.frames == 60 and s.seed == 3 and s.action_label == "Walking"
    assert np.all(s.joints[:, HIP] == 0)
    assert np.all(s.class_weights[:, ACTIONS.index("Walking")] == 1) and s.class_weights.sum() == 60
    assert s.probabilities.sum() == pytest.approx(1, abs=1e-5) and np.all(s.probabilities >= 0)
    assert np.abs(s.latents).max() <= 1  # the bundle keeps z in the decoder's [-1, 1] cube


def test_sample_is_the_model_fed_with_the_seeds_random_numbers(gen):
    """Units and seeding: z_0 and the noise come from torch.Generator(seed); joints are de-normalised."""
    rng = torch.Generator().manual_seed(11)
    z0, noise = gen.bundle.transition.sample_inputs(1, 40, rng)
    weights = torch.zeros(1, len(ACTIONS))
    weights[0, ACTIONS.index("Eating")] = 1
    with torch.inference_mode():
        frames, latents, _ = gen.bundle.transition(z0, noise, weights)
    s = gen.sample("eating", 11, frames=40)
    np.testing.assert_allclose(s.joints, vectors_to_joints(frames[0], gen.stats), atol=1e-3)
    np.testing.assert_allclose(s.latents, latents[0].numpy(), atol=1e-6)
    np.testing.assert_allclose(joints_to_vectors(s.joints, gen.stats), frames[0].numpy(), atol=1e-4)


def test_same_arguments_same_clip_and_global_rng_untouched(gen):
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()[1].copy()
    a = gen.sample("Phoning", 7, to_action="Walking", transition=(10, 30), seed_b=8, alpha=0.3)
    b = gen.sample("Phoning", 7, to_action="Walking", transition=(10, 30), seed_b=8, alpha=0.3)
    assert np.array_equal(a.joints, b.joints) and np.array_equal(a.probabilities, b.probabilities)
    assert torch.equal(torch_state, torch.get_rng_state())
    assert np.array_equal(numpy_state, np.random.get_state()[1])
    assert not np.array_equal(a.joints, gen.sample("Phoning", 9).joints)


def test_same_clip_in_a_fresh_process(gen, bundle_path, tmp_path):
    out = tmp_path / "fresh.npy"
    code = ("import sys, numpy as np; from actiongen.generator import Generator; "
            "g = Generator.load(sys.argv[1], device='cpu'); "
            "np.save(sys.argv[2], g.sample({'Walking': 1, 'Smoking': 3}, 123, frames=70).joints)")
    subprocess.run([sys.executable, "-c", code, str(bundle_path), str(out)], check=True, cwd=ROOT)
    assert np.array_equal(np.load(out), gen.sample({"Walking": 1, "Smoking": 3}, 123, frames=70).joints)


def test_eight_threads_give_the_serial_results(gen):
    calls = [(ACTIONS[i % len(ACTIONS)], 1000 + i) for i in range(20)]
    serial = [gen.sample(action, seed).joints for action, seed in calls]
    results: dict[int, list[np.ndarray]] = {}

    def worker(k: int) -> None:
        order = calls[k:] + calls[:k]  # every thread runs all calls, starting at a different one
        results[k] = [gen.sample(action, seed).joints for action, seed in order]

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8
    for k, got in results.items():
        expected = serial[k:] + serial[:k]
        assert all(np.array_equal(g, e) for g, e in zip(got, expected)), f"thread {k} differs"


def test_extreme_lengths(gen):
    assert gen.sample("Posing", 0, frames=2).joints.shape == (2, 16, 2)
    long = gen.sample("Posing", 0, frames=1000)
    assert long.joints.shape == (1000, 16, 2) and np.isfinite(long.joints).all()


# ----------------------------------------------------------------------------- mixing and transitions

def test_mix_with_all_weight_on_one_action_is_that_action(gen):
    plain = gen.sample("Greeting", 5)
    for mix in ({"Greeting": 1.0}, {"greeting": 4, "Walking": 0}):
        mixed = gen.sample(mix, 5)
        assert np.array_equal(mixed.joints, plain.joints) and mixed.action_label == "Greeting"


def test_mix_is_normalised_and_labelled(gen):
    s = gen.sample({"Walking": 1, "Phoning": 3}, 5)
    row = dict(zip(ACTIONS, s.class_weights[0]))
    assert row["Phoning"] == pytest.approx(0.75) and row["Walking"] == pytest.approx(0.25)
    assert s.action_label == "0.75 Phoning + 0.25 Walking"
    assert not np.array_equal(s.joints, gen.sample("Phoning", 5).joints)


def test_transition_switches_class_weights_at_the_requested_frames(gen):
    a, b = ACTIONS.index("Walking"), ACTIONS.index("Sitting")
    s = gen.sample("Walking", 2, frames=50, to_action="Sitting", transition=(20, 30))
    w = s.class_weights
    assert np.all(w[:21, a] == 1) and np.all(w[30:, b] == 1)
    assert np.all(np.diff(w[20:31, b]) > 0) and w[25, b] == pytest.approx(0.5)
    assert np.allclose(w.sum(axis=1), 1)
    assert s.action_label == "Walking -> Sitting (frames 20-30)"
    # The transition network is causal: before the switch the clip is the plain Walking clip.
    plain = gen.sample("Walking", 2, frames=50)
    np.testing.assert_allclose(s.joints[:21], plain.joints[:21], atol=1e-4)
    assert not np.allclose(s.joints[30:], plain.joints[30:], atol=1e-4)


def test_instant_transition_and_default_range(gen):
    step = gen.sample("Walking", 2, frames=20, to_action="Eating", transition=(8, 8)).class_weights
    eating = ACTIONS.index("Eating")
    assert np.all(step[:8, eating] == 0) and np.all(step[8:, eating] == 1)
    whole = gen.sample("Walking", 2, frames=21, to_action="Eating").class_weights
    assert whole[0, eating] == 0 and whole[10, eating] == pytest.approx(0.5) and whole[20, eating] == 1


# ----------------------------------------------------------------------------- latent interpolation

def test_alpha_zero_and_one_reproduce_the_endpoints(gen):
    a, b = gen.sample("Smoking", 21), gen.sample("Smoking", 22)
    assert np.array_equal(gen.sample("Smoking", 21, seed_b=22, alpha=0.0).joints, a.joints)
    assert np.array_equal(gen.sample("Smoking", 21, seed_b=22, alpha=1.0).joints, b.joints)
    middle = gen.sample("Smoking", 21, seed_b=22, alpha=0.5)
    assert not np.array_equal(middle.joints, a.joints) and not np.array_equal(middle.joints, b.joints)
    assert middle.seed_b == 22 and middle.alpha == 0.5


def test_slerp_keeps_the_noise_norm_and_handles_parallel_vectors():
    rng = torch.Generator().manual_seed(0)
    a, b = torch.randn(200, 64, generator=rng), torch.randn(200, 64, generator=rng)
    assert torch.equal(slerp(a, b, 0.0), a) and torch.equal(slerp(a, b, 1.0), b)
    mid = slerp(a, b, 0.5).norm(dim=-1)
    expected = (a.norm(dim=-1) + b.norm(dim=-1)) / 2
    assert torch.allclose(mid, expected, rtol=0.1)  # a linear blend would shrink it by about 1/sqrt(2)
    assert (((a + b) / 2).norm(dim=-1) / expected).mean() < 0.8
    parallel = slerp(a, 2 * a, 0.5)
    assert torch.allclose(parallel, 1.5 * a) and torch.isfinite(parallel).all()


def test_interpolation_strip(gen):
    strip = gen.interpolation_strip("Directions", 1, 2, steps=5, frames=30)
    assert [s.alpha for s in strip] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert np.array_equal(strip[0].joints, gen.sample("Directions", 1, frames=30).joints)
    assert np.array_equal(strip[-1].joints, gen.sample("Directions", 2, frames=30).joints)
    with pytest.raises(ValueError, match="steps"):
        gen.interpolation_strip("Directions", 1, 2, steps=1)


# ----------------------------------------------------------------------------- batches

def test_sample_many_rows_match_single_samples(gen):
    actions = [ACTIONS[i % len(ACTIONS)] for i in range(CHUNK_ROWS + 3)]  # crosses a chunk boundary
    actions[4] = {"Walking": 0.5, "Eating": 0.5}
    seeds = list(range(50, 50 + len(actions)))
    batch = gen.sample_many(actions, seeds, frames=30)
    assert batch.joints.shape == (len(seeds), 30, 16, 2) and batch.probabilities.shape == (len(seeds), len(ACTIONS))
    assert batch.labels.tolist()[:4] == [0, 1, 2, 3] and batch.labels[4] == ACTIONS.index("Eating")
    for i in (0, 4, CHUNK_ROWS + 2):
        single = gen.sample(actions[i], seeds[i], frames=30)
        np.testing.assert_allclose(batch.joints[i], single.joints, atol=1e-3)
        np.testing.assert_allclose(batch.probabilities[i], single.probabilities, atol=1e-5)
        assert batch[i].action_label == single.action_label and batch[i].seed == seeds[i]


def test_sample_many_workers_give_the_same_results(gen):
    seeds = list(range(2 * CHUNK_ROWS + 5))
    one = gen.sample_many("Walking", seeds, frames=10, classify=False)
    three = gen.sample_many("Walking", seeds, frames=10, classify=False, workers=3)
    assert np.array_equal(one.joints, three.joints) and np.array_equal(one.latents, three.latents)
    with pytest.raises(ValueError, match="workers must be a positive integer"):
        gen.sample_many("Walking", seeds, workers=0)


def test_sample_many_one_action_for_all_and_without_classifier(gen):
    batch = gen.sample_many("Walking", [1, 2, 3], classify=False)
    assert batch.probabilities is None and np.all(batch.labels == ACTIONS.index("Walking"))
    assert gen.sample("Walking", 1, classify=False).probabilities is None
    with pytest.raises(ValueError, match="2 actions for 3 seeds"):
        gen.sample_many(["Walking", "Eating"], [1, 2, 3])


def test_flatten_head_classifies_any_length(synthetic_data):
    gen = Generator(random_bundle(synthetic_data.stats, ModelConfig(head="flatten", clip_frames=20)))
    for frames in (7, 20, 45):
        p = gen.sample("Walking", 0, frames=frames).probabilities
        assert p.shape == (len(ACTIONS),) and p.sum() == pytest.approx(1, abs=1e-5)


def test_non_finite_weights_raise_instead_of_returning_nan(synthetic_data, tmp_path):
    bundle = random_bundle(synthetic_data.stats)
    with torch.no_grad():
        bundle.decoder.net[-1].bias[0] = float("nan")
    path = save_bundle(tmp_path / "nan.json", bundle)[0]
    with pytest.raises(CheckpointError, match="non-finite"):
        Generator.load(path, device="cpu").sample("Walking", 0)


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("kwargs, message", [
    (dict(action="Flying", seed=0), "valid actions: Directions, Discussion"),
    (dict(action=3, seed=0), "action must be an action name or a mapping"),
    (dict(action="Walking", seed=0, frames=1), r"frames must be in \[2, 1000\]"),
    (dict(action="Walking", seed=0, frames=1001), r"frames must be in \[2, 1000\]"),
    (dict(action="Walking", seed=0, frames=2.5), "frames must be an integer"),
    (dict(action="Walking", seed=-1), r"seed must be in \[0, 4294967295\]"),
    (dict(action="Walking", seed=2**32), r"seed must be in \[0, 4294967295\]"),
    (dict(action="Walking", seed="7"), "seed must be an integer"),
    (dict(action={"Walking": -0.5, "Eating": 1}, seed=0), "non-negative"),
    (dict(action={"Walking": 0, "Eating": 0}, seed=0), "all zero"),
    (dict(action={}, seed=0), "all zero"),
    (dict(action={"Walking": float("nan")}, seed=0), "finite"),
    (dict(action={"Walking": float("inf")}, seed=0), "must be a finite number; got inf"),
    (dict(action={"Walking": 1e308, "Eating": 1e308}, seed=0), r"mix weights are too large: their sum overflows"),
    (dict(action={"Walking": "0.5"}, seed=0), "mix weight of 'Walking' must be a finite number; got '0.5'"),
    (dict(action={"Walking": True}, seed=0), "mix weight of 'Walking' must be a finite number; got True"),
    (dict(action="Walking", seed=0, to_action={"Eating": 1e308, "Phoning": 1e308}), "sum overflows"),
    (dict(action="Walking", seed=0, seed_b=1, alpha="0.5"), r"alpha must be a number in \[0, 1\]; got '0.5'"),
    (dict(action="Walking", seed=0, seed_b=1, alpha=float("nan")), r"alpha must be a number in \[0, 1\]; got nan"),
    (dict(action={"Waking": 1}, seed=0), "valid actions"),
    (dict(action="Walking", seed=0, seed_b=1, alpha=1.5), r"alpha must be in \[0, 1\]"),
    (dict(action="Walking", seed=0, seed_b=1, alpha=-0.1), r"alpha must be in \[0, 1\]"),
    (dict(action="Walking", seed=0, alpha=0.5), "alpha needs seed_b"),
    (dict(action="Walking", seed=0, seed_b=2**32, alpha=0.5), r"seed_b must be in \[0, 4294967295\]"),
    (dict(action="Walking", seed=0, to_action="Eating", transition=(10, 50)), "0 <= start <= end <= 49"),
    (dict(action="Walking", seed=0, to_action="Eating", transition=(30, 10)), "0 <= start <= end <= 49"),
    (dict(action="Walking", seed=0, to_action="Eating", transition="10-20"), "transition must be"),
    (dict(action="Walking", seed=0, transition=(10, 20)), "needs to_action"),
    (dict(action="Walking", seed=0, to_action="Flying"), "valid actions"),
])
def test_bad_input_raises_a_clear_value_error(gen, kwargs, message):
    with pytest.raises(ValueError, match=message):
        gen.sample(**kwargs)



def test_a_huge_bad_argument_is_not_echoed_in_full(gen):
    for kwargs in (dict(action="Walking", seed="7" * 10**6), dict(action=["Walking"] * 10**5, seed=0),
                   dict(action={"Walking": "1" * 10**6}, seed=0), dict(action="W" * 10**6, seed=0),
                   dict(action={"W" * 10**6: 1.0}, seed=0), dict(action="Walking", seed=0, to_action="W" * 10**6)):
        with pytest.raises(ValueError) as err:
            gen.sample(**kwargs)
        assert len(str(err.value)) < 300 and "characters)" in str(err.value)


def test_mix_of_huge_but_finite_weights_keeps_their_ratio(gen):
    assert gen.class_weights_of({"Walking": 1e308, "Eating": 0.5e308})[ACTIONS.index("Walking")] == pytest.approx(2 / 3)


@pytest.mark.parametrize("actions, seeds, message", [
    ("Walking", 5, "seeds must be a sequence with one entry per clip, e.g. a list or range(5); got int 5"),
    ("Walking", "123", "seeds must be a sequence with one entry per clip"),
    ("Walking", np.arange(6).reshape(2, 3), "seeds must be a sequence with one entry per clip"),
    ("Walking", {1, 2}, "seeds must be a sequence with one entry per clip"),
    (5, [1, 2], "actions must be a sequence with one entry per clip"),
    ("Walking", [1, "2"], "seed must be an integer"),
    ("Walking", [], "at least one seed"),
])
def test_sample_many_names_the_expected_arguments(gen, actions, seeds, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        gen.sample_many(actions, seeds)


def test_sample_many_refuses_batches_that_would_not_fit_in_memory(gen):
    with pytest.raises(ValueError, match=f"at most {MAX_BATCH_FRAMES // 50} clips of 50 frames"):
        gen.sample_many("Walking", range(10**9))  # refused by its size, before a seed is looked at
    with pytest.raises(ValueError, match=f"at most {MAX_BATCH_FRAMES // 1000} clips of 1000 frames"):
        gen.sample_many("Walking", np.arange(MAX_BATCH_FRAMES // 1000 + 1), frames=1000)
    assert len(gen.sample_many("Walking", np.arange(3), frames=2, classify=False)) == 3


@pytest.mark.parametrize("text, expected", [("50", 50), (" +7 ", 7), ("4294967295", 4294967295), ("-0", 0)])
def test_int_from_text_reads_plain_whole_numbers(text, expected):
    assert int_from_text(text, "seed", 0, 2**32 - 1) == expected


@pytest.mark.parametrize("text, message", [
    ("5_0", "seed must be a whole number in [0, 4294967295]; got '5_0'"),
    ("٥", "got '٥'"),  # an Arabic-Indic five, which int() accepts
    ("5.0", "got '5.0'"), ("1e3", "got '1e3'"), ("", "got ''"), ("0x10", "got '0x10'"), (None, "got None"),
    ("4294967296", "seed must be in [0, 4294967295]; got 4294967296"),
    ("-1", "seed must be in [0, 4294967295]; got -1"),
    ("9" * 5000, "characters)"),
])
def test_int_from_text_refuses_anything_else(text, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        int_from_text(text, "seed", 0, 2**32 - 1)
