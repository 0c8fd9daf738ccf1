"""Tumour type: the type network in train.py, the detector and the benchmark; the
pointing game. Drawn slices laid out like sartaj and figshare (boxes, patients,
folds); test_bundled_model.py checks the real figures."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from _images import encode, textured_brain
from huggingface_hub import ModelCard

from detector.catalogue import TUMOR_TYPES, figshare_box
from detector.data import tumor_boxes
from detector.evaluation import pointing_game, type_metrics
from preprocessing import PreprocessConfig

# Where each drawn type's bright blob sits, so that the types differ in place as they do in life.
BLOB_PLACE = {"glioma": (0.35, 0.45), "meningioma": (0.5, 0.25), "pituitary": (0.5, 0.6)}


def typed_slice(rng, kind: str, size: int = 192) -> tuple[np.ndarray, tuple[float, ...]]:
    """A textured brain with a blob where ``kind`` puts it, and its YOLO box (cx, cy, w, h)."""
    image = textured_brain(rng, tumour=False, size=size)
    if kind == "no":
        return image, ()
    cx, cy = (np.array(BLOB_PLACE[kind]) + rng.uniform(-0.04, 0.04, 2)) * size
    radius = int(rng.integers(8, 14))
    cv2.circle(image, (int(cx), int(cy)), radius, 255, -1)
    return image, (cx / size, cy / size, 2 * radius / size, 2 * radius / size)


def _write(path, image) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode(image, "JPEG", quality=92))


@pytest.fixture(scope="module")
def typed_collections(tmp_path_factory):
    """Miniature sartaj (three types and normals) and figshare (types, boxes, patients, folds)."""
    root = tmp_path_factory.mktemp("typed")
    rng = np.random.default_rng(1)
    sartaj = root / "sartaj"
    for kind in ("glioma", "meningioma", "pituitary", "no"):
        for i in range(14):
            _write(
                sartaj / "Training" / f"{kind}_tumor" / f"image({i}).jpg", typed_slice(rng, kind)[0]
            )
    (sartaj / "views.csv").write_text("path,view\n")
    figshare = root / "figshare"
    rows, n = ["path,type,patient,cv_fold"], 0
    for kind in TUMOR_TYPES:
        for patient in range(10):
            for _ in range(2):
                n += 1
                image, box = typed_slice(rng, kind)
                _write(figshare / kind / f"{n}.jpg", image)
                (figshare / kind / f"{n}.txt").write_text(
                    "1 " + " ".join(f"{v:.4f}" for v in box) + "\n"
                )
                rows.append(f"{kind}/{n}.jpg,{kind},{kind}{patient},{patient % 5 + 1}")
    (figshare / "patients.csv").write_text("\n".join(rows) + "\n")
    # As in the real collections, sartaj holds exact copies of figshare slices.
    copy = sartaj / "Training" / "glioma_tumor" / "image(14).jpg"
    copy.write_bytes((figshare / "glioma" / "1.jpg").read_bytes())
    return root


def test_type_metrics_per_type_and_confusion():
    y = np.array([0, 0, 1, 1, 2, 2])
    p = np.eye(3)[[0, 1, 1, 1, 2, 0]]
    m = type_metrics(y, p, list(TUMOR_TYPES), n_resamples=50)
    assert m["accuracy"]["value"] == pytest.approx(4 / 6)
    assert m["per_type"]["meningioma"]["recall"]["value"] == 1.0
    assert m["per_type"]["meningioma"]["precision"]["value"] == pytest.approx(2 / 3)
    assert m["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]


def test_pointing_game_counts_peaks_inside_the_box_and_the_centre_baseline():
    maps = np.zeros((3, 8, 8))
    maps[0, 1, 1] = maps[1, 6, 6] = maps[2, 4, 4] = 1.0  # peaks at (row, col)
    boxes = np.array([[0.0, 0.0, 0.3, 0.3], [0.0, 0.0, 0.3, 0.3], [0.4, 0.4, 0.7, 0.7]])
    result = pointing_game(maps, boxes)
    assert result == {"n": 3, "hits": pytest.approx(2 / 3), "centre_baseline": pytest.approx(1 / 3)}


def test_the_card_says_how_many_networks_the_5_fold_figures_averaged():
    from benchmarks import tumor_type
    from detector.card import type_cv_table
    from detector.views import elsewhere_sentence

    fold = {
        "fold": 1,
        **type_metrics(np.array([0, 1, 2]), np.eye(3), list(TUMOR_TYPES), n_resamples=10),
    }
    results = {"recipe": {"members": 2}, "cv": [fold], "cv_summary": tumor_type.summarise([fold])}
    assert "2 networks averaged" in type_cv_table(results)
    assert "(2 networks averaged): accuracy 1.000" in elsewhere_sentence({"type_results": results})
    results["recipe"] = {"members": 2, "ensemble": "snapshots"}
    assert "2 snapshots of one fit averaged" in type_cv_table(results)
    results["recipe"] = {}  # measured before the recipe recorded it: one network
    assert "one network" in type_cv_table(results)


def test_a_figshare_box_is_mapped_into_the_brain_crop(tmp_path):
    image = np.zeros((200, 200), np.uint8)
    image[50:150, 40:140] = 150  # the "brain": x 40..139, y 50..149
    path = tmp_path / "figshare" / "glioma" / "7.jpg"
    _write(path, image)
    path.with_suffix(".txt").write_text("1 0.45 0.5 0.1 0.2\n")  # x 80..100, y 80..120 in pixels
    assert figshare_box(path) == pytest.approx((0.4, 0.4, 0.5, 0.6))
    box = tumor_boxes(["figshare/glioma/7.jpg"], [tmp_path / "figshare"], PreprocessConfig())[0]
    assert box == pytest.approx([0.4, 0.3, 0.6, 0.7], abs=0.03)


def test_a_figshare_box_follows_the_crop_into_its_letterbox(tmp_path):
    image = np.zeros((200, 200), np.uint8)
    image[50:150, 40:90] = 150  # the "brain": twice as high as wide, x 40..89, y 50..149
    path = tmp_path / "figshare" / "glioma" / "7.jpg"
    _write(path, image)
    path.with_suffix(".txt").write_text("1 0.3 0.5 0.1 0.2\n")  # x 50..70, y 80..120 in pixels
    cfg = PreprocessConfig(image_size=64, letterbox=True)
    box = tumor_boxes(["figshare/glioma/7.jpg"], [tmp_path / "figshare"], cfg)[0]
    # In the crop x 0.2..0.6, y 0.3..0.7; the crop fills the square's middle half across.
    assert box == pytest.approx([0.25 + 0.2 / 2, 0.3, 0.25 + 0.6 / 2, 0.7], abs=0.03)


# Two type networks, as the bundled model has (the recipe fits one: its 30 minutes).
TYPED_MODEL_ARGS = ["--epochs", "2", "--type-epochs", "2", "--type-members", "2", "--ae-epochs", "1",
                    "--image-size", "48", "--type-image-size", "56", "--verbose", "0"]  # fmt: skip


@pytest.fixture(scope="module")
def typed_model(typed_collections, tmp_path_factory):
    """A model directory train.py made of the miniature sartaj and figshare."""
    import train

    out = tmp_path_factory.mktemp("typed-model") / "model"
    data = [str(typed_collections / "sartaj"), str(typed_collections / "figshare")]
    assert train.main(["--data", *data, "--out", str(out), *TYPED_MODEL_ARGS]) == 0
    return out


@pytest.mark.slow
def test_train_ships_a_type_network_that_names_the_type_of_tumours_only(
    typed_collections, typed_model
):
    from detector import BrainTumorDetector

    out = typed_model
    assert (out / "type_classifier.keras").is_file() and (out / "type_confusion.png").is_file()
    config = json.loads((out / "config.json").read_text())
    assert config["tumor_types"] == list(TUMOR_TYPES)
    # Each network its own augmentation (the README's measurements): the type network's geometric only.
    training = config["training"]
    assert (training["augment"], training["type_augment"]) == ("full", "geometric")
    # Where the fit's time went, network by network (the 30-minute budget).
    seconds = training["seconds_by_network"]
    assert set(seconds) == {"type_network", "detector", "autoencoder"}  # no known planes: no gate
    assert sum(seconds.values()) <= training["fit_seconds"] + len(seconds)  # rounded each
    split = json.loads((out / "split.json").read_text())
    typed_test = [e for e in split.values() if e["split"] == "test" and e["label"] == 1]
    figures = config["metrics"]["type_test"]
    assert figures["n"] == len(typed_test) and np.sum(figures["confusion"]) == len(typed_test)
    boxed = sum(e["collection"] == "figshare" for e in typed_test)
    for network in ("classifier", "type_classifier"):
        game = config["metrics"]["pointing_game"][network]
        assert game["n"] == boxed and 0 <= game["hits"] <= 1
    assert "Tumour type" in (out / "README.md").read_text()
    card = ModelCard.load(out / "README.md")  # the model-index: detection, then type, apart
    type_results = {
        r.metric_type: r.metric_value for r in card.data.eval_results if "type" in r.task_name
    }
    assert type_results == pytest.approx(
        {"accuracy": figures["accuracy"]["value"], "macro_f1": figures["macro_f1"]["value"]},
        abs=1e-4,
    )

    detector = BrainTumorDetector.from_pretrained(out)
    files = (
        sorted((typed_collections / "figshare").rglob("*.jpg"))[:4]
        + sorted((typed_collections / "sartaj").rglob("no_tumor/*.jpg"))[:4]
    )
    for prediction in detector.predict_batch(files):
        if prediction.label == "tumor":
            assert prediction.tumor_type == max(
                prediction.type_probabilities, key=prediction.type_probabilities.get
            )
            assert sum(prediction.type_probabilities.values()) == pytest.approx(1, abs=1e-4)
        else:
            assert prediction.tumor_type is None and prediction.type_probabilities == {}
    assert config["type_image_size"] == detector.type_config.image_size == 56
    x = np.random.default_rng(0).random((2, 56, 56, 1)).astype(np.float32)
    assert detector.type_probabilities(x).shape == (2, 3)
    heat = detector.heat_maps(x, "type_classifier")
    assert heat.shape == (2, 56, 56) and 0 <= heat.min() and heat.max() <= 1


@pytest.mark.slow
def test_the_type_network_is_two_networks_averaged_saved_as_one(typed_model):
    from detector import BrainTumorDetector
    from detector.models import members_of

    config = json.loads((typed_model / "config.json").read_text())
    training = config["training"]
    assert (training["type_members"], training["type_ensemble"]) == (2, "seeds")
    made = "2 of them, of consecutive seeds, their probabilities averaged"
    assert made in " ".join(
        (typed_model / "README.md").read_text().split()
    )  # the card
    val = config["metrics"]["type_val"]  # the ensemble against each network alone, on val
    assert len(val["member_accuracy"]) == 2 and 0 <= val["accuracy"] <= 1
    network = BrainTumorDetector.from_pretrained(typed_model).type_classifier
    members = members_of(network)
    assert len(members) == 2
    x = np.random.default_rng(0).random((4, 56, 56, 1)).astype(np.float32)
    each = [member.predict(x, verbose=0) for member in members]
    assert not np.allclose(each[0], each[1])  # two seeds, two networks
    np.testing.assert_allclose(network.predict(x, verbose=0), np.mean(each, axis=0), atol=1e-6)


def test_a_snapshot_ensemble_keeps_each_cycles_best_val_epoch():
    from detector.training import BestEpochPerCycle

    class Weights:  # a model whose weights are the epoch they were read at
        epoch = 0

        def get_weights(self):
            return [self.epoch]

    keep = BestEpochPerCycle(cycle=3)
    keep.set_model(Weights())
    for epoch, loss in enumerate([0.9, 0.5, 0.7, 0.8, 0.6, 0.4]):
        keep.model.epoch = epoch
        keep.on_epoch_end(epoch, {"val_loss": loss})
    # Epoch 1 is the first cycle's best; the second starts afresh, though 0.6 > 0.5.
    assert keep.weights == [[1], [5]]


def test_an_odd_number_of_epochs_for_two_snapshots_is_refused_before_any_work(tmp_path):
    import train
    from benchmarks import tumor_type

    snapshots = ["--type-members", "2", "--type-ensemble", "snapshots"]
    with pytest.raises(SystemExit, match="equal cycles"):  # before decoding a slice
        train.main(["--data", str(tmp_path), "--out", str(tmp_path / "m"), *snapshots, "--type-epochs", "3"])
    with pytest.raises(SystemExit, match="equal cycles"):
        tumor_type.main(["--data", str(tmp_path), "--out", str(tmp_path / "t.json"), "--members", "2",
                         "--ensemble", "snapshots", "--epochs", "3"])  # fmt: skip
    assert not (tmp_path / "m").exists()


def test_snapshots_come_from_one_fit_whose_learning_rate_restarts():
    import keras

    from detector.models import build_type_classifier, members_of
    from detector.training import fit_type_classifier

    optimizer = build_type_classifier(16, 1, 3, steps=100, cycles=2).optimizer
    rate = keras.optimizers.schedules.deserialize(optimizer.get_config()["learning_rate"])
    assert float(rate(49)) < 1e-4 < float(rate(50)) == pytest.approx(2e-3)  # a restart at 50
    rng = np.random.default_rng(0)
    x, y = rng.random((64, 16, 16, 1), dtype=np.float32), rng.integers(0, 3, 64)
    fit = {"classes": 3, "batch_size": 32, "seed": 0, "augment": "none", "verbose": 0}
    network, histories = fit_type_classifier(
        (x, y), (x[:16], y[:16]), epochs=4, members=2, ensemble="snapshots", **fit
    )
    members = members_of(network)
    assert len(members) == 2 and [len(h["val_loss"]) for h in histories] == [2, 2]
    each = [member.predict(x[:4], verbose=0) for member in members]
    assert not np.allclose(each[0], each[1])  # two cycles' snapshots, not one network twice
    np.testing.assert_allclose(network.predict(x[:4], verbose=0), np.mean(each, axis=0), atol=1e-6)
    with pytest.raises(ValueError, match="equal cycles"):
        fit_type_classifier((x, y), (x, y), epochs=5, members=2, ensemble="snapshots", **fit)


def model_to_refit(typed_collections, typed_model, tmp_path) -> tuple[Path, list[str]]:
    """A copy of typed_model to refit a network into, and a refit script's options for it."""
    import shutil

    model = tmp_path / "model"
    shutil.copytree(typed_model, model)
    data = [str(typed_collections / "sartaj"), str(typed_collections / "figshare")]
    return model, ["--data", *data, "--into", str(model), "--verbose", "0"]


