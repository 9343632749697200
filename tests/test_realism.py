"""actiongen.realism: motion statistics on constructed clips, latent occupancy, the two-sample test on sets
whose answer is known, and the command on a synthetic archive (plus real-data checks of the references)."""
import json
import math
import warnings

import numpy as np
import pytest

from actiongen import evaluate, realism
from actiongen.data import DataConfig, default_data_root, load_pose_data
from actiongen.generator import Generator
from actiongen.skeleton import BONES, HIP, JOINT_NAMES, NUM_JOINTS

ACTIONS = ("A", "B", "C")
FPS = 50.0 / 3.0


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """As the realism command runs: the classifier's small operations are fastest on one thread."""
    with realism.torch_threads(1):
        yield


def rest_pose() -> np.ndarray:
    """(16, 2) joints spread around the hip at the origin, every bone longer than zero."""
    angles = np.linspace(0.0, 2 * np.pi, NUM_JOINTS, endpoint=False)
    pose = np.stack([np.cos(angles), np.sin(angles)], axis=-1) * (10.0 + np.arange(NUM_JOINTS))[:, None]
    pose[HIP] = 0.0
    return pose


def still_clips(clips: int = 4, frames: int = 50) -> np.ndarray:
    return np.repeat(np.repeat(rest_pose()[None, None], frames, axis=1), clips, axis=0)


# ----------------------------------------------------------------------------- motion statistics

def test_speed_and_acceleration_of_constant_and_accelerating_motion():
    joints = still_clips()
    t = np.arange(joints.shape[1])[None, :, None]
    moving = joints.copy()
    moving[:, :, 1:, 0] += 2.5 * t  # every non-hip joint moves 2.5 units per frame along x
    assert realism.joint_speed(moving) == pytest.approx(2.5)
    assert realism.joint_speed(moving, realism.FEET) == pytest.approx(2.5)
    assert realism.joint_acceleration(moving) == pytest.approx(0.0, abs=1e-9)
    accelerating = joints.copy()
    accelerating[:, :, realism.WRISTS, 1] += 0.5 * 0.8 * t**2  # constant acceleration of 0.8 per frame²
    assert realism.joint_acceleration(accelerating, realism.WRISTS) == pytest.approx(0.8)
    assert realism.joint_acceleration(accelerating, realism.FEET) == pytest.approx(0.0, abs=1e-9)
    assert realism.joint_speed(still_clips()) == 0.0


def test_a_rotating_rigid_skeleton_has_no_bone_variation_and_known_speed():
    omega = 0.05  # radians per frame about the hip
    angles = omega * np.arange(50)
    rotation = np.stack([np.stack([np.cos(angles), -np.sin(angles)], -1),
                         np.stack([np.sin(angles), np.cos(angles)], -1)], -2)  # (T, 2, 2)
    joints = np.einsum("tij,nj->tni", rotation, rest_pose())[None]
    assert realism.bone_length_variation(joints) == pytest.approx(0.0, abs=1e-9)
    radii = np.linalg.norm(rest_pose()[list(realism.BODY)], axis=-1)
    chord = 2 * radii * np.sin(omega / 2)  # distance covered per frame on the circle
    assert realism.joint_speed(joints) == pytest.approx(chord.mean())


def test_bone_length_variation_is_the_coefficient_of_variation_averaged_over_bones():
    joints = still_clips(frames=40)
    parent, child, _ = BONES[2]  # RKnee -> RFoot: the foot stretches the shin by +-10 % on alternate frames
    direction = joints[0, 0, child] - joints[0, 0, parent]
    joints[:, 0::2, child] = joints[0, 0, parent] + 1.1 * direction
    joints[:, 1::2, child] = joints[0, 0, parent] + 0.9 * direction
    # The shin's CV is 0.1; the foot has no child bone, so every other bone is rigid.
    assert JOINT_NAMES[child] == "RFoot"
    assert realism.bone_length_variation(joints) == pytest.approx(0.1 / len(BONES))


def test_pose_spread_is_the_mean_coordinate_std():
    rng = np.random.default_rng(0)
    joints = still_clips(clips=200) + rng.normal(0.0, 3.0, (200, 50, NUM_JOINTS, 2))
    joints[..., HIP, :] = 0.0
    assert realism.pose_spread(joints) == pytest.approx(3.0, rel=0.01)
    assert realism.pose_spread(still_clips()) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("stride_hz", [0.6, 0.8, 1.0])
