"""The Human3.6M 2D data layer on small synthetic archives written in the real file format."""
import multiprocessing
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import actiongen.data as data_module
from actiongen.data import (ClipDataset, ClipSampler, DataConfig, H36MDataError, NormStats, find_sequences,
                            joints_to_vectors, load_cameras, load_pose_data, project_points, vectors_to_joints)
from actiongen.skeleton import ACTIONS, H36M_INDICES, HIP, JOINT_NAMES, NUM_JOINTS, POSE_DIM
from synthetic_h36m import REST_POSE, write_archive, write_cameras, write_sequence

SMALL_ACTIONS = ("Sitting", "Walking")
CLIP_SPAN = (50 - 1) * 3 + 1  # raw 50 Hz frames covered by one clip of 50 frames taken every 3rd frame
HEAD = JOINT_NAMES.index("Head")


def small_archive(root: Path, **kwargs) -> Path:
    """Subject 1 (train) and 11 (test), two actions, two takes each: quick to write and to load."""
    return write_archive(root, subjects=(1, 11), actions=SMALL_ACTIONS, frames=200, **kwargs)


def small_config(root: Path, cache_dir: Path | None) -> DataConfig:
    return DataConfig(root=str(root), actions=SMALL_ACTIONS, train_subjects=(1,), test_subjects=(11,),
                      cache_dir=str(cache_dir) if cache_dir else None)


def read_world(path: Path) -> np.ndarray:
    """(N, 32, 3) world positions, read straight from the file as the archive documents it."""
    with h5py.File(path, "r") as f:
        return np.asarray(f["3D_positions"]).T.reshape(-1, 32, 3)


def sequence_path(root: Path, subject: int, take: str) -> Path:
    return Path(root) / f"S{subject}" / "MyPoses" / "3D_positions" / f"{take}.h5"


def find(data, subject: int, take: str):
    return next(s for s in data.sequences if s.subject == subject and s.take == take)


# ----------------------------------------------------------------------------- projection

def hand_projection(point: np.ndarray, R: np.ndarray, T: np.ndarray, f, c, k, p) -> tuple[float, float, float]:
    """The 3d-pose-baseline camera model for one point, written out scalar by scalar: (u, v, depth)."""
    X, Y, Z = R @ (point - T)
    x, y = X / Z, Y / Z
    r2 = x * x + y * y
    radial = 1 + k[0] * r2 + k[1] * r2**2 + k[2] * r2**3
    tan = p[0] * y + p[1] * x
    x_distorted = x * (radial + tan) + p[1] * r2
    y_distorted = y * (radial + tan) + p[0] * r2
    return f[0] * x_distorted + c[0], f[1] * y_distorted + c[1], Z


def test_load_cameras_transposes_the_stored_rotation(synthetic_root):
    camera = load_cameras(synthetic_root)[1]
    with h5py.File(synthetic_root / "cameras.h5", "r") as f:
        group = next(g for g in f["subject1"].values()
                     if "".join(chr(int(v)) for v in np.ravel(g["Name"])) == "55011271")
        np.testing.assert_array_equal(camera.R, np.asarray(group["R"]).T)
        np.testing.assert_array_equal(camera.k, np.ravel(group["k"]))
        np.testing.assert_array_equal(camera.p, np.ravel(group["p"]))
    assert camera.name == "55011271"
    assert set(load_cameras(synthetic_root)) == {1, 5, 11}


def test_projection_matches_a_hand_computed_point_with_distortion(synthetic_root):
    camera = load_cameras(synthetic_root)[1]
    # The walking person has moved ~3 m sideways by the last frame: far off-axis, where distortion is large.
    wrist = read_world(sequence_path(synthetic_root, 1, "Walking"))[-1, 27]
    u, v, depth = hand_projection(wrist, camera.R, camera.T, camera.f, camera.c, camera.k, camera.p)
    pixel, projected_depth = project_points(wrist, camera)
    np.testing.assert_allclose(pixel, [u, v], rtol=0, atol=1e-9)
    assert projected_depth == pytest.approx(depth)
    assert depth > 0, "the rotation must be applied transposed, as stored it puts the person behind the camera"
    undistorted, _, _ = hand_projection(wrist, camera.R, camera.T, camera.f, camera.c, np.zeros(3), np.zeros(2))
    assert abs(undistorted - u) > 20, "the test point should be where distortion matters"


