import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from actiongen.data import DataConfig, load_pose_data
from synthetic_h36m import write_archive, write_random_bundle

REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "h36m"


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """Training entry points set torch's thread count for their process (--threads); called in-process by a
    test, they would leave every later test on it, and results can differ by thread count (a later test that
    compares a clip with one from a fresh process failed that way)."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """A small synthetic archive: subjects 1 and 5 (train) and 11 (test), all 10 actions, 2 takes each."""
    return write_archive(tmp_path_factory.mktemp("h36m"))


@pytest.fixture(scope="session")
def synthetic_config(synthetic_root, tmp_path_factory) -> DataConfig:
    return DataConfig(root=str(synthetic_root), train_subjects=(1, 5), test_subjects=(11,),
                      cache_dir=str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def synthetic_data(synthetic_config):
    return load_pose_data(synthetic_config)


@pytest.fixture(scope="session")
def synthetic_data_3d(synthetic_config):
    """The synthetic archive as 3D world-frame poses."""
    return load_pose_data(replace(synthetic_config, dims=3))


@pytest.fixture(scope="session")
def random_bundle_path(synthetic_data, tmp_path_factory) -> Path:
    """A randomly initialised model bundle with the synthetic data's statistics."""
    return write_random_bundle(tmp_path_factory.mktemp("model") / "m.json", synthetic_data.stats)


@pytest.fixture(scope="session")
def random_bundle_3d_path(synthetic_data_3d, tmp_path_factory) -> Path:
    """A randomly initialised 3D model bundle with the synthetic 3D data's statistics."""
    return write_random_bundle(tmp_path_factory.mktemp("model3d") / "m.json", synthetic_data_3d.stats)


@pytest.fixture(scope="session")
def real_root() -> Path:
    if not (REAL_DATA / "cameras.h5").is_file():
        pytest.skip(f"real Human3.6M data not found at {REAL_DATA}")
    return REAL_DATA
