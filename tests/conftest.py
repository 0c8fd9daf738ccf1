"""Shared fixtures: a model directory to serve, the running app, the Br35H data.

Tests that need something missing here (data, chromium) skip locally and fail
in CI (CI=true), where everything must be present.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRETRAINED = ROOT / "pretrained"
BR35H = Path(__file__).resolve().parents[2] / "shared" / "data" / "br35h"


def require(condition: bool, reason: str) -> None:
    """Skip when `condition` is false, except in CI, where it is a failure."""
    if not condition:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI needs this: {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A random-weights model directory in the real format (fast to build, meaningless)."""
    from _models import tiny_detector

    detector = tiny_detector()
    directory = tmp_path_factory.mktemp("tiny_model")
    detector.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def app_model_dir(request) -> Path:
    """The bundled model when there is one, else the tiny one."""
    if (PRETRAINED / "config.json").is_file():
        return PRETRAINED
    return request.getfixturevalue("tiny_model_dir")


@pytest.fixture(scope="session")
def br35h_slice() -> Path:
    path = BR35H / "yes" / "y0.jpg"
    require(path.is_file(), f"Br35H data not found at {BR35H}")
    return path


@pytest.fixture(scope="session")
def app_url(app_model_dir, tmp_path_factory):
    """`python app.py --model ...` on a free port; its URL while the session lasts."""
    from benchmarks.app_bench import app_command, serving

    log_path = tmp_path_factory.mktemp("app") / "app.log"
    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(serving(app_command(app_model_dir), log_path))
        except RuntimeError as exc:  # it exited, or never served
            pytest.fail(f"{exc}:\n{log_path.read_text()[-3000:]}")
        yield server.url
