import json
import math

import numpy as np
import pytest
import torch

from actiongen import evaluate, realism
from actiongen.checkpoint import Bundle, CheckpointError, build_models, save_bundle
from actiongen.data import ClipDataset, NormStats, joints_to_vectors, vectors_to_joints
from actiongen.models import ModelConfig
from actiongen.recognizer import ActionRecognizer, Recognizer, RecognizerConfig, load_recognizer, save_recognizer
from actiongen.skeleton import ACTIONS

ROW_KEYS = [("ActionGen", "train (S1, S5)"), ("ActionGen", "test (S11)"), ("real S11", "train (S1, S5)"),
            ("real S5", "other training subjects (S1)"), ("real S11, one take", "the other take of S11"),
            ("class mean pose + Gaussian noise", "train (S1, S5)")]


@pytest.fixture(scope="module")
def bundle_path(synthetic_data, tmp_path_factory):
    torch.manual_seed(0)
    cfg = ModelConfig()
    transition, classifier = build_models(cfg)
    path = tmp_path_factory.mktemp("bundle") / "m.json"
    save_bundle(path, Bundle(cfg, synthetic_data.stats, ACTIONS, transition.eval(), classifier.eval(), {}))
    return path


@pytest.fixture(scope="module")
def recognizer_path(synthetic_data, tmp_path_factory):
    torch.manual_seed(1)
    model = ActionRecognizer(RecognizerConfig(hidden=16, feature_dim=8)).eval()
    path = tmp_path_factory.mktemp("recognizer") / "r.json"
    save_recognizer(path, Recognizer(model, synthetic_data.stats, ACTIONS, {"note": "random init"}))
    return path


def cli_args(synthetic_config, *extra: str) -> list[str]:
    return ["--data-root", synthetic_config.root, "--cache-dir", synthetic_config.cache_dir,
            "--train-subjects", "1", "5", "--test-subjects", "11", "--per-class", "6", "--quiet", *extra]