@pytest.mark.slow
def test_the_type_network_is_refitted_into_a_model_alone(typed_collections, typed_model, tmp_path):
    from benchmarks import tumor_type, type_network
    from detector import BrainTumorDetector
    from detector.models import members_of

    model, common = model_to_refit(typed_collections, typed_model, tmp_path)
    before = json.loads((model / "config.json").read_text())
    with pytest.raises(SystemExit, match="not the model's split"):  # another seed, another split
        type_network.main([*common, "--seed", "3", "--dry-run"])
    fold = {
        "fold": 1,
        **type_metrics(np.array([0, 1, 2]), np.eye(3), list(TUMOR_TYPES), n_resamples=10),
    }
    results = {
        "recipe": {},
        "published": {},
        "cv": [fold],
        "cv_summary": tumor_type.summarise([fold]),
    }
    (tmp_path / "type.json").write_text(json.dumps(results))
    assert (
        type_network.main(
            [*common, "--type-members", "1", "--type-results", str(tmp_path / "type.json")]
        )
        == 0
    )
    after = json.loads((model / "config.json").read_text())
    assert len(members_of(BrainTumorDetector.from_pretrained(model).type_classifier)) == 1
    assert after["training"]["type_members"] == 1 and after["training"]["type_refit_seconds"] >= 0
    assert len(after["metrics"]["type_val"]["member_accuracy"]) == 1
    assert after["type_results"] == json.loads((tmp_path / "type.json").read_text())  # for the card
    # The type figures are the new network's, of the same test tumours; the detector's stay.
    assert after["metrics"]["type_test"]["n"] == before["metrics"]["type_test"]["n"]
    assert after["metrics"]["test"] == before["metrics"]["test"]
    x = np.random.default_rng(0).random((2, 48, 48, 1)).astype(np.float32)
    kept, first = (BrainTumorDetector.from_pretrained(d).classifier for d in (model, typed_model))
    np.testing.assert_allclose(kept.predict(x, verbose=0), first.predict(x, verbose=0))


