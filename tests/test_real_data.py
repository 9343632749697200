"""The data layer on the real Human3.6M copy in ../shared/data/h36m: counts and physical sanity.

The shared copy lacks five sequence files (S5 Discussion 2 and 3, S7 Discussion, S7 SittingDown 1,
S9 Discussion 1, see ../shared/data/README.md), so the counts below are those of the full archive
minus these.
"""
import warnings

import numpy as np
import pytest

from actiongen.data import (ClipDataset, ClipSampler, DataConfig, joints_to_vectors, load_cameras, load_pose_data,
                            project_points, read_sequence)
from actiongen.skeleton import ACTIONS, BONES, H36M_INDICES, HIP, JOINT_NAMES

pytestmark = pytest.mark.real_data

TRAIN_SUBJECTS = (1, 5, 6, 7, 8, 9)
MISSING_TRAIN_TAKES = {"Discussion": 4, "SittingDown": 1}  # S5 has no Discussion at all, S7 and S9 one
CLIP_SPAN = (50 - 1) * 3 + 1
START_STEP = 10


@pytest.fixture(scope="session")
def real(real_root, tmp_path_factory):
    """The full real data loaded once, into a fresh cache, with the warnings it raised."""
    cfg = DataConfig(root=str(real_root), cache_dir=str(tmp_path_factory.mktemp("real_cache")))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_pose_data(cfg)
    return data, [str(w.message) for w in caught]


@pytest.fixture(scope="session")
def real_data(real):
    return real[0]


def joint(name: str) -> int:
    return JOINT_NAMES.index(name)


def bone_lengths(joints: np.ndarray, parent: str, child: str) -> np.ndarray:
    return np.linalg.norm(joints[..., joint(child), :] - joints[..., joint(parent), :], axis=-1)


def test_missing_sequences_are_reported_once(real):
    _, messages = real
    assert len(messages) == 1
    listed = messages[0].split(": ", 1)[1].split("; ")
    assert listed == ["S5 Discussion (0 of 2 takes)", "S7 Discussion (1 of 2 takes)",
                      "S7 SittingDown (1 of 2 takes)", "S9 Discussion (1 of 2 takes)"]


def test_sequences_per_class(real_data):
    for split, subjects in (("train", TRAIN_SUBJECTS), ("test", (11,))):
        counts = {a: sum(s.action == a for s in real_data.split(split)) for a in ACTIONS}
        missing = MISSING_TRAIN_TAKES if split == "train" else {}
        assert counts == {a: 2 * len(subjects) - missing.get(a, 0) for a in ACTIONS}, split


def test_clips_per_class(real_data):
    for split, least in (("train", 1000), ("test", 200)):
        dataset = ClipDataset(real_data, split, start_step=START_STEP)
        counts = np.bincount(dataset.labels, minlength=len(ACTIONS))
        expected = np.zeros(len(ACTIONS), dtype=int)
        for seq in real_data.split(split):
            expected[ACTIONS.index(seq.action)] += (len(seq.joints) - CLIP_SPAN) // START_STEP + 1
        np.testing.assert_array_equal(counts, expected)
        # At least 200 clips (40 s of motion) of every class in the test split, 1000 in training.
        assert counts.min() >= least, dict(zip(ACTIONS, counts.tolist()))
        assert np.isfinite(dataset.clips).all()


def test_mean_hip_depth(real_data):
    # The README of the shared data: the hip lies about 5.7 m in front of camera 55011271.
    assert real_data.stats.mean_hip_depth == pytest.approx(5747, abs=50)


def test_projected_joints_stay_in_the_image(real_root, real_data):
    cameras = load_cameras(real_root)
    for subject in (1, 11):
        for take in ("Walking 1", "SittingDown"):
            world = read_sequence(real_root / f"S{subject}" / "MyPoses" / "3D_positions" / f"{take}.h5")
            pixels, depth = project_points(world[:, list(H36M_INDICES)], cameras[subject])
            # The 1000 x 1000 pixel frames of camera 55011271 show the whole person, 3.5 to 8 m away.
            assert pixels.min() > 0 and pixels.max() < 1000, (subject, take)
            assert depth.min() > 3000 and depth.max() < 9000, (subject, take)