def test_loaded_joints_are_hand_projected_hip_centred_and_depth_scaled(synthetic_root, synthetic_config,
                                                                       synthetic_data):
    camera = load_cameras(synthetic_root)[1]
    args = (camera.R, camera.T, camera.f, camera.c, camera.k, camera.p)
    # Mean hip depth over every frame of the training subjects; camera z is world y + 5 m for this camera.
    train_hip_depths = [read_world(path)[:, 0, 1] - camera.T[1]
                        for s in synthetic_config.train_subjects
                        for path in sorted((synthetic_root / f"S{s}" / "MyPoses" / "3D_positions").glob("*.h5"))]
    mean_hip_depth = np.concatenate(train_hip_depths).mean()
    assert synthetic_data.stats.mean_hip_depth == pytest.approx(mean_hip_depth, rel=1e-6)

    world = read_world(sequence_path(synthetic_root, 1, "Walking"))
    loaded = find(synthetic_data, 1, "Walking").joints
    for frame in (0, 120, len(world) - 1):
        hip_u, hip_v, hip_depth = hand_projection(world[frame, 0], *args)
        head_u, head_v, _ = hand_projection(world[frame, H36M_INDICES[HEAD]], *args)
        expected = np.array([head_u - hip_u, head_v - hip_v]) * hip_depth / mean_hip_depth
        np.testing.assert_allclose(loaded[frame, HEAD], expected, rtol=1e-4)


def test_every_frame_is_hip_centred(synthetic_data):
    for seq in synthetic_data.sequences:
        assert seq.joints.shape == (len(seq.joints), NUM_JOINTS, 2) and seq.joints.dtype == np.float32
        assert np.all(seq.joints[:, HIP] == 0)
        assert np.all(np.abs(seq.joints[:, 1:]).max(axis=(1, 2)) > 1), "non-hip joints must not collapse"
        # y points down: the head is above the hip in the image.
        assert np.all(seq.joints[:, HEAD, 1] < 0)


def flat_archive(root: Path, hip_distances: dict[tuple[int, str], float]) -> Path:
    """A distortion-free camera and a person in a plane facing it, every take at its own distance (mm),
    so that the projection of the hip-centred pose is exactly focal * offset / depth."""
    root.mkdir()
    write_cameras(root, (1, 11))
    with h5py.File(root / "cameras.h5", "r+") as f:
        for subject in ("subject1", "subject11"):
            for group in f[subject].values():
                group["k"][...] = 0
                group["p"][...] = 0
    rest = np.zeros((32, 3))
    for j, xyz in REST_POSE.items():
        rest[j] = xyz
    frames = np.repeat(rest[None], 20, axis=0)
    frames[:, 19, 0] += np.linspace(0, 200, 20)  # a wrist waving sideways, staying in the plane
    for (subject, take), distance in hip_distances.items():
        placed = frames.copy()
        placed[:, :, 1] += distance - 5000  # the camera sits 5 m in front of world y = 0
        write_sequence(sequence_path(root, subject, take), placed)
    return root


def test_depth_scaling_makes_the_pose_size_independent_of_distance(tmp_path):
    distances = {(1, "Walking"): 5000.0, (1, "Walking 1"): 10000.0, (11, "Walking"): 2500.0, (11, "Walking 1"): 7500.0}
    root = flat_archive(tmp_path / "h36m", distances)
    cfg = DataConfig(root=str(root), actions=("Walking",), train_subjects=(1,), test_subjects=(11,), cache_dir=None)
    data = load_pose_data(cfg)
    assert data.stats.mean_hip_depth == pytest.approx(7500.0)  # the two training takes, 20 frames each

    focal = load_cameras(root)[1].f
    rest = np.array([REST_POSE[j] for j in H36M_INDICES], dtype=np.float64)
    offsets = rest - rest[HIP]
    # Image x is world x, image y is minus world height; size as seen from the mean training depth.
    expected = np.stack([focal[0] * offsets[:, 0], -focal[1] * offsets[:, 2]], axis=-1) / 7500.0
    for (subject, take) in distances:
        joints = find(data, subject, take).joints
        np.testing.assert_allclose(joints[0], expected, atol=1e-3, err_msg=f"S{subject} {take}")
        np.testing.assert_allclose(joints, find(data, 1, "Walking").joints, atol=1e-3)


