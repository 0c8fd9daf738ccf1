"""Several collections as one dataset: labels from each layout, groups, held-out splits.

Drawn slices laid out like the real collections (../shared/data/README.md),
so that the rules are checked on every machine; test_bundled_model.py checks
them on the real files.
"""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
from _images import encode, textured_brain, write_dataset
from conftest import require

from detector.catalogue import catalogue
from detector.data import load_slices
from preprocessing import PreprocessConfig, scale_intensity

CFG = PreprocessConfig(image_size=32)


def _write(path, image) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode(image, "JPEG", quality=92))


@pytest.fixture
def collections(tmp_path):
    """Miniature br35h, sartaj, figshare and ms folders; figshare/1 is a copy of a sartaj slice."""
    rng = np.random.default_rng(0)
    write_dataset(tmp_path / "br35h", per_class=10)
    sartaj = tmp_path / "sartaj"
    for kind in ("glioma_tumor", "no_tumor"):
        for i in range(6):
            _write(
                sartaj / "Training" / kind / f"image({i}).jpg",
                textured_brain(rng, kind != "no_tumor"),
            )
    (sartaj / "views.csv").write_text(
        "path,view\nTraining/no_tumor/image(0).jpg,ct\nTraining/no_tumor/image(1).jpg,axial\n"
        "Training/glioma_tumor/image(2).jpg,sagittal-or-coronal\n"
    )
    figshare = tmp_path / "figshare"
    rows = ["path,type,patient,cv_fold"]
    for n in range(1, 9):
        _write(figshare / "meningioma" / f"{n}.jpg", textured_brain(rng, True))
        (figshare / "meningioma" / f"{n}.txt").write_text("1 0.5 0.5 0.3 0.3\n")  # tumour box
        rows.append(f"meningioma/{n}.jpg,meningioma,{100 + n // 3},1")
    shutil.copy(
        sartaj / "Training" / "glioma_tumor" / "image(3).jpg", figshare / "meningioma" / "1.jpg"
    )
    (figshare / "patients.csv").write_text("\n".join(rows) + "\n")
    ms = tmp_path / "ms"
    rows = ["path,patient,study,sequence,plane,skull_stripped"]
    for i in range(10):
        plane = ("axial", "sagittal")[i % 2]
        _write(ms / plane / f"p{i % 5}_{i}.jpg", textured_brain(rng, False))
        rows.append(f"{plane}/p{i % 5}_{i}.jpg,patient{i % 5},study1,FLAIR,{plane},yes")
    (ms / "slices.csv").write_text("\n".join(rows) + "\n")
    return tmp_path


def test_each_collection_layout_gives_labels_types_planes_and_patients(collections):
    entries = {
        e.name: e for c in ("br35h", "sartaj", "figshare", "ms") for e in catalogue(collections / c)
    }
    assert entries["br35h/yes/yes0.jpg"].label == 1 and entries["br35h/no/no0.jpg"].label == 0
    # sartaj: type from the folder; the CT of views.csv is not a labelled MRI.
    assert "sartaj/Training/no_tumor/image(0).jpg" not in entries
    assert entries["sartaj/Training/no_tumor/image(1).jpg"].plane == "axial"
    glioma = entries["sartaj/Training/glioma_tumor/image(2).jpg"]
    assert (glioma.label, glioma.tumor_type, glioma.plane) == (1, "glioma", "sagittal-or-coronal")
    meningioma = entries["figshare/meningioma/4.jpg"]
    assert (meningioma.label, meningioma.tumor_type, meningioma.patient) == (1, "meningioma", "101")
    sagittal = entries["ms/sagittal/p1_1.jpg"]
    assert (sagittal.label, sagittal.plane, sagittal.patient) == (0, "sagittal", "patient1")


def test_unknown_folders_are_refused(tmp_path):
    write_dataset(tmp_path, per_class=2, folders=("cats", "dogs"))
    with pytest.raises(ValueError, match="class folders"):
        catalogue(tmp_path)