def test_step_frequency_of_feet_swinging_in_antiphase(stride_hz):
    """Each foot swings forward once per stride; the two feet take turns, so there are two steps per stride."""
    rng = np.random.default_rng(1)
    t = np.arange(50)[None, :] / FPS
    phase = rng.uniform(0, 2 * np.pi, size=(30, 1))
    swing = 20.0 * np.sin(2 * np.pi * stride_hz * t + phase)
    joints = still_clips(clips=30)
    joints[:, :, JOINT_NAMES.index("LFoot"), 0] += swing
    joints[:, :, JOINT_NAMES.index("RFoot"), 0] -= swing
    joints[:, :, JOINT_NAMES.index("LFoot"), 1] += 0.4 * t * FPS  # a slow drift, as when the path turns
    assert realism.step_frequency(joints, FPS) == pytest.approx(2 * stride_hz, abs=0.06)


def test_feet_speed_coupling_is_2_for_mirror_image_feet_and_below_1_for_feet_that_take_turns():
    t = np.arange(50)[None, :] / FPS
    phase = 2 * np.pi * 0.9 * t + np.linspace(0, np.pi, 8)[:, None]
    feet = JOINT_NAMES.index("LFoot"), JOINT_NAMES.index("RFoot")
    mirror = still_clips(clips=8)
    mirror[:, :, feet[0], 0] += 20.0 * np.sin(phase)
    mirror[:, :, feet[1], 0] -= 20.0 * np.sin(phase)
    assert realism.feet_speed_coupling(mirror) == pytest.approx(2.0, abs=1e-6)
    turns = still_clips(clips=8)  # each foot moves only in its half of the stride
    turns[:, :, feet[0], 0] += np.cumsum(np.clip(np.sin(phase), 0, None), axis=1)
    turns[:, :, feet[1], 0] += np.cumsum(np.clip(-np.sin(phase), 0, None), axis=1)
    assert realism.feet_speed_coupling(turns) < 0.5
    stats = realism.motion_statistics({"Walking": turns, "Sitting": turns})
    assert "feet_speed_coupling" in stats["Walking"] and "feet_speed_coupling" not in stats["Sitting"]


def test_motion_ratios_compare_each_statistic_of_each_class():
    rng = np.random.default_rng(2)
    real = {"Walking": still_clips() + rng.normal(0, 1.0, still_clips().shape), "Sitting": still_clips()}
    real["Sitting"][:, :, 1:, 0] += np.arange(50)[None, :, None]
    fast = {a: c * 1.0 for a, c in real.items()}
    fast["Sitting"][:, :, 1:, 0] += np.arange(50)[None, :, None]  # twice the real speed
    stats_real, stats_fast = realism.motion_statistics(real), realism.motion_statistics(fast)
    assert "step_frequency" in stats_real["Walking"] and "step_frequency" not in stats_real["Sitting"]
    ratios = realism.motion_ratios(stats_fast, stats_real)
    assert ratios["Sitting"]["all_speed"] == pytest.approx(2.0)
    assert ratios["Walking"] == {k: pytest.approx(1.0) for k in stats_real["Walking"]}


# ----------------------------------------------------------------------------- latent occupancy

def test_latent_occupancy_of_the_prior_and_of_a_path_at_the_edges():
    rng = np.random.default_rng(3)
    prior = realism.latent_occupancy(rng.uniform(-1, 1, (2000, 50, 12)))
    assert prior["clamp_share"] == pytest.approx(0.01, abs=0.001)
    np.testing.assert_allclose(prior["dim_mean"], 0.0, atol=0.01)
    np.testing.assert_allclose(prior["dim_std"], realism.PRIOR_STD, atol=0.01)
    edges = realism.latent_occupancy(np.clip(rng.normal(0.3, 1.0, (2000, 50, 12)), -1, 1))
    upper_tail = lambda z: 0.5 * math.erfc(z / math.sqrt(2))  # noqa: E731  P(N(0, 1) > z)
    # P(x > 0.99) + P(x < -0.99) for x ~ N(0.3, 1)
    assert edges["clamp_share"] == pytest.approx(upper_tail(0.69) + upper_tail(1.29), abs=0.005)
    assert np.mean(edges["dim_mean"]) > 0.2


# ----------------------------------------------------------------------------- the two-sample test

