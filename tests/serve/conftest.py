"""Fixtures of the explorer tests (the run is written by ``serve_helpers.write_run``)."""

from __future__ import annotations

import pytest
from serve_helpers import HOSTILE, write_run


@pytest.fixture(scope="session")
def serve_run(tmp_path_factory):
    """A hand-written 3-epoch run in a directory whose name is hostile HTML."""
    return write_run(tmp_path_factory.mktemp("runs") / HOSTILE.replace("/", "_"))


@pytest.fixture(scope="session")
def serve_app(serve_run):
    from kernelscope.serve import create_app

    return create_app([serve_run], atlas_n_null=60)


@pytest.fixture(scope="session")
def client(serve_app):
    from fastapi.testclient import TestClient

    with TestClient(serve_app) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A real (tiny) training run with checkpoints: TinyVGG, 1 epoch on 100 bundled 8x8 digits."""
    from kernelscope.train import TrainConfig, train

    config = TrainConfig(data="digits", model="tinyvgg", epochs=1, train_limit=100, n_probe=4, progress=False)
    return train(config, tmp_path_factory.mktemp("trained") / "run").path
