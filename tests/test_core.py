"""The brain crop on drawn slices, and a tiny train -> save -> load round trip."""

from __future__ import annotations

import json
from dataclasses import replace

import cv2
import numpy as np
import pytest
from _images import brain, textured_brain, write_dataset

from preprocessing import (
    InvalidImageError,
    PreprocessConfig,
    crop_brain,
    preprocess,
    resize_square,
    square_to_crop,
    to_input,
)


def test_crop_finds_the_ellipse_bounding_box():
    image = np.zeros((300, 400), np.uint8)
    cv2.ellipse(image, (220, 140), (90, 110), 0, 0, 360, 180, -1)
    cropped = crop_brain(image)
    # Erode x2 then dilate x2 gives back the ellipse to within a pixel or two.
    assert abs(cropped.shape[0] - 221) <= 3 and abs(cropped.shape[1] - 181) <= 3
    # The ellipse reaches within two pixels of all four sides: no black margin.
    for border in (cropped[:2], cropped[-2:], cropped[:, :2], cropped[:, -2:]):
        assert border.max() == 180


def test_crop_keeps_a_tumour_blob_inside():
    rng = np.random.default_rng(1)
    image = textured_brain(rng, tumour=True)
    cropped = crop_brain(image)
    assert (cropped == 255).sum() == (image == 255).sum()


def test_crop_refuses_blank_and_speck():
    with pytest.raises(InvalidImageError, match="No brain"):
        crop_brain(np.zeros((256, 256), np.uint8))
    speck = np.zeros((256, 256), np.uint8)
    speck[100:106, 100:106] = 255
    with pytest.raises(InvalidImageError, match="No brain"):
        crop_brain(speck)


@pytest.mark.parametrize("size,channels", [(96, 1), (150, 3)])
def test_to_input_shape_and_range(size, channels):
    x = to_input(brain(), PreprocessConfig(image_size=size, channels=channels))
    assert x.shape == (size, size, channels) and x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() <= 1.0 and x.max() > 0.5


def test_a_letterboxed_crop_keeps_its_height_over_width_on_black():
    tall = np.full((120, 60), 200, np.uint8)  # twice as high as wide
    for crop, (rows, cols) in ((tall, (64, 32)), (tall.T, (32, 64))):
        square = resize_square(crop, 64, letterbox=True)
        assert square.shape == (64, 64) and square.dtype == np.uint8
        ys, xs = np.nonzero(square)
        assert (ys.max() - ys.min() + 1, xs.max() - xs.min() + 1) == (rows, cols)
        assert ys.min() + ys.max() == xs.min() + xs.max() == 63  # centred
    assert resize_square(tall, 64).min() == 200  # squashed: the crop fills the square
    # The head's intensity scaling ignores the black bars: the crop reads the same.
    cfg = PreprocessConfig(image_size=64, intensity="percentile")
    boxed = to_input(brain(), replace(cfg, letterbox=True))
    assert boxed.shape == (64, 64, 1) and boxed.max() == to_input(brain(), cfg).max()


def test_a_heat_map_goes_back_onto_the_crop_without_the_letterbox_bars():
    tall = np.full((120, 60), 200, np.uint8)
    square = resize_square(tall, 64, letterbox=True)
    heat = (square > 0).astype(np.float32)  # 1 where the crop lies, 0 on the bars
    back = square_to_crop(heat, tall.shape, letterbox=True)
    assert back.shape == tall.shape and back.min() == 1.0  # no bar in it, and all of the crop
    squashed = square_to_crop(np.ones((64, 64), np.float32), tall.shape, letterbox=False)
    assert squashed.shape == tall.shape and squashed.min() == 1.0


def test_the_crop_shape_travels_in_the_config_and_old_configs_squash():
    cfg = PreprocessConfig(image_size=64, letterbox=True)
    assert PreprocessConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    old = {k: v for k, v in cfg.to_dict().items() if k != "letterbox"}
    assert PreprocessConfig.from_dict(old).letterbox is False


@pytest.mark.parametrize("size,channels", [(96, 1), (150, 3), (45, 1)])
def test_networks_accept_any_input_size(size, channels):
    from detector.models import build_autoencoder, build_classifier

    x = np.zeros((2, size, size, channels), np.float32)
    assert build_autoencoder(size, channels)(x).shape == x.shape
    for arch in ("default", "report"):
        assert build_classifier(arch, size, channels)(x).shape == (2, 1)