@pytest.mark.slow
def test_the_report_network_stays_binary(typed_collections, tmp_path):
    import train

    out = tmp_path / "report"
    argv = ["--data", str(typed_collections / "figshare"), str(typed_collections / "sartaj"),
            "--arch", "report", "--out", str(out), "--epochs", "1", "--ae-epochs", "1",
            "--image-size", "32", "--verbose", "0"]  # fmt: skip
    assert train.main(argv) == 0
    assert not (out / "type_classifier.keras").exists()
    assert json.loads((out / "config.json").read_text())["tumor_types"] == []


@pytest.mark.slow
def test_cross_validation_follows_figshare_folds_and_patients(typed_collections, tmp_path):
    from benchmarks import tumor_type

    out = tmp_path / "type.json"
    data = [str(typed_collections / "figshare"), str(typed_collections / "sartaj")]
    argv = ["--data", *data, "--out", str(out), "--folds", "1", "2", "--epochs", "2", "--image-size", "32"]  # fmt: skip
    assert tumor_type.main(argv) == 0
    results = json.loads(out.read_text())
    assert results["recipe"]["augment"] == "geometric"  # the bundled type network's, by default
    # Each fold tests its own patients' slices: 3 types x 2 patients x 2 slices.
    assert [fold["n"] for fold in results["cv"]] == [12, 12]
    assert all(
        0 <= fold["val_accuracy"] <= 1 for fold in results["cv"]
    )  # what a recipe is chosen on
    assert set(results["cv_summary"]) == {
        "accuracy",
        "macro_f1",
        *(f"recall {t}" for t in TUMOR_TYPES),
    }
    # sartaj's tumours here are no copies of figshare's: all are tested.
    assert results["cross_collection"]["sartaj <- figshare"]["n"] == 3 * 14  # not the copy
    assert results["cross_collection"]["figshare <- sartaj"]["n"] == 60