# ----------------------------------------------------------------------------- normalisation

def test_normalise_denormalise_round_trip(synthetic_data):
    joints = find(synthetic_data, 11, "Walking 1").joints
    vectors = joints_to_vectors(joints, synthetic_data.stats)
    assert vectors.shape == (len(joints), POSE_DIM)
    back = vectors_to_joints(vectors, synthetic_data.stats)
    assert back.dtype == np.float32 and back.shape == joints.shape
    np.testing.assert_allclose(back, joints, atol=1e-3)

    batch = torch.from_numpy(vectors.reshape(4, -1, POSE_DIM)[:, :10].copy()).requires_grad_()
    np.testing.assert_allclose(vectors_to_joints(batch, synthetic_data.stats),
                               joints.reshape(4, -1, NUM_JOINTS, 2)[:, :10], atol=1e-3)


def test_vectors_are_standardised_with_training_statistics(synthetic_data):
    train = np.concatenate([joints_to_vectors(s.joints, synthetic_data.stats) for s in synthetic_data.split("train")])
    np.testing.assert_allclose(train.mean(0), 0, atol=1e-3)
    np.testing.assert_allclose(train.std(0), 1, atol=1e-3)
    assert synthetic_data.stats.mean.shape == synthetic_data.stats.std.shape == (POSE_DIM,)


def test_norm_stats_save_load_round_trip(synthetic_data, tmp_path):
    path = tmp_path / "stats.json"
    synthetic_data.stats.save(path)
    loaded = NormStats.load(path)
    np.testing.assert_array_equal(loaded.mean, synthetic_data.stats.mean)
    np.testing.assert_array_equal(loaded.std, synthetic_data.stats.std)
    assert loaded.mean_hip_depth == synthetic_data.stats.mean_hip_depth


@pytest.mark.parametrize("bad", [{"mean": [0.0] * 29}, {"std": [1.0] * 31}, {"std": [0.0] * POSE_DIM},
                                 {"mean": [[0.0] * POSE_DIM]}])
def test_norm_stats_reject_bad_shapes(bad):
    d = {"mean": [0.0] * POSE_DIM, "std": [1.0] * POSE_DIM, "mean_hip_depth": 5000.0, **bad}
    with pytest.raises(ValueError, match="length 30"):
        NormStats.from_dict(d)


# ----------------------------------------------------------------------------- finding sequences

def test_sitting_does_not_pick_up_sitting_down(synthetic_root):
    sitting = find_sequences(synthetic_root, (1, 5, 11), ("Sitting",))
    assert sorted({s.take for s in sitting}) == ["Sitting", "Sitting 1"]
    assert len(sitting) == 6 and {s.action for s in sitting} == {"Sitting"}
    both = find_sequences(synthetic_root, (1,), ("Sitting", "SittingDown"))
    assert sorted(s.take for s in both) == ["Sitting", "Sitting 1", "SittingDown", "SittingDown 1"]
    assert all(s.take.startswith(s.action + " ") or s.take == s.action for s in both)


def test_split_follows_the_configured_subjects(synthetic_data):
    assert {s.subject for s in synthetic_data.split("train")} == {1, 5}
    assert {s.subject for s in synthetic_data.split("test")} == {11}
    assert len(synthetic_data.split("test")) == 2 * len(ACTIONS)
    with pytest.raises(ValueError, match="valid splits: train, test"):
        synthetic_data.split("validation")


def test_missing_sequence_warns_and_loading_goes_on(tmp_path):
    root = small_archive(tmp_path / "h36m", skip=("S1/Walking 1", "S11/Sitting", "S11/Sitting 1"))
    with pytest.warns(UserWarning, match="missing Human3.6M sequences") as caught:
        data = load_pose_data(small_config(root, None))
    message = str(caught[0].message)
    assert "S1 Walking (1 of 2 takes)" in message and "S11 Sitting (0 of 2 takes)" in message
    assert "S1 Sitting" not in message and "S11 Walking" not in message
    assert sorted((s.subject, s.take) for s in data.sequences) == [
        (1, "Sitting"), (1, "Sitting 1"), (1, "Walking"), (11, "Walking"), (11, "Walking 1")]