def test_mirror_asymmetry_is_zero_for_a_symmetric_slice_and_marks_the_odd_side():
    from detector.models import MirrorAsymmetry

    symmetric = np.zeros((1, 8, 8, 1), np.float32)
    symmetric[0, 2:6, 1:7] = 0.5  # centred: its own mirror image
    lopsided = symmetric.copy()
    lopsided[0, 3, 1] = 1.0  # brighter on the left only
    out = MirrorAsymmetry()(np.concatenate([symmetric, lopsided])).numpy()
    assert out.shape == (2, 8, 8, 2)
    np.testing.assert_array_equal(out[..., 0], np.concatenate([symmetric, lopsided])[..., 0])
    assert not out[0, ..., 1].any()
    assert out[1, 3, 1, 1] == pytest.approx(0.5) and out[1, 3, 6, 1] == pytest.approx(-0.5)
    assert np.count_nonzero(out[1, ..., 1]) == 2


def test_mix_style_mixes_feature_statistics_while_training_only():
    from detector.models import MixStyle

    rng = np.random.default_rng(0)
    x = (rng.random((8, 6, 6, 3)) * rng.random((8, 1, 1, 3)) * 5).astype(np.float32)
    layer = MixStyle(p=1.0, seed=0)
    np.testing.assert_array_equal(layer(x, training=False), x)  # inference: unchanged
    styled = layer(x, training=True).numpy()
    mean, new_mean = x.mean(axis=(1, 2)), styled.mean(axis=(1, 2))
    assert not np.allclose(new_mean, mean, atol=1e-3)  # the style changed...
    # ...to blends of the batch's own: every new mean lies within the batch's range.
    assert (mean.min(0) - 1e-4 <= new_mean).all() and (new_mean <= mean.max(0) + 1e-4).all()
    standardised = lambda a: (a - a.mean((1, 2), keepdims=True)) / a.std((1, 2), keepdims=True)
    np.testing.assert_allclose(standardised(styled), standardised(x), atol=1e-3)  # contents kept


@pytest.mark.parametrize("arch", ["default", "report"])
def test_every_architecture_saves_loads_and_explains(arch, tmp_path):
    from _models import tiny_detector

    from detector import BrainTumorDetector

    detector = tiny_detector(40, 3 if arch == "report" else 1, arch)
    detector.save_pretrained(tmp_path)
    loaded = BrainTumorDetector.from_pretrained(tmp_path)
    assert loaded.predict(brain()).tumor_probability == detector.predict(brain()).tumor_probability
    assert loaded.explain(brain()).shape == (40, 40)


def test_preprocess_bytes_and_array_agree():
    from _images import encode

    image = brain()
    from_array = preprocess(image).x
    from_png = preprocess(encode(image)).x
    np.testing.assert_array_equal(from_array, from_png)


@pytest.mark.slow
def test_tiny_training_round_trip(tmp_path):
    """train.py end to end on drawn slices; the saved model reloads to identical outputs."""
    import train
    from detector import BrainTumorDetector

    data = tmp_path / "data"
    write_dataset(data, per_class=40, folders=("tumor", "normal"))
    out = tmp_path / "model"
    argv = ["--data", str(data), "--out", str(out), "--epochs", "2", "--ae-epochs", "1",
            "--image-size", "48", "--synthetic-tumours", "0.5", "--lesion-radius", "0.08", "0.2",
            "--fresh-lesions", "--asymmetry", "--mix-style", "--letterbox",
            "--verbose", "0"]  # fmt: skip
    assert train.main(argv) == 0

    names = {p.name for p in out.iterdir()}
    assert {"config.json", "classifier.keras", "autoencoder.keras", "README.md", "split.json"} <= names
    assert {"roc.png", "confusion.png", "accuracy_curve.png", "loss_curve.png"} <= names
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".model")]  # no staging left
    config = json.loads((out / "config.json").read_text())
    assert config["preprocessing"]["image_size"] == 48
    assert config["preprocessing"]["letterbox"] is True  # so a pulled model letterboxes too
    assert "gate_distance_threshold" not in config  # no slice of known plane: no gate
    split = json.loads((out / "split.json").read_text())
    train_tumours = sum(e["split"] == "train" and e["label"] == 1 for e in split.values())
    assert config["training"]["synthetic_tumours"] == round(0.5 * train_tumours) > 0
    assert config["training"]["lesion_radius"] == [0.08, 0.2]
    assert config["training"]["fresh_lesions"] is True
    assert config["training"]["asymmetry"] is config["training"]["mix_style"] is True
    assert 0 <= config["metrics"]["test"]["auroc"]["value"] <= 1
    assert len(split) == 80 and {e["split"] for e in split.values()} == {"train", "val", "test"}
    assert config["split"]["max_test_correlation"] < 0.95

    detector = BrainTumorDetector.from_pretrained(out)
    kinds = {type(layer).__name__ for layer in detector.classifier.layers}
    assert {"MirrorAsymmetry", "MixStyle"} <= kinds  # both loaded back with safe_mode
    files = sorted(data.glob("*/*.jpg"))[:6]
    first = [r.tumor_probability for r in detector.predict_batch(files)]
    detector.save_pretrained(tmp_path / "copy")
    again = BrainTumorDetector.from_pretrained(tmp_path / "copy")
    assert [r.tumor_probability for r in again.predict_batch(files)] == first
    # One at a time gives what the batch gave.
    assert [detector.predict(f).tumor_probability for f in files] == pytest.approx(first, abs=1e-6)
    assert detector.preprocess_config.letterbox  # read back from config.json