def smooth_clips(count: int, rng: np.random.Generator, class_index: int) -> np.ndarray:
    """(count, 50, 30) smooth random motion: per dimension a sinusoid with a random amplitude, frequency and
    phase around a class-dependent offset, plus a little noise."""
    t = np.arange(50)[None, :, None] / FPS
    amplitude = rng.uniform(0.2, 1.0, (count, 1, 30))
    frequency = rng.uniform(0.3, 1.5, (count, 1, 30))
    phase = rng.uniform(0, 2 * np.pi, (count, 1, 30))
    offset = 0.5 * class_index + rng.normal(0, 0.5, (count, 1, 30))
    return (offset + amplitude * np.sin(2 * np.pi * frequency * t + phase)
            + rng.normal(0, 0.02, (count, 50, 30))).astype(np.float32)


@pytest.fixture(scope="module")
def same_distribution() -> realism.TwoSampleSplit:
    """Four disjoint draws of the same motion, 200 fitting and 100 test clips per class and side."""
    rng = np.random.default_rng(4)
    draw = lambda n: {a: smooth_clips(n, rng, c) for c, a in enumerate(ACTIONS)}  # noqa: E731
    return realism.TwoSampleSplit(draw(200), draw(200), draw(100), draw(100))


def test_c2st_scores_about_half_for_two_halves_of_the_same_set(same_distribution):
    result = realism.c2st(same_distribution, ACTIONS, seed=0)
    assert 0.40 <= result["accuracy"] <= 0.60
    assert result["m_test"] == {a: 100 for a in ACTIONS} and result["m_fit"] == {a: 200 for a in ACTIONS}
    assert set(result["per_class"]) == set(ACTIONS)


@pytest.mark.parametrize("broken", ["frozen", "shuffled frames", "noise"])
def test_c2st_tells_a_broken_generator_apart(same_distribution, broken):
    rng = np.random.default_rng(5)

    def breaking(clips: np.ndarray) -> np.ndarray:
        if broken == "frozen":
            return realism.frozen(clips, rng)
        if broken == "shuffled frames":
            return clips[:, rng.permutation(clips.shape[1])]
        return (clips.mean(axis=(0, 1)) + rng.normal(size=clips.shape) * clips.std(axis=(0, 1))).astype(np.float32)

    split = same_distribution
    result = realism.c2st(realism.TwoSampleSplit({a: breaking(c) for a, c in split.candidate_fit.items()},
                                                 split.real_fit,
                                                 {a: breaking(c) for a, c in split.candidate_test.items()},
                                                 split.real_test), ACTIONS, seed=0)
    assert result["accuracy"] >= 0.95
    assert min(result["per_class"].values()) >= 0.9


def test_c2st_is_deterministic_for_a_seed(same_distribution):
    small = same_distribution.balanced(np.random.default_rng(0), max_test=30, max_fit=60)
    first = realism.c2st(small, ACTIONS, seed=7)
    assert realism.c2st(small, ACTIONS, seed=7) == first
    assert realism.c2st(small, ACTIONS, seed=8) != first


def test_averaging_fits_takes_the_mean_overall_and_per_class():
    fits = [{"accuracy": 0.6, "per_class": {"A": 0.5, "B": 0.7}, "m_test": {"A": 3, "B": 4},
             "m_fit": {"A": 6, "B": 8}, "epochs": 5},
            {"accuracy": 0.8, "per_class": {"A": 0.9, "B": 0.7}, "m_test": {"A": 3, "B": 4},
             "m_fit": {"A": 6, "B": 8}, "epochs": 9}]
    averaged = realism.average_fits(fits)
    assert averaged["accuracy"] == pytest.approx(0.7)
    assert averaged["per_class"] == pytest.approx({"A": 0.7, "B": 0.7})
    assert averaged["fit_accuracies"] == [0.6, 0.8] and averaged["epochs"] == [5, 9]
    assert averaged["m_test"] == {"A": 3, "B": 4} and averaged["m_fit"] == {"A": 6, "B": 8}


def test_c2st_fit_seeds_start_at_the_evaluation_seed_and_do_not_repeat_across_seeds():
    seeds = [realism.c2st_fit_seed(seed, fit) for seed in range(3) for fit in range(5)]
    assert [realism.c2st_fit_seed(seed, 0) for seed in range(3)] == [0, 1, 2]
    assert len(set(seeds)) == len(seeds)


