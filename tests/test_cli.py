"""The command line: every command writes what it says, and bad arguments give one line on stderr and
exit status 2."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from actiongen.cli import main, parse_mix
from actiongen.generator import Generator
from actiongen.skeleton import ACTIONS

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bundle_path(random_bundle_path) -> Path:
    return random_bundle_path


@pytest.fixture
def run(bundle_path, capsys):
    """main(command, --checkpoint, --device cpu, rest) -> (status, stdout, stderr); argparse's own exits
    become statuses. Options given in `rest` win over the defaults."""
    def invoke(command: str, *rest: str) -> tuple[int, str, str]:
        try:
            status = main([command, "--checkpoint", str(bundle_path), "--device", "cpu", *rest])
        except SystemExit as exit:
            status = exit.code
        out, err = capsys.readouterr()
        return status, out, err

    threads = torch.get_num_threads()
    yield invoke
    torch.set_num_threads(threads)  # sample-all sets one thread per worker for the whole process


def assert_usage_error(result: tuple[int, str, str], message: str) -> None:
    status, out, err = result
    assert status == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("actiongen: error: ") and message in err, err


def test_sample_writes_the_clip(run, bundle_path, tmp_path):
    status, out, err = run("sample", "--action", "walking", "--seed", "3", "--frames", "20", "--out",
                           str(tmp_path / "walk.npz"))
    assert status == 0 and err == "" and "Walking, seed 3, 20 frames" in out
    expected = Generator.load(bundle_path, device="cpu").sample("Walking", 3, frames=20)
    with np.load(tmp_path / "walk.npz") as z:
        assert np.array_equal(z["joints"], expected.joints)


def test_sample_gif_with_size(run, tmp_path):
    assert run("sample", "--action", "Eating", "--frames", "12", "--size", "96", "--out", str(tmp_path / "e.gif"))[0] == 0
    with Image.open(tmp_path / "e.gif") as im:
        assert im.size == (96, 96) and im.n_frames == 12


def test_mix_and_transition_commands_match_sample_options(run, tmp_path):
    run("mix", "Walking=1", "Phoning=3", "--seed", "4", "--out", str(tmp_path / "a.npz"))
    run("sample", "--mix", "Walking=1,Phoning=3", "--seed", "4", "--out", str(tmp_path / "b.npz"))
    run("transition", "--action", "Walking", "--to-action", "Phoning", "--transition", "10:20", "--out",
        str(tmp_path / "c.npz"))
    with np.load(tmp_path / "a.npz") as a, np.load(tmp_path / "b.npz") as b, np.load(tmp_path / "c.npz") as c:
        assert np.array_equal(a["joints"], b["joints"]) and str(a["action_label"]) == "0.75 Phoning + 0.25 Walking"
        phoning = c["class_weights"][:, ACTIONS.index("Phoning")]
        assert np.all(phoning[:11] == 0) and np.all(phoning[20:] == 1)


def test_sample_with_interpolation(run, tmp_path):
    assert run("sample", "--action", "Walking", "--seed", "1", "--to-seed", "2", "--out", str(tmp_path / "i.json"))[0] == 0
    assert '"alpha": 0.5' in (tmp_path / "i.json").read_text()


def test_interpolate_writes_a_strip(run, tmp_path):
    status, out, _ = run("interpolate", "--action", "Walking", "--seed", "1", "--to-seed", "2", "--steps", "3",
                         "--frames", "10", "--size", "64", "--out", str(tmp_path / "strip.gif"))
    assert status == 0 and "3 clips" in out
    with Image.open(tmp_path / "strip.gif") as im:
        assert im.size == (3 * 64, 64) and im.n_frames == 10


def test_sample_all_to_npz_and_to_a_directory(run, tmp_path):
    assert run("sample-all", "--per-class", "2", "--frames", "10", "--out", str(tmp_path / "all.npz"))[0] == 0
    with np.load(tmp_path / "all.npz") as z:
        assert z["poses"].shape == (2 * len(ACTIONS), 10, 16, 2) and list(z["actions"]) == list(ACTIONS)
        assert z["labels"].tolist() == [c for c in range(len(ACTIONS)) for _ in range(2)]
    assert run("sample-all", "--per-class", "1", "--seed", "5", "--frames", "5", "--format", "json",
               "--out", str(tmp_path / "dir"))[0] == 0
    assert sorted(p.name for p in (tmp_path / "dir").iterdir()) == sorted(f"{a}_seed5.json" for a in ACTIONS)


def test_help_lists_commands_and_actions(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["--help"])
    out = capsys.readouterr().out
    assert exit.value.code == 0
    assert all(word in out for word in ("sample-all", "interpolate", "transition", "SittingDown", "examples"))


@pytest.mark.parametrize("argv, message", [
    (["sample", "--action", "Flying", "--out", "x.gif"], "valid actions: Directions"),
    (["sample", "--action", "Walking", "--frames", "0", "--out", "x.gif"], "frames must be in [2, 1000]"),
    (["sample", "--action", "Walking", "--seed", "-3", "--out", "x.gif"], "seed must be in [0, 4294967295]"),
    (["sample", "--action", "Walking", "--frames", "ten", "--out", "x.gif"],
     "argument --frames: frames must be a whole number in [2, 1000]; got 'ten'"),
    (["sample", "--action", "Walking", "--frames", "100000000", "--out", "x.gif"],
     "argument --frames: frames must be in [2, 1000]; got 100000000"),
    (["sample", "--action", "Walking", "--frames", "5_0", "--out", "x.gif"], "frames must be a whole number"),
    (["sample", "--action", "Walking", "--seed", "5_0", "--out", "x.gif"],
     "argument --seed: seed must be a whole number in [0, 4294967295]; got '5_0'"),
    (["sample", "--action", "Walking", "--seed", "4294967296", "--out", "x.gif"],
     "seed must be in [0, 4294967295]; got 4294967296"),
    (["sample", "--action", "Walking", "--to-seed", "1_0", "--out", "x.gif"], "argument --to-seed: seed must be"),
    (["sample", "--action", "Walking", "--size", "20000", "--out", "x.gif"],
     "argument --size: size must be in [16, 2048]; got 20000"),
    (["sample", "--action", "Walking", "--to-seed", "1", "--alpha", "0_5", "--out", "x.gif"],
     "argument --alpha: expected a number such as 0.5; got '0_5'"),
    (["sample", "--action", "Walking", "--to-seed", "1", "--alpha", "nan", "--out", "x.gif"],
     "expected a number such as 0.5; got 'nan'"),
    (["mix", "Walking=0_5", "--out", "x.gif"], "NAME=WEIGHT"),
    (["mix", "Walking=1e308", "Eating=1e308", "--out", "x.gif"], "their sum overflows"),
    (["transition", "--action", "Walking", "--to-action", "Eating", "--transition", "1_0:20", "--out", "x.gif"],
     "whole numbers in [0, 999]"),
    (["interpolate", "--action", "Walking", "--to-seed", "1", "--steps", "100000", "--out", "x.gif"],
     "argument --steps: steps must be in [2, 64]; got 100000"),
    (["interpolate", "--action", "Walking", "--to-seed", "1", "--steps", "64", "--frames", "1000", "--out", "x.gif"],
     "64000 panels of 256 x 256 px are more than 250,000,000 pixels; use a size of at most 62 px"),
    (["sample-all", "--per-class", "100000000", "--out", "d.npz"],
     "argument --per-class: per-class must be in [1, 1000000]; got 100000000"),
    (["sample-all", "--per-class", "5000", "--out", "d.npz"],
     "--per-class must be in [1, 2000] for 10 actions of 50 frames (1,000,000 frames in all); got 5000"),
    (["sample-all", "--per-class", "2", "--seed", "4294967295", "--out", "d.npz"],
     "with --per-class 2, --seed must be in [0, 4294967294]; got 4294967295"),
    (["sample-all", "--per-class", "2", "--size", "8", "--out", "d"], "size must be in [16, 2048]; got 8"),
    (["sample-all", "--per-class", "1", "--frames", "1000", "--size", "2048", "--out", "d"],
     "1000 panels of 2048 x 2048 px are more than 250,000,000 pixels; use a size of at most 500 px"),
    (["sample", "--action", "Walking", "--frames", "1000", "--size", "2048", "--out", "x.mp4"],
     "1000 panels of 2048 x 2048 px"),
    (["sample", "--action", "Walking", "--out", "x.avi"], "needs one of the suffixes .gif"),
    (["sample", "--out", "x.gif"], "one of the arguments --action --mix is required"),
    (["sample", "--action", "Walking", "--alpha", "0.5", "--out", "x.gif"], "alpha needs seed_b"),
    (["sample", "--action", "Walking", "--to-seed", "2", "--alpha", "2", "--out", "x.gif"], "alpha must be in [0, 1]"),
    (["mix", "Walking=0", "Eating=0", "--out", "x.gif"], "all zero"),
    (["mix", "Walking:1", "--out", "x.gif"], "NAME=WEIGHT"),
    (["transition", "--action", "Walking", "--to-action", "Eating", "--transition", "10-20", "--out", "x.gif"],
     "START:END"),
    (["transition", "--action", "Walking", "--to-action", "Eating", "--transition", "10:80", "--out", "x.gif"],
     "0 <= start <= end <= 49"),
    (["interpolate", "--action", "Walking", "--to-seed", "1", "--steps", "1", "--out", "x.gif"], "steps must be"),
    (["sample-all", "--per-class", "0", "--out", "d"], "per-class must be in [1, 1000000]; got 0"),
    (["sample-all", "--per-class", "2", "--out", "all.gif"], "must be a .npz file or a directory"),
    (["sample", "--action", "Walking", "--device", "tpu", "--out", "x.gif"], "unknown device"),
    (["fly"], "invalid choice"),
])
def test_bad_arguments_exit_2_with_one_line(run, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    assert_usage_error(run(*argv), message)
    assert not any(tmp_path.iterdir())


def test_missing_checkpoint(capsys, tmp_path):
    assert main(["sample", "--action", "Walking", "--checkpoint", str(tmp_path / "no.json"),
                 "--out", str(tmp_path / "x.gif")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "checkpoint config not found" in err


def test_largest_seed_is_accepted(run, tmp_path):
    status, out, err = run("sample", "--action", "Walking", "--seed", "4294967295", "--frames", "5",
                           "--out", str(tmp_path / "last.npz"))
    assert status == 0 and err == "" and "seed 4294967295" in out
    status, out, err = run("sample-all", "--per-class", "1", "--seed", "4294967295", "--frames", "5",
                           "--out", str(tmp_path / "all.npz"))
    assert status == 0 and err == ""
    with np.load(tmp_path / "all.npz") as z:
        assert set(z["seeds"].tolist()) == {4294967295}


def test_mp4_write_failure_is_one_line(run, tmp_path):
    (tmp_path / "clip.mp4").mkdir()  # ffmpeg cannot write over a directory
    status, out, err = run("sample", "--action", "Walking", "--frames", "5", "--out", str(tmp_path / "clip.mp4"))
    assert status == 1 and out == ""
    assert err.startswith("actiongen: error: clip.mp4: ffmpeg could not write the MP4 (") and err.count("\n") == 1
    assert "FFMPEG" not in err and "-vcodec" not in err and str(tmp_path) not in err


def test_parse_mix():
    assert parse_mix("Walking=0.5, Phoning=1") == {"Walking": 0.5, "Phoning": 1.0}


def test_python_dash_m_exit_statuses(bundle_path, tmp_path):
    ok = subprocess.run([sys.executable, "-m", "actiongen", "sample", "--action", "Posing", "--frames", "8",
                         "--checkpoint", str(bundle_path), "--out", str(tmp_path / "p.mp4")],
                        cwd=ROOT, capture_output=True, text=True)
    assert ok.returncode == 0 and (tmp_path / "p.mp4").stat().st_size > 0, ok.stderr
    bad = subprocess.run([sys.executable, "-m", "actiongen", "sample", "--action", "Posing", "--frames", "5000",
                          "--checkpoint", str(bundle_path), "--out", str(tmp_path / "p.gif")],
                         cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr == ("actiongen: error: argument --frames: frames must be in [2, 1000]; got 5000 "
                          "(see `actiongen sample --help`)\n")
