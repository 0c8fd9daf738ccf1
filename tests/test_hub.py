"""Publishing and Hub loading, tested at the network boundary (no real Hub).

HfApi.create_repo / HfApi.upload_folder and hf_hub_download are replaced by
fakes that record what would have gone over the wire.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import HfApi, ModelCard, constants

from detector import BrainTumorDetector
from detector.card import render_model_card
from detector.detector import MODEL_FILES, OPTIONAL_FILES
from detector.hub import ModelDownloadError, PublishError
from detector.publish import push_model_dir

ROOT = Path(__file__).resolve().parent.parent
SECRET = "hf_TESTtokenNEVERprinted0123456789"
SIZE = 32  # tiny networks: the tests exercise files, not accuracy


def _metric(value, low, high):
    return {"value": value, "ci95": [low, high]}


CONFIG = {
    "format_version": 1,
    "arch": "default",
    "labels": {"0": "normal", "1": "tumor"},
    "preprocessing": {"image_size": SIZE, "channels": 1},
    "decision_threshold": 0.5,
    "inconclusive_band": [0.4, 0.6],
    "temperature": 1.3,
    "anomaly_ratio_threshold": 1.2,
    "metrics": {
        "test": {
            "n": 600,
            "accuracy": _metric(0.95333, 0.936, 0.968),
            "auroc": _metric(0.98712, 0.979, 0.993),
            "sensitivity": _metric(0.96, 0.94, 0.98),
            "specificity": _metric(0.94667, 0.92, 0.965),
        },
        "ece_test": 0.03,
        "inconclusive_rate_test": 0.05,
        "autoencoder_test_auroc": 0.6,
    },
    "split": {
        "method": "cluster",
        "threshold": 0.95,
        "clusters": 790,
        "train": 2100,
        "val": 300,
        "test": 600,
    },
    "label_audit": {"suspects": ["no/no26.jpg", "yes/y1485.jpg"]},
}
ASSETS = {"roc.png": b"\x89PNG fake", "loss_curve.png": b"\x89PNG fake", "split.json": b"{}\n"}
EXPECTED_MESSAGE = (
    "Upload brain-tumour detector: test accuracy 0.953 [0.936, 0.968], "
    "AUROC 0.987, sensitivity 0.960, specificity 0.947"
)


def _tiny_detector() -> BrainTumorDetector:
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 1))
    x = keras.layers.Conv2D(2, 3, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    classifier = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))
    autoencoder = keras.Model(
        inputs, keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")(inputs)
    )
    return BrainTumorDetector(classifier, autoencoder, json.loads(json.dumps(CONFIG)), dict(ASSETS))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("model")
    _tiny_detector().save_pretrained(directory)
    return directory


@pytest.fixture
def fake_hub(monkeypatch):
    """Record create_repo / upload_folder calls instead of sending them."""
    calls = {}

    def create_repo(self, repo_id, **kwargs):
        calls["create_repo"] = {"repo_id": repo_id, "token": self.token, **kwargs}
        return type("RepoUrl", (), {"repo_id": repo_id})()

    def upload_folder(self, *, repo_id, folder_path, commit_message, **kwargs):
        folder = Path(folder_path)
        calls["upload_folder"] = {
            "repo_id": repo_id,
            "token": self.token,
            "commit_message": commit_message,
            "files": {p.name: p.read_bytes() for p in folder.iterdir()},
        }
        return f"https://huggingface.co/{repo_id}/commit/0123abc"

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    return calls


@pytest.fixture
def no_token(monkeypatch, tmp_path):
    """No token anywhere: not in the environment, not in the login cache."""
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    return tmp_path / "no-token"


def _listing(directory: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in sorted(directory.iterdir())}


# ---------------------------------------------------------------- the card
def test_card_metadata_and_model_index_match_config(model_dir):
    card = ModelCard.load(model_dir / "README.md")
    config = json.loads((model_dir / "config.json").read_text())
    assert card.data.library_name == "keras"
    assert card.data.pipeline_tag == "image-classification"
    assert card.data.license == "mit"
    assert {"medical-imaging", "mri", "brain-tumor"} <= set(card.data.tags)

    published = {r.metric_type: r.metric_value for r in card.data.eval_results}
    expected = {
        k: config["metrics"]["test"][k]["value"]
        for k in ("accuracy", "auroc", "sensitivity", "specificity")
    }
    assert published == pytest.approx(expected, abs=1e-4)
    assert {r.dataset_split for r in card.data.eval_results} == {"test"}


def test_card_text_has_results_caveats_and_only_present_plots(model_dir):
    text = (model_dir / "README.md").read_text()
    assert "not for clinical use" in text
    assert "0.953 [0.936, 0.968]" in text  # value and bootstrap interval
    assert "no/no26.jpg" in text  # label-audit suspects
    assert "](roc.png)" in text and "](loss_curve.png)" in text
    assert "confusion.png" not in text and "reliability.png" not in text  # not in assets


def test_card_shows_baselines_beside_this_model():
    config = json.loads(json.dumps(CONFIG))
    report_test = {"n": 600, "accuracy": _metric(0.867, 0.84, 0.89)}
    config["baselines"] = [
        {
            "name": "report",
            "arch": "report",
            "split": "cluster",
            "same_test_set": True,
            "test": report_test,
        }
    ]
    text = render_model_card(config, {})
    assert "| Metric | This model | Report's CNN (`report`), same test set |" in text
    assert "| Accuracy | 0.953 [0.936, 0.968] | 0.867 [0.840, 0.890] |" in text
    assert "| AUROC | 0.987 [0.979, 0.993] | not evaluated |" in text


def test_card_shows_the_plane_gates_targets_with_each_check_it_adds():
    def targets(*rates):
        names = ("sagittal and coronal MRI flagged >= 95%", "axial MRI flagged <= 3%")
        return [{"target": t, "n": 100, "rate": r} for t, r in zip(names, rates)]

    config = json.loads(json.dumps(CONFIG))
    gate = {"targets": targets(0.9, 0.02)}  # a gate measured before the feature distance
    config["metrics"]["plane_gate"] = gate
    older = render_model_card(config, {})
    assert "| sagittal and coronal MRI flagged ≥ 95% | 100 | 90.0% |" in older
    gate["with_distance"] = {"targets": targets(0.95, 0.025)}
    gate["whole_detector"] = {"targets": targets(0.96, 0.05)}
    text = render_model_card(config, {})
    columns = "the gate's verdict | ... or its feature distance | the whole detector"
    assert f"| target | n | {columns} |" in text
    assert "| axial MRI flagged ≤ 3% | 100 | 2.0% | 2.5% | 5.0% |" in text


def test_card_renders_for_an_unevaluated_model():
    text = render_model_card({"preprocessing": {"image_size": 96, "channels": 1}}, {})
    card = ModelCard(text)  # still valid Hub metadata
    assert card.data.library_name == "keras"
    assert not card.data.eval_results and "model-index" not in text
    assert "not evaluated" in text
    assert render_model_card({}, {})  # even an empty config renders


# ----------------------------------------------------------------- pushing
def test_push_uploads_the_model_directory_with_metrics_in_message(
    model_dir, fake_hub, monkeypatch, capsys
):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    url = push_model_dir(model_dir, "me/brain-tumor", private=True)

    assert url == "https://huggingface.co/me/brain-tumor/commit/0123abc"
    assert fake_hub["create_repo"]["repo_id"] == "me/brain-tumor"
    assert fake_hub["create_repo"]["private"] is True
    upload = fake_hub["upload_folder"]
    assert upload["token"] == SECRET
    assert upload["commit_message"] == EXPECTED_MESSAGE
    # Exactly the files of the model directory; documents byte for byte.
    assert set(upload["files"]) == set(os.listdir(model_dir))
    for name in ("config.json", "README.md", *ASSETS):
        assert upload["files"][name] == (model_dir / name).read_bytes(), name
    out, err = capsys.readouterr()
    assert SECRET not in out + err


def test_push_a_detector_object_with_the_login_cache_token(fake_hub, no_token):
    no_token.write_text(SECRET)  # what `hf auth login` leaves behind
    push_model_dir(_tiny_detector(), "me/brain-tumor")
    assert fake_hub["upload_folder"]["token"] == SECRET
    assert set(fake_hub["upload_folder"]["files"]) == {*MODEL_FILES, *ASSETS, "README.md"}


def test_push_without_token_says_how_to_log_in(model_dir, fake_hub, no_token, capsys):
    before = _listing(model_dir)
    with pytest.raises(PublishError) as error:
        push_model_dir(model_dir, "me/brain-tumor")
    assert "hf auth login" in str(error.value) and "HF_TOKEN" in str(error.value)
    assert not fake_hub  # nothing reached the Hub
    assert _listing(model_dir) == before


def test_push_with_no_network_is_a_publish_error(model_dir, monkeypatch, capsys):
    # A real connection attempt, to a local port nobody listens on.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    before = _listing(model_dir)

    with pytest.raises(PublishError, match="Could not reach the Hugging Face Hub") as error:
        push_model_dir(model_dir, "me/brain-tumor", token=SECRET)

    assert SECRET not in str(error.value)
    out, err = capsys.readouterr()
    assert SECRET not in out + err
    assert _listing(model_dir) == before


def test_push_refused_by_the_hub_names_the_login(model_dir, monkeypatch):
    """A local HTTP server plays a Hub that rejects the token (HTTP 401)."""
    seen_tokens = []

    class Hub401(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            seen_tokens.append(self.headers.get("authorization"))
            body = b'{"error": "Invalid credentials in Authorization header"}'
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # keep the test output quiet
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Hub401)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    try:
        with pytest.raises(PublishError, match=r"HTTP 401.*hf auth login") as error:
            push_model_dir(model_dir, "me/brain-tumor", token=SECRET)
    finally:
        server.shutdown()
    assert seen_tokens == [f"Bearer {SECRET}"]  # the token was sent to the Hub ...
    assert SECRET not in str(error.value)  # ... and never shown


def test_push_in_offline_mode_is_a_publish_error(model_dir, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(PublishError, match="HF_HUB_OFFLINE"):
        push_model_dir(model_dir, "me/brain-tumor", token=SECRET)


# ----------------------------------------------------------------- loading
def test_from_pretrained_reads_a_hub_snapshot(model_dir, tmp_path, monkeypatch):
    """Only the model files (and the optional plane gate) are fetched, each at the requested revision."""
    import huggingface_hub.hub_mixin

    import detector.detector

    snapshot = tmp_path / "snapshots" / "abc123"
    shutil.copytree(model_dir, snapshot)
    requests = []

    def fake_download(repo_id, filename, *, revision=None, **kwargs):
        requests.append((repo_id, filename, revision))
        return str(snapshot / filename)

    # The mixin fetches config.json itself, then _from_pretrained fetches the rest.
    monkeypatch.setattr(huggingface_hub.hub_mixin, "hf_hub_download", fake_download)
    monkeypatch.setattr(detector.detector, "hf_hub_download", fake_download)

    loaded = BrainTumorDetector.from_pretrained("me/brain-tumor", revision="abc123")

    assert {filename for _, filename, _ in requests} == {*MODEL_FILES, *OPTIONAL_FILES}
    assert {(repo, revision) for repo, _, revision in requests} == {("me/brain-tumor", "abc123")}
    assert loaded.config == json.loads((model_dir / "config.json").read_text())
    x = np.random.default_rng(0).random((2, SIZE, SIZE, 1), np.float32)
    original = BrainTumorDetector.from_pretrained(model_dir)
    np.testing.assert_allclose(
        loaded.predict_arrays(x)[0], original.predict_arrays(x)[0], rtol=1e-6
    )


def test_offline_with_empty_cache_gives_a_readable_error(tmp_path):
    """HF_HUB_OFFLINE is read at import time, so this runs in a fresh interpreter."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "empty-hf-home"), PYTHONPATH=str(ROOT))
    code = (
        "from detector import BrainTumorDetector\n"
        "BrainTumorDetector.from_pretrained('me/brain-tumor', revision='v1')"
    )
    command = [sys.executable, "-c", code]
    result = subprocess.run(
        command, check=False, env=env, cwd=tmp_path, capture_output=True, text=True
    )

    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith(
        "detector.hub.ModelDownloadError: Could not load me/brain-tumor (revision 'v1')"
    )
    assert "HF_HUB_OFFLINE=1" in last_line and "not in the local cache" in last_line


def test_a_missing_local_path_is_not_mistaken_for_a_repo():
    with pytest.raises(ModelDownloadError, match="neither a model directory on this machine"):
        BrainTumorDetector.from_pretrained("runs/does/not/exist")