# ----------------------------------------------------------------------------- bad input

def load_expecting_error(cfg: DataConfig, *expected_in_message: str) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a broken archive may also be reported as incomplete
        with pytest.raises(H36MDataError) as err:
            load_pose_data(cfg)
    message = str(err.value)
    for part in expected_in_message:
        assert part in message, f"{part!r} not in {message!r}"
    return message


def test_missing_root_is_named(tmp_path):
    missing = tmp_path / "no_such_dir"
    load_expecting_error(small_config(missing, None), str(missing), "cameras.h5", "S<n>/MyPoses/3D_positions")


def test_missing_cameras_file_is_named(tmp_path):
    root = small_archive(tmp_path / "h36m")
    (root / "cameras.h5").unlink()
    load_expecting_error(small_config(root, None), str(root / "cameras.h5"), "not found")


def test_archive_without_sequence_files_is_named(tmp_path):
    root = tmp_path / "h36m"
    root.mkdir()
    write_cameras(root, (1, 11))
    load_expecting_error(small_config(root, None), str(root), "no sequence files", "<Action>[ <k>].h5")


def test_corrupt_sequence_file_is_named(tmp_path):
    root = small_archive(tmp_path / "h36m")
    path = sequence_path(root, 11, "Sitting 1")
    path.write_bytes(b"this is not an HDF5 file\n" * 40)
    load_expecting_error(small_config(root, tmp_path / "cache"), str(path), "corrupt")


def test_corrupt_cameras_file_is_named(tmp_path):
    root = small_archive(tmp_path / "h36m")
    (root / "cameras.h5").write_bytes(b"\x00garbage" * 100)
    load_expecting_error(small_config(root, None), str(root / "cameras.h5"), "cannot read camera")


@pytest.mark.parametrize("key, replace, expected", [
    ("f", lambda g: g.create_dataset("f", shape=(2, 10**9), dtype="f8"), "subject1/camera2/f is not 2 numbers"),
    ("R", lambda g: g.create_dataset("R", data=np.zeros((4, 4))), "subject1/camera2/R is not 9 numbers"),
    ("k", lambda g: g.create_dataset("k", data=np.full(3, np.nan)), "subject1/camera2/k holds NaN"),
    ("Name", lambda g: g.create_dataset("Name", data=np.full(8, 1e12)), "Name is not 8 ASCII character codes"),
    ("T", lambda g: g.create_group("T"), "subject1/camera2/T is not 3 numbers"),
])
def test_malformed_camera_parameters_are_named(tmp_path, key, replace, expected):
    root = small_archive(tmp_path / "h36m")
    with h5py.File(root / "cameras.h5", "r+") as f:
        del f["subject1/camera2"][key]  # camera2 is 55011271, the one that is read
        replace(f["subject1/camera2"])
    assert (root / "cameras.h5").stat().st_size < 10**6
    load_expecting_error(small_config(root, None), str(root / "cameras.h5"), expected)


@pytest.mark.parametrize("action, dataset, values, expected", [
    ("Walking", "3D_positions", np.zeros((90, 200)), ("(90, 200)", "expected (96, N)")),  # wrong array shape
    ("Walking", "3D_positions", np.zeros((96, 0)), ("(96, 0)", "1 <= N <= 360000")),
    ("Walking", "3D_positions", np.zeros((96, 20, 2)), ("(96, 20, 2)", "expected (96, N)")),
    ("Walking", "3D_positions", np.full((96, 200), np.nan), ("NaN or infinite",)),
    ("Walking", "3D_positions", np.array([["x"] * 200] * 96, dtype="S1"), ("|S1", "expected numbers")),
    ("Sitting", "positions", np.zeros((96, 200)), ("'3D_positions'", "positions")),  # missing dataset name
])
def test_malformed_sequence_file_is_named(tmp_path, action, dataset, values, expected):
    root = small_archive(tmp_path / "h36m")
    path = sequence_path(root, 1, action)
    with h5py.File(path, "w") as f:
        f[dataset] = values
    load_expecting_error(small_config(root, None), str(path), *expected)