@pytest.mark.slow
def test_retraining_replaces_the_model_directory_whole(tmp_path, monkeypatch):
    """A crash while saving leaves the previous model untouched."""
    import train
    from detector import BrainTumorDetector

    data = tmp_path / "data"
    write_dataset(data, per_class=30)
    out = tmp_path / "model"
    out.mkdir()
    (out / "config.json").write_text('{"previous": true}')

    def crash(self, directory):
        (directory / "classifier.keras").write_text("half")
        raise OSError("disk full")

    monkeypatch.setattr(BrainTumorDetector, "_save_pretrained", crash)
    argv = ["--data", str(data), "--out", str(out), "--epochs", "1", "--ae-epochs", "1",
            "--image-size", "32", "--verbose", "0"]  # fmt: skip
    with pytest.raises(OSError, match="disk full"):
        train.main(argv)
    assert [p.name for p in out.iterdir()] == ["config.json"]
    assert json.loads((out / "config.json").read_text()) == {"previous": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "model"]  # staging removed


@pytest.mark.slow
def test_label_audit_and_exclusions(tmp_path):
    """--exclude keeps listed files out of train/val; --audit-labels publishes suspects."""
    import csv

    import train

    data = tmp_path / "data"
    write_dataset(data, per_class=30)
    # Two deliberately swapped labels: a tumour slice filed under no/ and vice versa.
    (data / "yes" / "yes0.jpg").rename(data / "no" / "swapped_yes0.jpg")
    (data / "no" / "no0.jpg").rename(data / "yes" / "swapped_no0.jpg")
    exclusions = tmp_path / "exclusions.txt"
    exclusions.write_text("# confirmed\ndata/no/swapped_yes0.jpg\n")
    out = tmp_path / "model"
    argv = ["--data", str(data), "--out", str(out), "--epochs", "1", "--ae-epochs", "1",
            "--image-size", "32", "--verbose", "0", "--exclude", str(exclusions), "--audit-labels"]  # fmt: skip
    assert train.main(argv) == 0

    config = json.loads((out / "config.json").read_text())
    assert config["training"]["excluded_from_train_val"] == ["data/no/swapped_yes0.jpg"]
    entry = [e for e in json.loads((out / "split.json").read_text()).values() if e["excluded"]]
    assert [e["file"] for e in entry] == ["data/no/swapped_yes0.jpg"]
    rows = list(csv.DictReader((out / "label_suspects.csv").open()))
    assert rows == [] or set(rows[0]) >= {"file", "given_label", "oof_p_tumor"}
    assert (out / "label_suspects.png").is_file()
    assert config["label_audit"]["suspects"] == [r["file"] for r in rows]

    exclusions.write_text("data/no/not_there.jpg\n")
    with pytest.raises(SystemExit, match="not in the dataset"):
        train.main(argv)


@pytest.mark.slow
def test_push_without_token_exits_nonzero_and_keeps_the_model(tmp_path, monkeypatch, capsys):
    """train.py --push-to-hub with no token: a login hint, exit 2, the model dir complete."""
    import train

    from huggingface_hub import constants

    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    data = tmp_path / "data"
    write_dataset(data, per_class=20)
    out = tmp_path / "model"
    argv = ["--data", str(data), "--out", str(out), "--epochs", "1", "--ae-epochs", "1",
            "--image-size", "32", "--verbose", "0", "--push-to-hub", "me/x"]  # fmt: skip
    assert train.main(argv) == 2
    assert "hf auth login" in capsys.readouterr().err
    assert {"config.json", "classifier.keras", "autoencoder.keras", "ood.npz", "README.md"} <= {
        p.name for p in out.iterdir()
    }