def test_groups_join_patients_and_copies_across_collections(collections):
    roots = [collections / c for c in ("br35h", "sartaj", "figshare", "ms")]
    slices = load_slices(roots, CFG)
    groups = dict(zip(slices.names, slices.clusters()))
    # figshare patient 100 holds slices 1 and 2; slice 1 is a copy of a sartaj slice.
    assert groups["figshare/meningioma/1.jpg"] == groups["figshare/meningioma/2.jpg"]
    assert (
        groups["figshare/meningioma/1.jpg"] == groups["sartaj/Training/glioma_tumor/image(3).jpg"]
    )
    assert groups["figshare/meningioma/2.jpg"] != groups["figshare/meningioma/3.jpg"]  # patient 101
    assert groups["ms/axial/p0_0.jpg"] == groups["ms/sagittal/p0_5.jpg"]
    assert groups["ms/axial/p0_0.jpg"] != groups["ms/sagittal/p1_1.jpg"]


def test_look_alike_slices_of_different_patients_stay_apart(collections):
    """Registered heads of two people can correlate >= 0.95: that is no copy."""
    ms = collections / "ms"
    shutil.copy(ms / "axial" / "p0_0.jpg", ms / "sagittal" / "p1_1.jpg")
    slices = load_slices([ms], CFG)
    groups = dict(zip(slices.names, slices.clusters()))
    assert groups["ms/axial/p0_0.jpg"] != groups["ms/sagittal/p1_1.jpg"]