def test_sequence_declaring_a_huge_array_is_refused_before_reading(tmp_path):
    root = small_archive(tmp_path / "h36m")
    path = sequence_path(root, 1, "Walking")
    with h5py.File(path, "w") as f:  # declared, never written: a tiny file claiming 715 GiB
        f.create_dataset("3D_positions", shape=(96, 10**9), dtype="f8")
    assert path.stat().st_size < 10**5
    load_expecting_error(small_config(root, None), str(path), "(96, 1000000000)", "1 <= N <= 360000")


def test_group_in_place_of_the_dataset_is_named(tmp_path):
    root = small_archive(tmp_path / "h36m")
    path = sequence_path(root, 1, "Walking")
    with h5py.File(path, "w") as f:
        f.create_group("3D_positions")
    load_expecting_error(small_config(root, None), str(path), "no dataset '3D_positions'")


def test_camera_missing_from_cameras_file_is_named(tmp_path):
    root = small_archive(tmp_path / "h36m")
    cfg = DataConfig(root=str(root), actions=SMALL_ACTIONS, train_subjects=(1,), test_subjects=(11,),
                     camera="12345678", cache_dir=None)
    load_expecting_error(cfg, str(root / "cameras.h5"), "'12345678'")


@pytest.mark.parametrize("action", ["walking", "Walk", "SittingDown 1"])
def test_unknown_action_in_config_lists_the_valid_names(synthetic_root, action):
    cfg = DataConfig(root=str(synthetic_root), actions=("Sitting", action), cache_dir=None)
    with pytest.raises(ValueError, match="valid actions") as err:
        load_pose_data(cfg)
    assert repr(action) in str(err.value)
    assert all(name in str(err.value) for name in ACTIONS + ("WalkDog", "WalkTogether"))


# ----------------------------------------------------------------------------- cache

def assert_same_data(a, b) -> None:
    assert [(s.subject, s.take) for s in a.sequences] == [(s.subject, s.take) for s in b.sequences]
    for sa, sb in zip(a.sequences, b.sequences):
        np.testing.assert_array_equal(sa.joints, sb.joints)
    np.testing.assert_array_equal(a.stats.mean, b.stats.mean)
    np.testing.assert_array_equal(a.stats.std, b.stats.std)
    assert a.stats.mean_hip_depth == b.stats.mean_hip_depth


def refuse_to_read(path):
    raise AssertionError(f"read {path} although the cache should have been used")


def test_cache_hit_gives_identical_arrays_without_reading_the_files(tmp_path, monkeypatch):
    root = small_archive(tmp_path / "h36m")
    cache = tmp_path / "cache"
    first = load_pose_data(small_config(root, cache))
    assert len(list(cache.glob("*.npz"))) == 1
    monkeypatch.setattr(data_module, "read_sequence", refuse_to_read)
    second = load_pose_data(small_config(root, cache))
    assert_same_data(first, second)
    # Without a cache directory the files are read every time.
    with pytest.raises(AssertionError, match="although the cache"):
        load_pose_data(small_config(root, None))


def test_cache_is_shared_by_settings_that_do_not_change_the_projection(tmp_path, monkeypatch):
    root = small_archive(tmp_path / "h36m")
    cache = tmp_path / "cache"
    first = load_pose_data(small_config(root, cache))
    monkeypatch.setattr(data_module, "read_sequence", refuse_to_read)
    longer_clips = DataConfig(root=str(root), actions=SMALL_ACTIONS, train_subjects=(1,), test_subjects=(11,),
                              clip_frames=60, frame_stride=2, cache_dir=str(cache))
    assert_same_data(first, load_pose_data(longer_clips))