def test_normalised_training_vectors_are_standardised(real_data):
    train = np.concatenate([joints_to_vectors(s.joints, real_data.stats) for s in real_data.split("train")])
    train = train.astype(np.float64)  # float32 sums over ~300k frames would drift by ~1e-3
    np.testing.assert_allclose(train.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(train.std(0), 1, atol=1e-4)
    clips, labels = ClipSampler(real_data, "train", seed=0).clips(16)
    assert clips.shape == (16, 50, 30) and labels.max() < len(ACTIONS)


def test_body_parts_are_in_their_places(real_data):
    joints = np.concatenate([s.joints for s in real_data.sequences])
    assert np.all(joints[:, HIP] == 0)
    mean_y = joints[..., 1].mean(axis=0)
    # Image y points down: head above thorax above spine above hip, knees and feet below it.
    assert mean_y[joint("Head")] < mean_y[joint("Thorax")] < mean_y[joint("Spine")] < 0
    assert 0 < mean_y[joint("RKnee")] < mean_y[joint("RFoot")]
    assert 0 < mean_y[joint("LKnee")] < mean_y[joint("LFoot")]


@pytest.mark.parametrize("left, right", [(("LHip", "LKnee"), ("RHip", "RKnee")), (("LKnee", "LFoot"), ("RKnee", "RFoot")),
                                         (("LShoulder", "LElbow"), ("RShoulder", "RElbow")),
                                         (("Hip", "LHip"), ("Hip", "RHip"))])
def test_left_and_right_limbs_match(real_data, left, right):
    joints = np.concatenate([s.joints for s in real_data.sequences])
    left_length, right_length = bone_lengths(joints, *left).mean(), bone_lengths(joints, *right).mean()
    assert abs(left_length - right_length) < 0.15 * max(left_length, right_length), (left_length, right_length)


def test_bone_lengths_are_stable_over_time(real_data):
    """2D bone lengths change as limbs turn towards the camera (measured: per-sequence coefficient of variation
    up to 0.86 for a thigh while sitting, median over sequences at most 0.29, for the forearm), but they change
    smoothly: 50 Hz mocap moves a bone by well under 1% of its length per frame (99th percentile at most 0.10,
    forearm). Frames out of order or a wrong joint mapping give several times that."""
    for parent, child, _ in BONES:
        variations, steps = [], []
        for seq in real_data.sequences:
            lengths = bone_lengths(seq.joints, JOINT_NAMES[parent], JOINT_NAMES[child])
            variations.append(lengths.std() / lengths.mean())
            steps.append(np.abs(np.diff(lengths)) / lengths.mean())
        name = f"{JOINT_NAMES[parent]}-{JOINT_NAMES[child]}"
        assert np.median(variations) < 0.4, name
        assert np.quantile(np.concatenate(steps), 0.99) < 0.15, name


def test_the_shipped_refiner_calms_walkings_wrists_to_about_real(real_data):
    """The shipped 2D model's refiner (round 33) takes out the jitter of decoding each frame on its own: its
    Walking wrists accelerate about as much as real ones (measured 1.10x at 1000 clips), the decoder's frames
    alone 1.4x; the feet keep their motion."""
    import torch

    from actiongen import realism
    from actiongen.checkpoint import DEFAULT_BUNDLES, load_bundle
    from actiongen.data import vectors_to_joints

    bundle = load_bundle(DEFAULT_BUNDLES["2d"])
    model = bundle.transition
    class_weights = torch.zeros(200, 50, len(bundle.actions))
    class_weights[..., bundle.actions.index("Walking")] = 1
    torch.manual_seed(0)
    with torch.no_grad():
        refined, latents, _ = model(*model.sample_inputs(200, 50), class_weights)
        decoded = model.decoder(latents, class_weights)
    real = vectors_to_joints(ClipDataset(real_data, "train").per_class(1000)["Walking"], real_data.stats)

    def ratio(vectors: torch.Tensor, joints: tuple[int, ...]) -> float:
        generated = vectors_to_joints(vectors.numpy(), bundle.stats)
        return realism.joint_acceleration(generated, joints) / realism.joint_acceleration(real, joints)

    decoded_wrists, refined_wrists = ratio(decoded, realism.WRISTS), ratio(refined, realism.WRISTS)  # 1.36, 1.07
    assert decoded_wrists > 1.25 and 0.9 < refined_wrists < 1.2 and decoded_wrists - refined_wrists > 0.15
    assert 0.8 < ratio(refined, realism.FEET) < 1.1  # 0.88