def test_the_cache_gives_back_what_was_decoded(collections, tmp_path):
    roots = [collections / "figshare", collections / "ms"]
    fresh = load_slices(roots, CFG, cache_dir=tmp_path / "cache")
    cached = load_slices(roots, CFG, cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").iterdir())) == 1
    assert cached.names == fresh.names and cached.patients == fresh.patients
    np.testing.assert_array_equal(cached.squares, fresh.squares)
    np.testing.assert_array_equal(cached.inputs(CFG), fresh.inputs(CFG))


def test_percentile_intensity_makes_a_dim_scan_look_like_a_bright_one():
    rng = np.random.default_rng(3)
    bright = textured_brain(rng, tumour=True, size=64)
    dim = (bright * 0.4).astype(np.uint8)
    cfg = PreprocessConfig(image_size=64, intensity="percentile")
    assert np.abs(scale_intensity(dim, cfg) - scale_intensity(bright, cfg)).mean() < 0.02
    raw = PreprocessConfig(image_size=64)
    assert np.abs(scale_intensity(dim, raw) - scale_intensity(bright, raw)).mean() > 0.1


def test_scanner_look_keeps_shape_and_range():
    from detector.training import scanner_look

    x = np.random.default_rng(0).uniform(0, 1, (4, 32, 32, 1)).astype(np.float32)
    y = scanner_look(x, seed=1).numpy()
    assert y.shape == x.shape and y.min() >= 0.0 and y.max() <= 1.0
    assert not np.allclose(y, x)


def test_sequence_look_reorders_tissue_brightness_on_a_black_background():
    from detector.training import sequence_look

    # A "slice": black background, then three tissues of rising brightness.
    x = np.zeros((64, 16, 16, 1), np.float32)
    x[:, 4:12, 4:12] = 0.3
    x[:, 6:10, 6:10] = 0.6
    x[:, 7:9, 7:9] = 1.0
    y = sequence_look(x, seed=3).numpy()
    assert y.shape == x.shape and y.min() >= 0.0 and y.max() <= 1.0 + 1e-6
    assert np.all(y[:, 0, 0] == 0.0)  # the background stays black
    changed = ~np.all(np.isclose(y, x), axis=(1, 2, 3))
    assert 0.2 < changed.mean() < 0.8  # about half the slices, the rest untouched
    dim, bright = y[changed, 5, 5, 0], y[changed, 7, 7, 0]
    assert (dim > bright).any()  # some curves make the dim tissue the brighter: not a gamma
    np.testing.assert_allclose(sequence_look(x, seed=3, share=0.0).numpy(), x)


def test_random_texture_keeps_the_head_outline_and_changes_what_is_inside():
    from detector.training import random_texture

    x = np.zeros((32, 16, 16, 1), np.float32)  # a black background round a textured "head"
    x[:, 3:13, 3:13] = np.random.default_rng(0).uniform(0.2, 1.0, (32, 10, 10, 1))
    y = random_texture(x, seed=2).numpy()
    assert y.shape == x.shape and y.min() >= 0.0 and y.max() <= 1.0
    assert np.all(y[:, :3] == 0.0) and np.all(y[:, :, 13:] == 0.0)  # the background stays black
    changed = ~np.all(np.isclose(y, x), axis=(1, 2, 3))
    assert 0.2 < changed.mean() < 0.8  # about half the slices, the rest untouched
    np.testing.assert_allclose(random_texture(x, seed=2, share=0.0).numpy(), x)


def test_balanced_weights_make_each_class_and_each_collection_in_it_count_the_same():
    from detector.training import balanced_weights

    y = np.array([0] * 90 + [0] * 10 + [1] * 30 + [1] * 20)
    collections = np.array(["oasis"] * 90 + ["sartaj"] * 10 + ["sartaj"] * 30 + ["figshare"] * 20)
    weights = balanced_weights(y, collections)
    assert weights.mean() == pytest.approx(1.0)
    total = lambda c, k: weights[(collections == c) & (y == k)].sum()
    # 150 slices: 75 of weight per class, 37.5 per collection within it
    for cell in (("oasis", 0), ("sartaj", 0), ("sartaj", 1), ("figshare", 1)):
        assert total(*cell) == pytest.approx(37.5)
    by_class = balanced_weights(y)  # the classes alone: sartaj's 10 normals stay outvoted
    assert [by_class[y == k].sum() for k in (0, 1)] == pytest.approx([75, 75])
    assert by_class[90:100].sum() == pytest.approx(7.5)


def test_synthetic_tumours_are_healthy_train_slices_with_a_lesion_inside_the_head():
    """train.py --synthetic-tumours: normals copied with a lesion, as tumours, a share of the
    real tumours' number."""
    from detector.lesions import paint_lesion, with_synthetic_tumours

    rng = np.random.default_rng(0)
    slices = [cv2.resize(textured_brain(rng, tumour=False), (64, 64)) for _ in range(20)]
    x = np.stack([scale_intensity(s, CFG) for s in slices])
    y = np.array([0] * 12 + [1] * 8)
    x2, y2, hosts = with_synthetic_tumours(x, y, share=0.75, seed=1)

    assert len(hosts) == 6 and len(set(hosts)) == 6 and (y[hosts] == 0).all()  # 0.75 x 8 tumours
    np.testing.assert_array_equal(x2[:20], x)  # the real slices untouched, labels too
    assert list(y2) == list(y) + [1] * 6
    painted, healthy = x2[20:], x[hosts]
    assert painted.shape == healthy.shape and painted.dtype == x.dtype
    assert 0 <= painted.min() and painted.max() <= 1
    changed = np.abs(painted - healthy)[..., 0] > 0.02
    head = healthy[..., 0] > 0
    assert changed.any(axis=(1, 2)).all()  # every copy has its lesion
    assert not (changed & ~head).any()  # and only inside the head: the background stays black
    again = with_synthetic_tumours(x, y, share=0.75, seed=1)[0]
    np.testing.assert_array_equal(again, x2)  # one seed, one set of lesions
    assert len(with_synthetic_tumours(x, y, share=0.0, seed=1)[2]) == 0
    assert len(with_synthetic_tumours(x, y, share=3.0, seed=1)[2]) == 12  # each normal at most once
    empty = np.zeros((64, 64, 1), np.float32)
    np.testing.assert_array_equal(paint_lesion(empty, rng), empty)  # nowhere to paint


def test_pasted_tumours_are_real_tumours_cut_by_their_box_into_healthy_heads():
    """train.py --pasted-tumours: a donor's boxed tumour lands inside a healthy head."""
    from detector.lesions import paste_tumour, with_pasted_tumours

    rng = np.random.default_rng(0)
    slices = [cv2.resize(textured_brain(rng, tumour=False), (64, 64)) for _ in range(10)]
    x = np.stack([scale_intensity(s, CFG) for s in slices])
    x[:, 20:30, 20:30, 0] *= 0.5  # every healthy tissue mid-grey there ...
    donor = x[0].copy()
    donor[24:28, 24:28, 0] = 1.0  # ... and the donor's tumour bright in its box
    x, y = np.concatenate([x, donor[None]]), np.array([0] * 10 + [1])
    box = np.array([[20, 20, 32, 32]]) / 64
    x2, y2, hosts = with_pasted_tumours(x, y, np.array([10]), box, share=3.0, seed=0)
    assert len(hosts) == 3 and (y[hosts] == 0).all() and list(y2[11:]) == [1, 1, 1]
    np.testing.assert_array_equal(x2[:11], x)  # the real slices untouched
    pasted, healthy = x2[11:, ..., 0], x[hosts, ..., 0]
    changed = np.abs(pasted - healthy) > 0.05
    assert changed.any(axis=(1, 2)).all() and not (changed & (healthy == 0)).any()  # in the head
    assert 0 <= pasted.min() and pasted.max() <= 1
    # No donor: nothing pasted; an empty host: nowhere to paste.
    assert len(with_pasted_tumours(x, y, np.array([], int), box[:0], share=1.0, seed=0)[2]) == 0
    empty = np.zeros((64, 64, 1), np.float32)
    np.testing.assert_array_equal(paste_tumour(empty, donor, box[0], rng), empty)
    for edge in ([1.0, 0.4, 1.0, 0.6], [0.4, 1.0, 0.6, 1.0], [0.5, 0.5, 0.5, 0.5]):  # flat boxes
        assert paste_tumour(x[1], donor, np.array(edge), rng).shape == x[1].shape


def test_the_lesion_radius_range_sets_how_large_the_painted_lesions_are():
    """train.py --lesion-radius: larger lesions than an MS plaque, on request."""
    from detector.lesions import paint_lesion

    rng = np.random.default_rng(0)
    healthy = scale_intensity(cv2.resize(textured_brain(rng, tumour=False), (64, 64)), CFG)

    def changed_area(radius_range, seed):
        painted = paint_lesion(healthy, np.random.default_rng(seed), radius_range)
        return int(np.sum(np.abs(painted - healthy)[..., 0] > 0.02))

    small = [changed_area((0.03, 0.04), seed) for seed in range(8)]
    large = [changed_area((0.15, 0.16), seed) for seed in range(8)]
    assert max(small) < min(large)


def test_fresh_lesions_paint_the_same_hosts_anew_at_every_epoch():
    """train.py --fresh-lesions: a new lesion or new foci on each pass, inside the head;
    the real slices as they are."""
    from detector.lesions import AS_IT_IS, PLAQUES_MIMIC, TUMOUR, fresh_painter
    from detector.training import augmented_batches

    rng = np.random.default_rng(0)
    x = np.stack([scale_intensity(cv2.resize(textured_brain(rng, tumour=False), (64, 64)), CFG)
                  for _ in range(6)])  # fmt: skip
    kinds = np.array([AS_IT_IS] * 2 + [TUMOUR] * 2 + [PLAQUES_MIMIC] * 2, "int32")
    data = augmented_batches(x, np.arange(6.0), np.ones(6, "float32"), 6, 0, "none",
                             repaint=(kinds, fresh_painter(seed=0)))  # fmt: skip
    epochs = []
    for a, b, _ in data.repeat(2).as_numpy_iterator():  # shuffled: put back in order
        epochs.append(a[np.argsort(b)])
    first, second = epochs
    np.testing.assert_array_equal(first[:2], x[:2])
    np.testing.assert_array_equal(second[:2], x[:2])
    for painted in (first[2:], second[2:]):
        changed = np.abs(painted - x[2:])[..., 0] > 0.02
        assert changed.any(axis=(1, 2)).all() and not (changed & (x[2:][..., 0] == 0)).any()
    assert (np.abs(first[2:] - second[2:]) > 0.02).any(axis=(1, 2, 3)).all()  # new each time


def test_plaque_mimics_are_healthy_slices_with_small_bright_foci_kept_normal():
    """train.py --plaque-mimics: foci smaller than any painted tumour, inside the brain."""
    from detector.lesions import PLAQUE_RADIUS, RADIUS, paint_plaques, with_plaque_mimics

    rng = np.random.default_rng(0)
    slices = [cv2.resize(textured_brain(rng, tumour=False), (64, 64)) for _ in range(20)]
    x = np.stack([scale_intensity(s, CFG) for s in slices])
    y = np.array([0] * 12 + [1] * 8)
    x2, y2, hosts = with_plaque_mimics(x, y, share=0.5, seed=1)

    assert len(hosts) == 4 and (y[hosts] == 0).all() and list(y2) == list(y) + [0] * 4
    np.testing.assert_array_equal(x2[:20], x)
    changed = np.abs(x2[20:] - x[hosts])[..., 0] > 0.02
    assert changed.any(axis=(1, 2)).all() and not (changed & (x[hosts][..., 0] == 0)).any()
    for spots in changed:  # each focus smaller than the smallest painted tumour
        count, labels = cv2.connectedComponents(spots.astype(np.uint8))
        largest = max(np.sum(labels == k) for k in range(1, count))
        assert largest < np.pi * (RADIUS[0] * 64) ** 2
    assert PLAQUE_RADIUS[1] < RADIUS[0]
    empty = np.zeros((64, 64, 1), np.float32)
    np.testing.assert_array_equal(paint_plaques(empty, rng), empty)


def test_axial_only_training_keeps_slices_labelled_axial_and_those_the_gate_calls_axial(
    collections,
):
    """train.py --planes axial: a known plane decides; the gate only decides the rest."""
    from types import SimpleNamespace

    from detector.plane import PLANES, axial_slices, known_planes

    slices = load_slices([collections / c for c in ("br35h", "sartaj", "figshare", "ms")], CFG)
    x, everything = slices.inputs(CFG), np.arange(len(slices))

    def gate_saying(plane):
        p = np.eye(len(PLANES), dtype=np.float32)[PLANES.index(plane)]
        return lambda batch, training: SimpleNamespace(numpy=lambda: np.tile(p, (len(batch), 1)))

    known = known_planes(slices)  # labels, and their near-copies

    def kept(plane):
        axial = axial_slices(gate_saying(plane), 0.5, known, x, everything)
        return {slices.names[i] for i in axial}

    planes = dict(zip(slices.names, known))
    assert kept("coronal") == {n for n, p in planes.items() if p == "axial"}
    assert kept("axial") == {n for n, p in planes.items() if p in ("axial", "")}
    # The gate has slices to decide, and never overrules a label.
    assert "" in planes.values() and "figshare/meningioma/2.jpg" in kept("axial")
    assert not kept("axial") & {"sartaj/Training/glioma_tumor/image(2).jpg", "ms/sagittal/p1_1.jpg"}


@pytest.mark.slow
def test_a_held_out_collection_is_tested_whole_and_its_copies_never_trained_on(
    collections, capsys
):
    """--hold-out figshare, then the union model whose card shows that run's figures."""
    import train
    from detector.plane import HEAD_CT

    require(HEAD_CT.is_file(), f"{HEAD_CT}: apt-get install invesalius-examples")

    roots = [str(collections / c) for c in ("br35h", "sartaj", "figshare", "ms")]
    tiny = ["--epochs", "1", "--ae-epochs", "1", "--image-size", "32", "--verbose", "0"]
    held_out = collections / "no-figshare"
    axial_only = ["--planes", "axial"]  # the detector trains on no ms/sagittal slice
    assert (
        train.main(
            ["--data", *roots, "--hold-out", "figshare", "--out", str(held_out), *tiny, *axial_only]
        )
        == 0
    )
    split = json.loads((held_out / "split.json").read_text()).values()
    tested = {e["file"] for e in split if e["split"] == "test"}
    assert tested == {f"figshare/meningioma/{n}.jpg" for n in range(1, 9)}
    # The sartaj copy of figshare/1 is in no split: neither trained on nor tested.
    assert "sartaj/Training/glioma_tumor/image(3).jpg" not in {e["file"] for e in split}
    config = json.loads((held_out / "config.json").read_text())
    assert config["split"]["held_out"] == "figshare"
    figshare = config["metrics"]["test_by_subgroup"]["figshare"]
    assert figshare["n"] == figshare["tumors"] == 8 and figshare["specificity"] is None
    assert 0.0 <= figshare["sensitivity"] <= 1.0
    # What a user gets a P(tumour) for: the held-out slices the plane gate passes.
    assert config["metrics"]["test_by_subgroup"]["axial by the plane gate"]["n"] <= 8
    assert config["training"]["planes"] == "axial"
    assert config["training"]["slices"] <= config["split"]["train"] + config["split"]["val"] - 5
    told = config["metrics"]["answers_test"]  # flagged, inconclusive or answered: each slice once
    assert told["flagged"] + told["inconclusive"] + told["answered"] == 8
    assert told["flagged"] == round(config["metrics"]["ood_rate_test"] * 8)

    union = collections / "union"
    letterboxed_gate = ["--gate-letterbox"]  # the gate reads the crop's shape, the rest squash it
    assert (
        train.main(["--data", *roots, "--out", str(union), "--held-out-runs", str(held_out), *tiny,
                    *letterboxed_gate, "--pasted-tumours", "0.5"])  # fmt: skip
        == 0
    )
    donors = int(capsys.readouterr().out.split("Pasted tumours: cut from ")[1].split()[0])
    assert donors > 0  # figshare's train tumours, by their boxes
    config = json.loads((union / "config.json").read_text())
    assert config["gate_letterbox"] is True and config["preprocessing"]["letterbox"] is False
    assert config["training"]["pasted_tumours"] == 0.5
    assert config["training"]["data"] == ["br35h", "figshare", "ms", "sartaj"]
    assert {"br35h", "sartaj", "figshare", "ms"} <= set(config["metrics"]["test_by_subgroup"])
    split = json.loads((union / "split.json").read_text()).values()
    assert {e["collection"] for e in split if e["split"] == "test"} == {
        "br35h",
        "sartaj",
        "figshare",
        "ms",
    }
    assert config["held_out"][0]["collection"] == "figshare"
    # The gate's feature distance: its threshold chosen on val, its Gaussians in ood.npz.
    assert 0 < config["gate_distance_threshold"] < float("inf")
    assert {"gate_feature_means", "gate_feature_precision"} <= set(np.load(union / "ood.npz"))
    card = (union / "README.md").read_text()
    assert "## The plane gate" in card and "... or its feature distance" in card
    assert (
        "### Held-out collections" in card
        and f"| figshare | 8 | 8 | - | {figshare['sensitivity']:.3f} |" in card
    )
    # benchmarks/plane_gate.py --measure-only reads the figures that depend on the
    # gate again, through the same gate (reading the crop letterboxed, as it was trained
    # to): they come out as train.py wrote them.
    from benchmarks import plane_gate

    assert plane_gate.main(["--data", *roots, "--into", str(union), "--measure-only"]) == 0
    again = json.loads((union / "config.json").read_text())["metrics"]
    for key in ("ood_rate_val", "ood_rate_val_axial", "ood_rate_test", "answers_test",
                "test_by_subgroup", "plane_gate"):  # fmt: skip
        assert again[key] == config["metrics"][key], key
    # A dry run fits a new gate, prints its figures and leaves the directory alone.
    files = {p.name: p.read_bytes() for p in union.iterdir() if p.is_file()}
    dry_run = ["--into", str(union), "--gate-seed", "1", "--epochs", "1", "--dry-run"]
    assert plane_gate.main(["--data", *roots, *dry_run, "--no-letterbox", "--members", "2"]) == 0
    assert "; 2 gates averaged" in capsys.readouterr().out  # fitted twice, averaged into one
    # ... and on a held-out split, the gate's figures on that collection whole.
    assert plane_gate.main(["--data", *roots, *dry_run, "--hold-out", "figshare"]) == 0
    report = capsys.readouterr().out.split("Flag when")[-1]
    assert "Confusion matrix" in report
    assert not any(f"axial {c} " in report for c in ("br35h", "sartaj", "ms"))
    with pytest.raises(SystemExit):  # it fits a new gate on another split: a dry run only
        plane_gate.main(["--data", *roots, "--into", str(union), "--hold-out", "figshare"])
    # Another --seed is another split: its figures would count slices the model trained on.
    with pytest.raises(SystemExit, match="not the model's split"):
        plane_gate.main(["--data", *roots, *dry_run, "--seed", "3"])
    assert {p.name: p.read_bytes() for p in union.iterdir() if p.is_file()} == files
    # A model that held nothing out has no held-out figures to give.
    with pytest.raises(ValueError, match="--hold-out"):
        train.main(
            [
                "--data",
                *roots,
                "--out",
                str(collections / "x"),
                "--held-out-runs",
                str(union),
                *tiny,
            ]
        )


def test_answers_count_what_the_app_tells_a_user_slice_by_slice():
    from types import SimpleNamespace

    from detector import BrainTumorDetector
    from detector.evaluation import answers

    config = {"inconclusive_band": [0.1, 0.9], "decision_threshold": 0.5}
    y = np.array([1, 0, 1, 0, 1, 0, 1, 0])
    p = np.array([0.99, 0.98, 0.5, 0.01, 0.02, 0.1, 0.95, 0.3])
    flagged = np.array([0, 0, 0, 0, 1, 0, 1, 0], bool)
    app = SimpleNamespace(config=config)  # label_for reads nothing else
    said = [BrainTumorDetector.label_for(app, q, f) for q, f in zip(p, flagged)]
    wrong = sum(s != "inconclusive" and (s == "tumor") != (t == 1) for s, t in zip(said, y))
    told = answers(y, said, flagged)
    assert told["answered"] == sum(s != "inconclusive" for s in said) == 3  # 0.99, 0.98, 0.01
    assert (told["flagged"], told["inconclusive"]) == (2, 3)  # 0.1 sits on the band's edge
    assert told["wrong"] == wrong == 1  # 0.98 on a healthy slice


def held_out_run(auroc, seed_epochs=10):
    """One evaluation.held_out_summary row, made up."""
    return {
        "collection": "sartaj", "n": 10, "tumors": 6, "auroc": auroc, "sensitivity": 0.5,
        "specificity": None, "sartaj axial normals: specificity": 0.25,
        "sagittal/coronal normals: specificity": None, "flagged_unlike_training": 0.1,
        "axial by the plane gate: n": 7, "axial by the plane gate: auroc": auroc - 0.1,
        "axial by the plane gate: sensitivity": 0.4, "axial by the plane gate: specificity": None,
        "trained_on": 100, "image_size": 64, "intensity": "percentile", "letterbox": "no",
        "augment": "full",
        "answered": 0.5, "answers wrong": 0.2,
        "planes": "all", "balance": "class", "synthetic_tumours": 0, "lesion_radius": None,
        "plaque_mimics": 0, "lesions_painted": None, "pasted_tumours": 0, "asymmetry": "no",
        "mix_style": "no",
        "epochs": seed_epochs,
        "fit_seconds": 60,
    }  # fmt: skip


def test_the_held_out_tables_show_each_run_and_each_recipe_over_seeds():
    from benchmarks.held_out import mean_table
    from detector.card import held_out_table

    run = held_out_run
    assert "| sartaj | 10 | 6 | 0.800 | 0.500 | - | 0.250 | - | 7 | 0.700 | 0.400 | - | 0.100 |" in held_out_table([run(0.8)])
    rows = mean_table([run(0.8), run(0.9), run(0.7, seed_epochs=6)]).splitlines()
    assert rows[2] == "| sartaj | 64 | percentile | no | full | all | class | 0 | - | 0 | - | 0 | no | no | 10 | 2 | 0.850 ± 0.071 | 0.500 ± 0.000 | - | 0.250 ± 0.000 | - | 0.750 ± 0.071 | 0.400 ± 0.000 | - | 0.500 ± 0.000 | 0.200 ± 0.000 |"
    assert rows[3] == "| sartaj | 64 | percentile | no | full | all | class | 0 | - | 0 | - | 0 | no | no | 6 | 1 | 0.700 | 0.500 | - | 0.250 | - | 0.600 | 0.400 | - | 0.500 | 0.200 |"


def test_held_out_figures_go_onto_a_models_card_without_touching_its_networks(
    tiny_model_dir, tmp_path
):
    from benchmarks.held_out import show_on_card

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    networks = {p.name: p.read_bytes() for p in model.glob("*.keras")}
    show_on_card(model, [held_out_run(0.8)])
    assert json.loads((model / "config.json").read_text())["held_out"] == [held_out_run(0.8)]
    card = (model / "README.md").read_text()
    assert "### Held-out collections" in card and "| sartaj | 10 | 6 | 0.800 |" in card
    assert {p.name: p.read_bytes() for p in model.glob("*.keras")} == networks
    assert not list(model.glob(".*.tmp"))  # no staging file left behind


def test_crop_shape_measures_each_collection_and_known_plane(collections):
    """benchmarks/crop_shape.py: one row per collection and plane, ratios of real crops."""
    from benchmarks.crop_shape import crop_shapes

    roots = [collections / name for name in ("br35h", "sartaj", "figshare", "ms")]
    shapes = crop_shapes(roots, per_group=3)
    assert shapes[("br35h", "axial")][0] == 20 and len(shapes[("br35h", "axial")][1]) == 3
    assert shapes[("ms", "sagittal")][0] == 5  # ms's slices.csv says the plane
    assert ("sartaj", "sagittal-or-coronal") in shapes  # its views.csv's hand labels
    assert all(0.3 < r < 3 for _, ratios in shapes.values() for r in ratios)