def test_cache_is_rebuilt_when_a_sequence_file_changes(tmp_path):
    root = small_archive(tmp_path / "h36m")
    cache = tmp_path / "cache"
    before = load_pose_data(small_config(root, cache))
    path = sequence_path(root, 11, "Walking")
    world = read_world(path)[:150]
    world[:, :, 2] += 300.0 * np.sin(np.arange(150) / 10.0)[:, None]  # jumping
    write_sequence(path, world)

    after = load_pose_data(small_config(root, cache))
    assert len(find(after, 11, "Walking").joints) == 150
    assert len(find(before, 11, "Walking").joints) == 200
    np.testing.assert_array_equal(find(after, 1, "Sitting").joints, find(before, 1, "Sitting").joints)
    assert len(list(cache.glob("*.npz"))) == 2


def test_cache_is_rebuilt_when_the_cameras_change(tmp_path):
    root = small_archive(tmp_path / "h36m")
    cache = tmp_path / "cache"
    before = load_pose_data(small_config(root, cache))
    with h5py.File(root / "cameras.h5", "r+") as f:
        for group in f["subject1"].values():
            group["f"][...] *= 2
    after = load_pose_data(small_config(root, cache))
    # Twice the focal length: the training poses (subject 1) come out about twice as large.
    ratio = np.abs(find(after, 1, "Walking").joints).mean() / np.abs(find(before, 1, "Walking").joints).mean()
    assert ratio == pytest.approx(2.0, rel=0.05)


def damage_truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def damage_rewrite(**arrays):
    def damage(path: Path) -> None:
        with np.load(path) as z:
            kept = {k: z[k] for k in z.files}
        kept.update(arrays)
        np.savez(path, **{k: v for k, v in kept.items() if v is not None})
    return damage


@pytest.mark.parametrize("damage", [
    damage_truncate,
    lambda path: path.write_bytes(b""),
    lambda path: path.write_bytes(b"not a zip archive\n" * 100),
    lambda path: np.save(path.open("wb"), np.zeros(3)),  # a plain .npy under the .npz name
    damage_rewrite(hips=None),  # a key missing
    damage_rewrite(lengths=np.array([200, 200, 200])),  # one sequence fewer than the archive holds
    damage_rewrite(lengths=np.array([200, 200, 200, 100, 100, 200, 200, 200])),  # lengths not summing up
    damage_rewrite(lengths=np.array([400, 0, 200, 200, 200, 200, 200, 200])),  # an empty sequence
    damage_rewrite(joints=np.zeros((1600, 17, 2), np.float32)),
    damage_rewrite(lengths=np.array(["200"] * 8)),
], ids=["truncated", "empty", "foreign", "npy", "missing-key", "fewer-sequences", "wrong-total", "empty-sequence",
        "wrong-shape", "string-lengths"])
def test_damaged_cache_is_reported_and_rebuilt(tmp_path, monkeypatch, damage):
    root = small_archive(tmp_path / "h36m")
    cache = tmp_path / "cache"
    fresh = load_pose_data(small_config(root, cache))
    (cache_file,) = cache.glob("*.npz")
    damage(cache_file)
    with pytest.warns(UserWarning, match=f"cache {cache_file.name} is damaged .*; rebuilding it"):
        rebuilt = load_pose_data(small_config(root, cache))
    assert_same_data(fresh, rebuilt)
    monkeypatch.setattr(data_module, "read_sequence", refuse_to_read)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_same_data(fresh, load_pose_data(small_config(root, cache)))  # the rebuilt cache is used again


def test_unwritable_cache_is_reported_and_loading_goes_on(tmp_path):
    root = small_archive(tmp_path / "h36m")
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    with pytest.warns(UserWarning, match="cannot write the Human3.6M cache .*going on without it"):
        data = load_pose_data(small_config(root, blocker / "cache"))
    assert len(data.sequences) == 8


def build_cache_when_all_are_ready(root: Path, cache: Path, barrier) -> list[int]:
    """Loads the archive in a child process; every process projects, then all write the cache at once."""
    project = data_module._project_files

    def project_then_wait(*args):
        result = project(*args)
        barrier.wait()
        return result

    data_module._project_files = project_then_wait
    return [len(s.joints) for s in load_pose_data(small_config(root, cache)).sequences]