def test_balanced_split_pairs_equal_numbers_and_drops_classes_missing_a_side():
    rng = np.random.default_rng(6)
    clips = lambda n: np.zeros((n, 50, 30), np.float32)  # noqa: E731
    split = realism.TwoSampleSplit({"A": clips(9), "B": clips(5)}, {"A": clips(4), "B": clips(5)},
                                   {"A": clips(7), "B": clips(3)}, {"A": clips(20)})
    balanced = split.balanced(rng, max_test=6)
    assert set(balanced.candidate_test) == {"A"}  # B has no real test clips
    assert len(balanced.candidate_fit["A"]) == len(balanced.real_fit["A"]) == 4
    assert len(balanced.candidate_test["A"]) == len(balanced.real_test["A"]) == 6


def test_realism_subjects_hold_out_the_last_training_subject():
    six = realism.RealismSubjects.of((1, 5, 6, 7, 8, 9))
    assert (six.fit, six.test, six.reference) == ((1, 5, 6, 7), 9, 8)
    two = realism.RealismSubjects.of((1, 5))
    assert (two.fit, two.test, two.reference) == ((1,), 5, None)
    with pytest.raises(ValueError, match="at least 2 training subjects"):
        realism.RealismSubjects.of((1,))


# ----------------------------------------------------------------------------- a checkpoint, end to end

def test_evaluate_bundle_and_command_on_a_synthetic_archive(synthetic_config, synthetic_data, random_bundle_path,
                                                            tmp_path, capsys):
    result = realism.evaluate_bundle(random_bundle_path, synthetic_data, per_class=8, seed=0, progress=False)
    assert set(result["c2st_per_class"]) == set(synthetic_data.config.actions)
    assert 0.0 <= result["c2st"] <= 1.0
    assert result["walking_feet_speed_ratio"] > 0 and 0.0 <= result["clamp_share"] <= 1.0
    walking_latents = result["details"]["occupancy"]["per_class_clamp_share"]["Walking"]
    assert result["walking_clamp_share"] == walking_latents
    assert list(result["details"]["c2st"]) == ["ActionGen"]  # no reference rows unless asked for
    assert "mmd_avg" not in result  # the MMD only when asked for
    out = tmp_path / "realism.json"
    report = realism.main(["--checkpoint", str(random_bundle_path), "--data-root", synthetic_config.root,
                           "--cache-dir", synthetic_config.cache_dir, "--train-subjects", "1", "5",
                           "--per-class", "8", "--seeds", "0", "--quiet", "--json", str(out)])
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].startswith(f"C2ST {result['c2st']:.3f} (Walking ")
    assert "| Generated / real (training clips) |" in printed and "Latent occupancy:" in printed
    saved = json.loads(out.read_text())
    assert saved["c2st"]["ActionGen"]["accuracy"]["values"] == [result["c2st"]]  # same seed, same numbers
    assert saved["subjects"] == {"fit": [1], "test": 5, "reference": None}
    assert report["per_class"] == 8 and report["seeds"] == [0] and report["c2st_fits"] == 5
    assert len(saved["per_seed"][0]["c2st"]["ActionGen"]["fit_accuracies"]) == 5
    assert "| test / fit clips per class and side, ActionGen (5 fits per seed) |" in printed


def test_c2st_rows_average_independent_fits_whose_first_is_the_single_fit_protocol(synthetic_data):
    real = realism.RealSets.load(synthetic_data)
    actions = synthetic_data.config.actions
    rng = np.random.default_rng(0)
    generated = {a: (c[:8] + rng.normal(0.0, 0.5, c[:8].shape)).astype(np.float32) for a, c in real.train.items()}

    def rows(fits: int) -> dict:
        return realism.c2st_rows(generated, real, actions, 8, seed=3, device="cpu", references=False,
                                 config=realism.C2STConfig(fits=fits), progress=False)["ActionGen"]

    single = realism.c2st(realism.generated_split(generated, real, 8).balanced(np.random.default_rng(3)), actions,
                          seed=3)
    one, three = rows(1), rows(3)
    assert one["accuracy"] == single["accuracy"] and one["per_class"] == single["per_class"]
    assert len(three["fit_accuracies"]) == 3 and three["fit_accuracies"][0] == single["accuracy"]
    assert three["accuracy"] == pytest.approx(np.mean(three["fit_accuracies"]))
    with pytest.raises(ValueError, match=r"fits must be in \[1, 100\]; got 0"):
        realism.C2STConfig(fits=0)


def test_mmd_against_training_is_small_for_training_clips_and_large_for_shifted_ones(synthetic_data):
    real = realism.RealSets.load(synthetic_data)
    same = realism.mmd_against_training(real.train, real, synthetic_data, per_class=20, seed=0)
    shifted = realism.mmd_against_training({a: c + 1.0 for a, c in real.train.items()}, real, synthetic_data,
                                           per_class=20, seed=0)
    assert 0.0 <= same["mmd_avg"] < 0.5 * shifted["mmd_avg"]
    assert 0.0 <= same["mmd_seq"] < 0.5 * shifted["mmd_seq"]