@pytest.fixture(scope="module")
def report(synthetic_config, bundle_path, recognizer_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "results.json"
    evaluate.main(cli_args(synthetic_config, "--checkpoint", str(bundle_path), "--recognizer", str(recognizer_path),
                           "--seeds", "0", "1", "--out", str(out)))
    return json.loads(out.read_text())


def test_evaluation_runs_end_to_end_on_synthetic_data(report):
    assert [(r["name"], r["reference"]) for r in report["rows"]] == ROW_KEYS
    assert report["seeds"] == [0, 1] and report["per_class"] == 6
    assert report["runtime_s"] < 60
    for row in report["rows"]:
        for key in evaluate.METRICS:
            metric = row["metrics"][key]
            assert len(metric["values"]) == 2 and all(math.isfinite(v) for v in metric["values"]), (row["name"], key)
            assert metric["mean"] == pytest.approx(np.mean(metric["values"]))
            assert metric["std"] == pytest.approx(np.std(metric["values"]))
        assert set(row["per_class"]) == set(ACTIONS)
        for values in row["per_class"].values():
            assert 2 <= values["m"] <= 6
        mean_of_classes = np.mean([v["mmd_seq"] for v in row["per_class"].values()])
        assert row["metrics"]["mmd_seq"]["mean"] == pytest.approx(mean_of_classes)


def test_random_model_is_far_from_real_data(report):
    rows = {(r["name"], r["reference"]): r["metrics"] for r in report["rows"]}
    model = rows[ROW_KEYS[0]]
    real = rows[ROW_KEYS[2]]
    assert model["mmd_seq"]["mean"] > real["mmd_seq"]["mean"]
    assert model["mmd_avg"]["mean"] > real["mmd_avg"]["mean"]


def test_reference_rows_do_not_depend_on_the_model_rows(report, synthetic_config, recognizer_path, tmp_path):
    out = tmp_path / "refs.json"
    evaluate.main(cli_args(synthetic_config, "--references-only", "--recognizer", str(recognizer_path),
                           "--seeds", "0", "1", "--out", str(out)))
    refs = json.loads(out.read_text())
    assert [(r["name"], r["reference"]) for r in refs["rows"]] == ROW_KEYS[2:]
    full = {(r["name"], r["reference"]): r for r in report["rows"]}
    for row in refs["rows"]:
        for key in ("mmd_avg", "mmd_seq", "fid", "accuracy_recognizer", "diversity", "multimodality"):
            assert row["metrics"][key] == full[(row["name"], row["reference"])]["metrics"][key]
        assert row["metrics"]["accuracy_own"] is None  # no checkpoint, no own classifier


def test_realism_of_the_model_matches_the_realism_module(report, bundle_path, synthetic_data):
    measured = report["realism"]
    assert list(measured["c2st"]) == ["ActionGen"]  # two training subjects: no unseen subject for references
    c2st = measured["c2st"]["ActionGen"]
    assert len(c2st["accuracy"]["values"]) == 2 and set(c2st["per_class"]) == set(ACTIONS)
    assert set(measured["motion"]["ratio"]) == set(ACTIONS)
    assert 0.0 <= measured["occupancy"]["clamp_share"]["mean"] <= 1.0
    # The same measurement as the realism command's for the same seed.
    single = realism.evaluate_bundle(bundle_path, synthetic_data, per_class=6, seed=0, progress=False)
    assert c2st["accuracy"]["values"][0] == single["c2st"]
    assert measured["occupancy"]["clamp_share"]["values"][0] == single["clamp_share"]


def test_markdown_with_a_checkpoint_has_the_realism_tables(synthetic_config, bundle_path, capsys):
    report = evaluate.main(cli_args(synthetic_config, "--checkpoint", str(bundle_path), "--recognizer", "none",
                                    "--seeds", "0", "--per-class", "4", "--markdown"))
    text = capsys.readouterr().out
    assert "Realism (actiongen.realism)" in text
    assert "| ActionGen | " + f"{report['realism']['c2st']['ActionGen']['accuracy']['mean']:.3f} |" in text
    assert "| Generated / real (training clips) |" in text and "Latent occupancy:" in text


def test_each_seed_draws_its_clips_once_for_the_mmd_rows_and_the_realism(synthetic_config, bundle_path,
                                                                          monkeypatch):
    drawn = []
    draw = evaluate.generate_per_class

    def counted(generator, actions, per_class, seed, *args, **kwargs):
        drawn.append(seed)
        return draw(generator, actions, per_class, seed, *args, **kwargs)
    monkeypatch.setattr(evaluate, "generate_per_class", counted)  # realism draws through this module too
    report = evaluate.main(cli_args(synthetic_config, "--checkpoint", str(bundle_path), "--recognizer", "none",
                                    "--seeds", "0", "1", "--per-class", "3"))
    assert drawn == [0, 1]
    assert len(report["realism"]["c2st"]["ActionGen"]["accuracy"]["values"]) == 2


def test_no_realism_skips_the_realism_measurements(synthetic_config, bundle_path, capsys):
    report = evaluate.main(cli_args(synthetic_config, "--checkpoint", str(bundle_path), "--recognizer", "none",
                                    "--seeds", "0", "--per-class", "3", "--no-realism"))
    assert report["realism"] is None
    assert "realism:" not in capsys.readouterr().out


def test_markdown_lists_rows_published_numbers_and_per_class_tables(synthetic_config, recognizer_path, capsys):
    report = evaluate.main(cli_args(synthetic_config, "--references-only", "--recognizer", "none",
                                    "--seeds", "3", "--markdown"))
    text = capsys.readouterr().out
    assert "| MMD_avg ↓ | MMD_seq ↓ |" in text
    assert "| SA-GCN (Yu & Tapaswi 2020) | training set | 0.146 | 0.134 |" in text
    assert "Per class: real S11 vs train (S1, S5)" in text
    assert "n/a" in text  # no recogniser: accuracy, FID and diversity are not available
    assert "--seeds 3" in report["command"]
    assert report["rows"][0]["metrics"]["fid"] is None
    assert report["realism"] is None  # no checkpoint, nothing generated to measure


def test_missing_checkpoint_is_a_clear_error(synthetic_config, tmp_path):
    with pytest.raises(SystemExit, match="checkpoint config not found"):
        evaluate.main(cli_args(synthetic_config, "--checkpoint", str(tmp_path / "nope.json"),
                               "--recognizer", "none", "--seeds", "0"))


def test_bad_arguments_are_rejected(synthetic_config, capsys):
    with pytest.raises(SystemExit):
        evaluate.main(cli_args(synthetic_config, "--per-class", "1"))
    assert "--per-class must be at least 2" in capsys.readouterr().err


def test_checkpoint_with_other_statistics_warns(synthetic_config, synthetic_data, tmp_path):
    cfg = ModelConfig()
    transition, classifier = build_models(cfg)
    other = NormStats(synthetic_data.stats.mean + 5.0, synthetic_data.stats.std * 2.0, 5000.0)
    save_bundle(tmp_path / "other.json", Bundle(cfg, other, ACTIONS, transition.eval(), classifier.eval(), {}))
    with pytest.warns(UserWarning, match="normalisation statistics differ"):
        evaluate.main(cli_args(synthetic_config, "--checkpoint", str(tmp_path / "other.json"), "--recognizer",
                               "none", "--seeds", "0", "--per-class", "3"))


def test_renormalise_matches_normalising_the_joints_directly(synthetic_data):
    rng = np.random.default_rng(0)
    joints = vectors_to_joints(rng.normal(size=(4, 5, 30)), synthetic_data.stats)
    other = NormStats(rng.normal(size=30), rng.uniform(0.5, 2.0, size=30), 4000.0)
    source = joints_to_vectors(joints, synthetic_data.stats)
    np.testing.assert_allclose(evaluate.renormalise(source, synthetic_data.stats, other),
                               joints_to_vectors(joints, other), rtol=1e-4, atol=1e-4)


def test_mean_pose_baseline_has_the_class_means_and_spreads(synthetic_data):
    train = ClipDataset(synthetic_data, "train").per_class()
    baseline = evaluate.mean_pose_baseline(train, per_class=400, seed=0)
    for action, clips in baseline.items():
        assert clips.shape == (400, *train[action].shape[1:])
        frames = train[action].reshape(-1, 30)
        np.testing.assert_allclose(clips.reshape(-1, 30).mean(0), frames.mean(0), atol=0.05 * frames.std(0).max())
        np.testing.assert_allclose(clips.reshape(-1, 30).std(0), frames.std(0), rtol=0.05)
        # no motion structure: consecutive frames are uncorrelated
        step = np.diff(clips, axis=1).reshape(-1, 30).std(0)
        np.testing.assert_allclose(step, np.sqrt(2) * frames.std(0), rtol=0.05)


def test_take_halves_pairs_the_two_takes_of_each_action(synthetic_data):
    first, second = evaluate.take_halves(synthetic_data.split("test"))
    assert [s.action for s in first] == [s.action for s in second] == sorted(ACTIONS)
    assert all(a.take < b.take and a.subject == b.subject == 11 for a, b in zip(first, second))


def test_generation_seeds_are_distinct_across_classes_and_seeds():
    seeds = [s for seed in range(3) for c in range(10) for s in evaluate.generation_seeds(seed, c, 10, 50)]
    assert len(set(seeds)) == len(seeds) == 1500
    assert max(seeds) < 2**32


def test_recognizer_round_trip(recognizer_path, synthetic_data):
    recognizer = load_recognizer(recognizer_path)
    assert recognizer.meta == {"note": "random init"}
    clips = ClipDataset(synthetic_data, "test").clips[:7]
    features, logits = recognizer.predict(clips, batch_size=3)
    assert features.shape == (7, 8) and logits.shape == (7, len(ACTIONS))
    with torch.no_grad():
        expected = recognizer.model(torch.from_numpy(clips)).numpy()
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)