def test_processes_building_the_cache_at_once_all_succeed(tmp_path):
    root = small_archive(tmp_path / "h36m")
    cache = tmp_path / "cache"
    processes = 4
    context = multiprocessing.get_context("fork")
    barrier = context.Manager().Barrier(processes)
    with context.Pool(processes) as pool:
        lengths = pool.starmap(build_cache_when_all_are_ready, [(root, cache, barrier)] * processes)
    assert lengths == [[200] * 8] * processes
    assert len(list(cache.glob("*.npz"))) == 1 and list(cache.glob(".*")) == []  # no temporary file left
    assert_same_data(load_pose_data(small_config(root, cache)), load_pose_data(small_config(root, None)))


# ----------------------------------------------------------------------------- clips

def clip_lookup(data, split: str) -> dict[bytes, tuple[int, np.ndarray]]:
    """First frame of every possible clip -> (label, the clip), to recognise sampled clips."""
    lookup = {}
    for seq in data.split(split):
        vectors = joints_to_vectors(seq.joints, data.stats).astype(np.float32)
        for start in range(len(vectors) - CLIP_SPAN + 1):
            lookup[vectors[start].tobytes()] = (ACTIONS.index(seq.action), vectors[start:start + CLIP_SPAN:3])
    return lookup


def test_clip_sampler_draws_real_clips_with_their_labels(synthetic_data):
    sampler = ClipSampler(synthetic_data, "train", seed=3)
    clips, labels = sampler.clips(64)
    assert clips.shape == (64, 50, POSE_DIM) and clips.dtype == torch.float32
    assert labels.shape == (64,) and labels.dtype == torch.int64
    lookup = clip_lookup(synthetic_data, "train")
    for clip, label in zip(clips.numpy(), labels.tolist()):
        expected_label, expected_clip = lookup[clip[0].tobytes()]
        assert label == expected_label
        np.testing.assert_array_equal(clip, expected_clip)


def test_clip_rows_index_the_sampled_clips_and_frame_labels_name_every_rows_class(synthetic_data):
    by_rows, by_clips = ClipSampler(synthetic_data, "train", seed=5), ClipSampler(synthetic_data, "train", seed=5)
    rows, labels = by_rows.clip_rows(32)
    clips, clip_labels = by_clips.clips(32)
    assert rows.shape == (32, 50)
    np.testing.assert_array_equal(by_rows.vectors[rows], clips.numpy())
    np.testing.assert_array_equal(labels, clip_labels.numpy())
    frame_labels = by_rows.frame_labels()
    assert frame_labels.shape == (len(by_rows.vectors),)
    np.testing.assert_array_equal(frame_labels[rows], np.repeat(labels[:, None], 50, axis=1))
    offset = 0
    for seq in synthetic_data.split("train"):
        assert (frame_labels[offset:offset + len(seq.joints)] == ACTIONS.index(seq.action)).all()
        offset += len(seq.joints)
    assert offset == len(frame_labels)


def test_clip_sampler_balances_classes(synthetic_data):
    _, labels = ClipSampler(synthetic_data, "train", seed=0).clips(5000)
    counts = np.bincount(labels.numpy(), minlength=len(ACTIONS))
    assert counts.min() > 0.8 * 500 and counts.max() < 1.2 * 500


def test_clip_sampler_frames(synthetic_data):
    frames, labels = ClipSampler(synthetic_data, "test", seed=0).frames(16)
    assert frames.shape == (16, POSE_DIM) and labels.shape == (16,)
    test_vectors = {joints_to_vectors(s.joints, synthetic_data.stats).astype(np.float32)[i].tobytes(): s.action
                    for s in synthetic_data.split("test") for i in range(len(s.joints))}
    for frame, label in zip(frames.numpy(), labels.tolist()):
        assert test_vectors[frame.tobytes()] == ACTIONS[label]


def test_clip_sampler_is_deterministic_per_seed(synthetic_data):
    a = ClipSampler(synthetic_data, "train", seed=7)
    b = ClipSampler(synthetic_data, "train", seed=7)
    c = ClipSampler(synthetic_data, "train", seed=8)
    for _ in range(3):
        (clips_a, labels_a), (clips_b, labels_b), (clips_c, _) = a.clips(8), b.clips(8), c.clips(8)
        assert torch.equal(clips_a, clips_b) and torch.equal(labels_a, labels_b)
        assert not torch.equal(clips_a, clips_c)
    batch_clips, batch_labels = next(iter(ClipSampler(synthetic_data, "train", seed=7)))
    assert batch_clips.shape == (32, 50, POSE_DIM) and batch_labels.shape == (32,)