@pytest.mark.slow
def test_cross_validation_averages_members_and_may_train_on_sartaj_too(typed_collections, tmp_path):
    from benchmarks import tumor_type

    data = [str(typed_collections / "figshare"), str(typed_collections / "sartaj")]
    common = ["--data", *data, "--folds", "1", "--epochs", "2", "--image-size", "32", "--no-cross"]
    assert tumor_type.main([*common, "--out", str(tmp_path / "one.json"), "--members", "1"]) == 0
    argv = [*common, "--out", str(tmp_path / "two.json"), "--members", "2", "--with-sartaj"]
    assert tumor_type.main(argv) == 0
    one, two = (json.loads((tmp_path / f"{n}.json").read_text())["cv"][0] for n in ("one", "two"))
    assert len(one["member_accuracy"]) == 1 and len(two["member_accuracy"]) == 2
    # sartaj's 42 tumours train (and val) too; the fold still tests figshare's patients only.
    assert one["n"] == two["n"] == 12
    assert 0 < two["train_slices"] - one["train_slices"] <= 42


@pytest.mark.slow
def test_the_detector_is_refitted_into_a_model_alone(typed_collections, typed_model, tmp_path):
    from benchmarks import detector_network
    from detector import BrainTumorDetector

    model, common = model_to_refit(typed_collections, typed_model, tmp_path)
    common += ["--epochs", "2"]
    before = json.loads((model / "config.json").read_text())
    exclusions = tmp_path / "exclude.txt"
    exclusions.write_text("sartaj/Training/no_tumor/image(0).jpg\n")  # the model left none out
    with pytest.raises(SystemExit, match="other slices out"):
        detector_network.main([*common, "--exclude", str(exclusions), "--dry-run"])
    assert detector_network.main(common) == 0

    after = json.loads((model / "config.json").read_text())
    assert after["training"]["detector_refit_seconds"] >= 0 and after["training"]["epochs"] <= 2
    assert after["training"]["asymmetry"] is after["training"]["mix_style"] is False  # the recipe's
    assert "benchmarks/detector_network.py" in (model / "README.md").read_text()  # the card says so
    # The detector's test figures are read again, of the same test slices; the type network's stay.
    subgroups = [config["metrics"]["test_by_subgroup"].keys() for config in (after, before)]
    assert subgroups[0] == subgroups[1]
    assert after["metrics"]["answers_test"]["n"] == before["metrics"]["answers_test"]["n"]
    assert after["metrics"]["type_test"] == before["metrics"]["type_test"]
    refitted, first = (BrainTumorDetector.from_pretrained(d) for d in (model, typed_model))
    x = np.random.default_rng(0).random((2, 48, 48, 1)).astype(np.float32)
    p_refitted, p_first = (d.classifier.predict(x, verbose=0) for d in (refitted, first))
    assert not np.allclose(p_refitted, p_first)
    np.testing.assert_allclose(
        refitted.autoencoder.predict(x, verbose=0), first.autoencoder.predict(x, verbose=0)
    )
    x_type = np.random.default_rng(0).random((2, 56, 56, 1)).astype(np.float32)
    np.testing.assert_allclose(refitted.type_probabilities(x_type), first.type_probabilities(x_type))