def test_recognizer_load_errors(tmp_path, recognizer_path):
    with pytest.raises(CheckpointError, match="recogniser not found"):
        load_recognizer(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(CheckpointError, match="format"):
        load_recognizer(tmp_path / "bad.json")


def test_train_recognizer_writes_a_loadable_recognizer(synthetic_config, tmp_path, capsys):
    from train.train_recognizer import main

    out = tmp_path / "rec.json"
    main(["--data-root", synthetic_config.root, "--cache-dir", synthetic_config.cache_dir, "--train-subjects", "1",
          "5", "--test-subjects", "11", "--steps", "3", "--batch", "8", "--hidden", "8", "--out", str(out)])
    recognizer = load_recognizer(out)
    assert recognizer.model.cfg.hidden == 8
    assert recognizer.meta["training"]["steps"] == 3
    assert 0.0 <= recognizer.meta["accuracy"]["test"] <= 1.0
    assert "test (S11) accuracy" in capsys.readouterr().out


def test_recognizer_mirror_augmentation_swaps_sides():
    from actiongen.skeleton import HIP, JOINT_NAMES
    from train.train_recognizer import mirror_permutation

    permutation = mirror_permutation()
    assert sorted(permutation) == list(range(30))
    assert [permutation[i] for i in permutation] == list(range(30))  # mirroring twice changes nothing
    names = [n for i, n in enumerate(JOINT_NAMES) if i != HIP]
    for i, name in enumerate(names):
        partner = names[permutation[2 * i] // 2]
        assert partner == {"R": "L" + name[1:], "L": "R" + name[1:]}.get(name[0], name)