def test_evaluate_bundle_reports_the_mmd_when_asked(synthetic_data, random_bundle_path):
    result = realism.evaluate_bundle(random_bundle_path, synthetic_data, per_class=8, seed=0, progress=False,
                                     mmd_per_class=6)
    assert result["mmd_avg"] > 0 and result["mmd_seq"] > 0
    assert result["details"]["mmd"] == {"mmd_avg": result["mmd_avg"], "mmd_seq": result["mmd_seq"]}


def test_skip_frames_scores_the_ends_of_longer_samples(synthetic_data, random_bundle_path):
    generator, skip = Generator.load(random_bundle_path, device="cpu"), 7
    real = realism.RealSets.load(synthetic_data)
    measured = realism.measure_generator(generator, synthetic_data, real, per_class=8, seed=0, progress=False,
                                         skip_frames=skip)
    longer = evaluate.generate_per_class(generator, synthetic_data.config.actions, 8, 0, False, classify=False,
                                         frames=synthetic_data.config.clip_frames + skip)
    ends = {a: b.joints[:, skip:] for a, b in longer.items()}
    assert all(j.shape[1] == synthetic_data.config.clip_frames for j in ends.values())
    assert measured["motion"]["generated"] == realism.motion_statistics(ends)
    starts = realism.measure_generator(generator, synthetic_data, real, per_class=8, seed=0, progress=False)
    assert starts["motion"]["generated"] != measured["motion"]["generated"]
    with pytest.raises(ValueError, match=r"skip_frames must be in \[0, 950\]; got -1"):
        realism.measure_generator(generator, synthetic_data, real, per_class=8, seed=0, progress=False,
                                  skip_frames=-1)


def test_command_rejects_negative_skip_frames(random_bundle_path, capsys):
    with pytest.raises(SystemExit):
        realism.parse_args(["--checkpoint", str(random_bundle_path), "--skip-frames", "-3"])
    assert "--skip-frames must be at least 0; got -3" in capsys.readouterr().err


@pytest.mark.parametrize("command", [realism.parse_args, evaluate.parse_args])
def test_commands_reject_a_c2st_fit_count_out_of_range(command, random_bundle_path, capsys):
    with pytest.raises(SystemExit):
        command(["--checkpoint", str(random_bundle_path), "--c2st-fits", "0"])
    assert "--c2st-fits must be in [1, 100]; got 0" in capsys.readouterr().err


# ----------------------------------------------------------------------------- real data

@pytest.fixture(scope="module")
def real_data():
    root = default_data_root()
    if not (root / "cameras.h5").is_file():
        pytest.skip(f"real Human3.6M data not found at {root}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the archive's missing takes
        return load_pose_data(DataConfig(root=str(root)))


@pytest.mark.real_data
def test_real_halves_score_half_and_the_references_sit_where_expected(real_data):
    actions = real_data.config.actions
    real = realism.RealSets.load(real_data)
    rng = np.random.default_rng(0)

    def halves(clips: dict[str, np.ndarray]) -> tuple[dict, dict]:
        orders = {a: rng.permutation(len(c)) for a, c in clips.items()}
        return ({a: c[orders[a][::2]] for a, c in clips.items()}, {a: c[orders[a][1::2]] for a, c in clips.items()})

    (fit_a, fit_b), (test_a, test_b) = halves(real.fit), halves(real.test)
    same = realism.c2st(realism.TwoSampleSplit(fit_a, fit_b, test_a, test_b).balanced(rng, 100, 200), actions)
    assert 0.40 <= same["accuracy"] <= 0.60
    rows = realism.c2st_rows(None, real, actions, per_class=200, seed=0, device="cpu", references=True,
                             progress=False)
    assert 0.55 <= rows["real S8 as generated"]["accuracy"] <= 0.85
    assert rows["frozen real frames (S8)"]["accuracy"] >= 0.9


def test_command_reports_a_missing_checkpoint_clearly(synthetic_config, tmp_path):
    with pytest.raises(SystemExit, match="checkpoint config not found"):
        realism.main(["--checkpoint", str(tmp_path / "nope.json"), "--data-root", synthetic_config.root,
                      "--cache-dir", synthetic_config.cache_dir, "--train-subjects", "1", "5", "--quiet"])