def test_clip_sampler_rejects_sequences_shorter_than_a_clip(tmp_path):
    root = write_archive(tmp_path / "h36m", subjects=(1, 11), actions=SMALL_ACTIONS, frames=CLIP_SPAN - 1)
    data = load_pose_data(small_config(root, None))
    with pytest.raises(H36MDataError, match=f"at least {CLIP_SPAN} frames for: Sitting, Walking"):
        ClipSampler(data, "train")


@pytest.mark.parametrize("start_step", [1, 10, 46, 92, 93])
def test_clip_dataset_enumerates_every_start_step(synthetic_data, start_step):
    dataset = ClipDataset(synthetic_data, "test", start_step=start_step)
    # A clip starting at raw frame s covers frames s, s+3, ..., s+147, so s runs up to N - 148.
    expected = sum((len(s.joints) - CLIP_SPAN) // start_step + 1 for s in synthetic_data.split("test"))
    assert len(dataset) == expected
    assert dataset.clips.shape == (expected, 50, POSE_DIM) and dataset.clips.dtype == np.float32

    first = synthetic_data.split("test")[0]
    vectors = joints_to_vectors(first.joints, synthetic_data.stats).astype(np.float32)
    per_sequence = (len(first.joints) - CLIP_SPAN) // start_step + 1
    last_start = (per_sequence - 1) * start_step
    np.testing.assert_array_equal(dataset.clips[0], vectors[0:CLIP_SPAN:3])
    np.testing.assert_array_equal(dataset.clips[per_sequence - 1], vectors[last_start:last_start + CLIP_SPAN:3])
    assert set(dataset.labels[:per_sequence]) == {ACTIONS.index(first.action)}


@pytest.mark.parametrize("start_step", [0, -10])
def test_clip_dataset_rejects_a_non_positive_start_step(synthetic_data, start_step):
    with pytest.raises(ValueError, match=f"start_step must be a positive number of frames; got {start_step}"):
        ClipDataset(synthetic_data, "test", start_step=start_step)


def test_clip_dataset_items_and_classes(synthetic_data):
    dataset = ClipDataset(synthetic_data, "test", start_step=10)
    clip, label = dataset[5]
    assert isinstance(clip, torch.Tensor) and clip.shape == (50, POSE_DIM) and isinstance(label, int)
    np.testing.assert_array_equal(clip.numpy(), dataset.clips[5])
    # 2 takes of 240 frames per action: 2 * ((240 - 148) // 10 + 1) clips each.
    np.testing.assert_array_equal(np.bincount(dataset.labels, minlength=len(ACTIONS)), [20] * len(ACTIONS))
    clips, labels = next(iter(torch.utils.data.DataLoader(dataset, batch_size=7)))
    assert clips.shape == (7, 50, POSE_DIM) and labels.tolist() == dataset.labels[:7].tolist()


def test_clip_dataset_per_class_subsets(synthetic_data):
    dataset = ClipDataset(synthetic_data, "test", start_step=10)
    full = dataset.per_class()
    assert list(full) == list(ACTIONS)
    assert all(len(clips) == 20 for clips in full.values())
    subset = dataset.per_class(max_per_class=6, seed=1)
    assert all(clips.shape == (6, 50, POSE_DIM) for clips in subset.values())
    for action, clips in subset.items():
        members = {c.tobytes() for c in full[action]}
        assert all(c.tobytes() in members for c in clips), action
    same = dataset.per_class(max_per_class=6, seed=1)
    other = dataset.per_class(max_per_class=6, seed=2)
    assert all(np.array_equal(subset[a], same[a]) for a in ACTIONS)
    assert not all(np.array_equal(subset[a], other[a]) for a in ACTIONS)
    assert all(len(clips) == 20 for clips in dataset.per_class(max_per_class=100).values())
