"""Shared fixtures: a model directory to serve, the running app, the Br35H data.

Tests that need something missing here (data, chromium) skip locally and fail
in CI (CI=true), where everything must be present.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRETRAINED = ROOT / "pretrained"
BR35H = Path(__file__).resolve().parents[2] / "shared" / "data" / "br35h"
APP_START_TIMEOUT_S = 180


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
    port = _free_port()
    log_path = tmp_path_factory.mktemp("app") / "app.log"
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port)}
    env.pop("MODEL_ID", None)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "app.py", "--model", str(app_model_dir)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_until_serving(url, process, log_path)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_serving(url: str, process: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + APP_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"app.py exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:  # not listening yet
            time.sleep(0.5)
    pytest.fail(
        f"app.py did not serve within {APP_START_TIMEOUT_S} s:\n{log_path.read_text()[-3000:]}"
    )
