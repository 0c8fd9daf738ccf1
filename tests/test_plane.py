"""The plane gate (detector.plane) and the header rule: is the slice an axial brain MRI?"""

from __future__ import annotations

import io
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from _images import brain
from _models import tiny_detector
from conftest import require
from pydicom.data import get_testdata_file

from detector import BrainTumorDetector, plane
from preprocessing import preprocess
from preprocessing.medical import dicom_plane

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
PRETRAINED = ROOT / "pretrained"


def dicom(orientation=None, modality="MR") -> bytes:
    """pydicom's real MR slice, its header saying another orientation or modality."""
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ds.Modality = modality
    if orientation is None:
        del ds.ImageOrientationPatient
    else:
        ds.ImageOrientationPatient = orientation
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


def nifti() -> bytes:
    volume = np.stack([brain(64)] * 9, axis=-1)  # an axial stack of a synthetic head
    return nib.Nifti1Image(volume, np.eye(4)).to_bytes()


# ------------------------------------------------------------------ header rule
@pytest.mark.parametrize(
    "orientation, expected",
    [
        ([1, 0, 0, 0, 1, 0], "axial"),
        ([0, 1, 0, 0, 0, -1], "sagittal"),
        ([1, 0, 0, 0, 0, -1], "coronal"),
        ([1, 0, 0, 0, 0.8, -0.6], "axial"),  # tilted 37 degrees: still closest to axial
        ([0, 0, 0, 0, 0, 0], ""),  # broken: the header does not say
    ],
)
def test_dicom_orientation_says_the_plane(orientation, expected):
    assert preprocess(dicom(orientation)).plane == expected


def test_a_dicom_of_another_modality_is_not_mri_and_no_orientation_says_nothing():
    assert preprocess(get_testdata_file("CT_small.dcm")).plane == "not MRI"
    assert dicom_plane(pydicom.dcmread(io.BytesIO(dicom(None)))) == ""


def test_a_nifti_slice_is_axial_by_construction():
    assert preprocess(nifti()).plane == "axial"
    assert preprocess(brain(128)).plane == ""  # a picture has no header


def test_the_header_decides_without_any_network():
    """A model saved before the gate still refuses a sagittal DICOM, and reads an axial one."""
    det = tiny_detector()
    assert det.plane_gate is None and "plane_threshold" not in det.config
    sagittal = det.predict(dicom([0, 1, 0, 0, 0, -1]))
    assert (sagittal.plane, sagittal.plane_source) == ("sagittal", "header")
    assert sagittal.out_of_distribution and sagittal.label == "inconclusive"
    assert sagittal.plane_probabilities["sagittal"] == 1.0
    axial = det.predict(dicom([1, 0, 0, 0, 1, 0]))
    assert (axial.plane, axial.plane_source, axial.not_axial) == ("axial", "header", 0.0)
    picture = det.predict(brain(128))  # no header, no gate: nobody says
    assert (picture.plane, picture.plane_source, picture.plane_probabilities) == ("", "", {})


def test_the_header_wins_over_the_gate(tmp_path):
    det = tiny_detector()
    gated = BrainTumorDetector(
        det.classifier, det.autoencoder, det.config, plane_gate=plane.build_gate()
    )
    from_gate = gated.predict(brain(128))
    assert from_gate.plane_source == "gate" and from_gate.plane in plane.PLANES
    assert sum(from_gate.plane_probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    from_header = gated.predict(nifti())
    assert (from_header.plane, from_header.plane_source) == ("axial", "header")
    # The gate travels with the model; a directory without it still loads.
    gated.save_pretrained(tmp_path / "gated")
    det.save_pretrained(tmp_path / "older")
    assert (tmp_path / "gated" / "plane_gate.keras").is_file()
    loaded = BrainTumorDetector.from_pretrained(tmp_path / "gated")
    assert loaded.predict(brain(128)).plane_probabilities == pytest.approx(
        from_gate.plane_probabilities
    )
    assert BrainTumorDetector.from_pretrained(tmp_path / "older").plane_gate is None


def test_a_gate_put_into_a_detector_is_the_one_it_predicts_with():
    """benchmarks/plane_gate.py sets detector.plane_gate, then measures through it."""
    det = tiny_detector()
    first, second = plane.build_gate(seed=0), plane.build_gate(seed=1)
    gated = BrainTumorDetector(det.classifier, det.autoencoder, det.config, plane_gate=first)
    before = gated.predict(brain(128)).plane_probabilities
    gated.plane_gate = second
    after = gated.predict(brain(128)).plane_probabilities
    x = preprocess(brain(128), gated.preprocess_config).x[None].mean(axis=-1, keepdims=True)
    expected = dict(zip(plane.PLANES, second(x, training=False).numpy()[0].tolist()))
    assert after == pytest.approx(expected, abs=1e-5) and after != pytest.approx(before, abs=1e-5)


def test_a_letterboxed_gate_reads_the_crop_letterboxed_and_says_so_in_its_config(tmp_path):
    """config["gate_letterbox"]: the gate reads the crop's shape, the classifier the
    squashed square; measuring without the gate's own inputs is refused."""
    from preprocessing import to_input

    det = tiny_detector(gate_letterbox=True)
    gated = BrainTumorDetector(det.classifier, det.autoencoder, det.config,
                               plane_gate=plane.build_gate(seed=0))  # fmt: skip
    wide = brain(256, height=150)
    cropped = preprocess(wide, gated.preprocess_config).cropped
    x_gate = to_input(cropped, gated.gate_config)[None]
    assert gated.gate_config.letterbox and not gated.preprocess_config.letterbox
    assert not x_gate[0, 0].any()  # the bars above and below the wide head
    expected = dict(zip(plane.PLANES, gated.plane_gate(x_gate, training=False).numpy()[0].tolist()))
    assert gated.predict(wide).plane_probabilities == pytest.approx(expected, abs=1e-5)
    x = preprocess(wide, gated.preprocess_config).x[None]
    with pytest.raises(ValueError, match="pass x_gate"):
        gated.predict_arrays(x)
    _, scores = gated.predict_arrays(x, x_gate=x_gate)
    assert scores["not_axial"][0] == pytest.approx(1 - expected["axial"], abs=1e-5)
    gated.save_pretrained(tmp_path)
    assert BrainTumorDetector.from_pretrained(tmp_path).gate_config.letterbox  # in config.json
    # A gate saved before the option reads the classifier's square in grey.
    assert not tiny_detector().gate_config.letterbox


def test_the_feature_distance_is_to_the_nearest_planes_gaussian():
    from detector.ood import feature_distances, fit_feature_distance

    rng = np.random.default_rng(0)
    centres = {"axial": np.zeros(4), "sagittal": np.full(4, 10.0)}
    planes = ["axial"] * 200 + ["sagittal"] * 200
    features = np.concatenate([c + rng.normal(size=(200, 4)) for c in centres.values()])
    params = fit_feature_distance(features, planes)
    assert params["gate_feature_means"].shape == (2, 4)  # no coronal slices: no coronal Gaussian
    halfway = np.full(4, 5.0)
    d = feature_distances(np.stack([centres["axial"], centres["sagittal"], halfway]), params)
    # At either plane's centre ~0; halfway between them, far from both (4 features, unit spread).
    assert d[0] < 0.5 and d[1] < 0.5 and d[2] > 50


def test_the_gate_feature_distance_travels_with_the_model_and_a_header_overrides_it(tmp_path):
    """The Gaussians go to ood.npz, the threshold to config.json; a DICOM/NIfTI header
    says the slice is MRI, so the distance is not used for it."""
    from detector.ood import failed_checks, fit_feature_distance

    det = tiny_detector()
    gate = plane.build_gate(seed=0)
    x = preprocess(brain(128), det.preprocess_config).x[None]
    reference = plane.features(gate, np.random.default_rng(0).random((40, 96, 96, 1), np.float32))
    ood = {**det.ood, **fit_feature_distance(reference, ["axial"] * 40)}
    gated = BrainTumorDetector(det.classifier, det.autoencoder, det.config, ood=ood,
                               plane_gate=gate)  # fmt: skip
    distance = gated.predict(brain(128)).gate_distance
    assert distance > 0
    gated.config["gate_distance_threshold"] = distance / 2
    gated.save_pretrained(tmp_path)
    loaded = BrainTumorDetector.from_pretrained(tmp_path)
    _, scores = loaded.predict_arrays(x)
    assert scores["gate_distance"][0] == pytest.approx(distance, rel=1e-4)
    assert failed_checks(scores, loaded.config)["gate_distance"][0]
    from_header = loaded.predict(nifti())
    assert from_header.plane_source == "header" and from_header.gate_distance == 0.0
    # A model saved before the check (no Gaussians, no threshold) scores 0 and never flags.
    older = BrainTumorDetector(det.classifier, det.autoencoder, det.config, plane_gate=gate)
    assert older.predict(brain(128)).gate_distance == 0.0


def test_set_valued_loss_rewards_either_allowed_plane():
    allowed = plane.masks(["sagittal-or-coronal", "axial"])
    p = np.array([[0.0, 0.5, 0.5, 0.0], [0.5, 0.5, 0.0, 0.0]], np.float32)
    loss = np.asarray(plane.set_valued_loss(allowed, p))
    assert loss[0] == pytest.approx(0.0, abs=1e-5) and loss[1] == pytest.approx(np.log(2), abs=1e-5)


def test_a_verdict_names_sagittal_or_coronal_only_when_the_gate_is_sure_which():
    p = {"axial": 0.02, "sagittal": 0.6, "coronal": 0.35, "not MRI": 0.03}
    assert plane.named("sagittal", p) == plane.SAGITTAL_OR_CORONAL  # not twice as likely
    assert plane.named("sagittal", {**p, "sagittal": 0.7, "coronal": 0.25}) == "sagittal"
    assert plane.named("not MRI", p) == "not MRI"
    rows = np.array([[0, 0.9, 0.1, 0], [0, 0.55, 0.45, 0], [0, 0.1, 0.9, 0], [0.9, 0.1, 0, 0]])
    labels = ["sagittal", "sagittal", "sagittal", "coronal"]
    verdicts = ["sagittal", "sagittal", "coronal", "axial"]  # the last is no sagittal/coronal one
    counts = plane.naming(labels, verdicts, rows)
    assert counts == {"right": 1, plane.SAGITTAL_OR_CORONAL: 1, "wrong": 1}


def test_a_target_with_nothing_to_measure_is_neither_met_nor_missed():
    """A held-out run's test split may hold no sagittal slice, or no axial one of the targets."""
    groups = ["sagittal/coronal", "sagittal/coronal", "pictures", "axial ms"]
    table = plane.flag_table(groups, [True, False, True, False], refused={"documents": 1})
    met = {t["target"].split(" flagged")[0]: t["met"] for t in table["targets"]}
    assert met == {
        "sagittal and coronal MRI": False,  # 1 of 2
        "CT and non-MRI pictures": True,  # the picture and the refused document
        "axial MRI": None,  # no Br35H, sartaj or figshare axial slice here
    }
    report = plane.format_report({"threshold": 0.5, "confusion": {}, **table})
    assert report.splitlines()[-1].endswith("0       -  -")


# ------------------------------------------------------------------ volumes to learn from
def test_the_head_ct_reads_in_hounsfield_units_and_is_cut_in_every_plane():
    require(plane.HEAD_CT.is_file(), f"{plane.HEAD_CT}: apt-get install invesalius-examples")
    volume, spacing = plane.read_inv3(plane.HEAD_CT)
    assert volume.shape == (108, 256, 256)
    assert spacing == pytest.approx((0.957, 0.957, 1.5), abs=1e-3)
    assert volume.min() == -1024 and np.percentile(volume, 99.5) > 1000  # air and bone
    crops, labels = plane.head_ct_cuts(np.random.default_rng(0), per_plane=(3, 2, 2))
    assert len(crops) == 7 and set(labels) == {"not MRI"}
    assert all(c.ndim == 2 and min(c.shape) >= 8 and c.dtype == np.uint8 for c in crops)
    assert all(c.std() > 10 for c in crops)  # a window on tissue, not a blank


def test_without_the_head_ct_the_gate_says_what_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install invesalius-examples"):
        plane.head_ct_cuts(np.random.default_rng(0), path=tmp_path / "Cranium.inv3")


def test_template_ct_puts_skull_and_scalp_around_the_template_brain():
    # A disc of brain (30 HU) 41 voxels across. Out along a ray from its centre: brain,
    # a thin CSF rim, bone denser than any brain, scalp, then air, in that order.
    from scipy.ndimage import distance_transform_edt

    y, x = np.ogrid[-40:41, -40:41]
    inside = x**2 + y**2 <= 20**2
    brain, outside = np.where(inside, 30.0, -1000.0), distance_transform_edt(~inside)
    for seed in range(5):
        hu = plane._with_skull(brain, outside, np.random.default_rng(seed))
        assert np.array_equal(hu[inside], brain[inside])
        ray = hu[40, 40:]  # from the centre to the right edge
        tissue = np.select(
            [ray == 30, ray == 6, ray >= 400, (ray >= 20) & (ray <= 50), ray == -1000],
            ["brain", "csf", "bone", "scalp", "air"], "other",
        )  # fmt: skip
        order = [t for k, t in enumerate(tissue) if k == 0 or t != tissue[k - 1]]
        assert order in (
            ["brain", "csf", "bone", "scalp", "air"],
            ["brain", "bone", "scalp", "air"],  # a CSF rim under 1 mm
        )
        assert (tissue == "bone").sum() >= 4  # the skull is 4-9 mm thick
        # In T1's look the bone next to the brain is dark and the scalp's fat bright.
        t1 = plane._with_skull(brain, outside, np.random.default_rng(seed), "T1")
        ray = t1[40, 40:]
        layers = ray[(ray != 30) & (ray != -1000)]
        assert layers[0] <= 0.05 and layers[-1] >= 0.6 and (ray[-1] == -1000)


def test_a_skull_stripped_slice_loses_its_scalp_and_is_cropped_to_the_brain():
    """plane_gate.py --extras skull-stripped: the bright rim goes, the brain fills the crop."""
    side = 64
    yy, xx = np.mgrid[:side, :side]
    radius = np.hypot(yy - 31.5, xx - 31.5)
    head = np.where(radius < 24, 0.5, 0.0) + np.where((radius >= 24) & (radius < 27), 1.0, 0.0)
    x = head[None, :, :, None].astype(np.float32)
    stripped = plane.skull_stripped(x, np.random.default_rng(0))
    assert stripped.shape == x.shape and 0 <= stripped.min() and stripped.max() <= 0.55
    assert np.mean(stripped > 0.1) > np.mean(x > 0.1)  # cropped again: the brain fills more
    np.testing.assert_array_equal(plane.skull_stripped(np.zeros_like(x), np.random.default_rng(0)), 0)


def test_template_ct_is_cut_in_every_plane_under_a_ct_window():
    crops, labels = plane.template_ct_cuts(np.random.default_rng(0), per_plane=(3, 2, 2))
    assert len(crops) == 7 and set(labels) == {"not MRI"}
    assert all(c.ndim == 2 and min(c.shape) >= 8 and c.dtype == np.uint8 for c in crops)
    assert all(c.std() > 10 for c in crops)  # a window on tissue, not a blank


def test_a_volume_is_cut_in_each_plane_with_the_head_upright():
    # An ellipsoid 20 / 40 / 60 voxels across x, y, z (RAS) with a bright cap on top
    # (z > 10): each plane's cut has the shape of its two axes, and its top up.
    x, y, z = np.ogrid[-40:40, -40:40, -40:40]
    volume = ((x / 10) ** 2 + (y / 20) ** 2 + (z / 30) ** 2 <= 1) * np.where(z > 10, 2.0, 1.0)
    found = list(plane.cuts(volume, np.random.default_rng(0), per_plane=4))
    assert [p for p, _ in found] == ["axial"] * 4 + ["sagittal"] * 4 + ["coronal"] * 4
    for p, cut in found:
        rows, cols = np.nonzero(cut)
        assert np.ptp(cols) / np.ptp(rows) == pytest.approx(
            {"axial": 10 / 20, "sagittal": 20 / 30, "coronal": 10 / 30}[p], rel=0.15
        )
        if p != "axial":  # the cap is in the top rows
            assert cut[rows.min() + 1].max() == 2 and cut[rows.max() - 1].max() == 1


# ------------------------------------------------------------------ the trained gate
def trained_gate_examples() -> dict[str, list[str]]:
    config = json.loads((PRETRAINED / "config.json").read_text())
    if not (PRETRAINED / "plane_gate.keras").is_file() or not DATA.is_dir():
        pytest.skip("needs the bundled plane gate and ../shared/data")
    return config["metrics"]["plane_gate"]["test_examples"]


@pytest.fixture(scope="module")
def bundled():
    return BrainTumorDetector.from_pretrained(PRETRAINED)


def flag_rate(bundled, names) -> float:
    return float(
        np.mean([p.plane != "axial" for p in bundled.predict_batch([DATA / n for n in names])])
    )


def test_the_gate_flags_real_sagittal_and_coronal_slices_and_passes_axial_ones(bundled):
    """Test-split slices the gate was measured on, through the whole pipeline of the bundled model."""
    examples = trained_gate_examples()
    axial = [n for g in ("axial br35h", "axial sartaj", "axial figshare") for n in examples[g]]
    assert flag_rate(bundled, axial) <= 0.1  # target 3 %; 60 slices
    assert flag_rate(bundled, examples["sagittal/coronal"]) >= 0.9  # target 95 %; 20 slices


@pytest.mark.xfail(strict=True, reason="known miss: the bundled gate calls it axial (P 0.95)")
def test_the_gate_flags_a_sagittal_head_from_elsewhere(bundled, tmp_path):
    """matplotlib's sample MRI (s1045.ima: a sagittal slice of a child's head with face
    and neck, which none of the five collections holds), exported as a PNG."""
    import gzip

    import cv2
    from matplotlib import cbook

    with gzip.open(cbook.get_sample_data("s1045.ima.gz", asfileobj=False)) as f:
        head = np.frombuffer(f.read(), "<u2").reshape(256, 256)
    cv2.imwrite(str(tmp_path / "s1045.png"), (head / head.max() * 255).astype(np.uint8))
    assert bundled.predict(tmp_path / "s1045.png").plane in ("sagittal", "coronal", "not MRI")


@pytest.mark.xfail(strict=True, reason="known miss: the bundled gate calls it axial (P 1.00)")
def test_the_gate_flags_a_head_ct_exported_without_a_window(bundled, tmp_path):
    """pydicom's skull-base head CT, its whole range of Hounsfield units scaled to 0-255 as a
    PNG (no header to say CT): under a brain or soft-tissue window the gate flags it."""
    import cv2
    from pydicom import dcmread
    from pydicom.data import get_testdata_file

    ds = dcmread(get_testdata_file("J2K_pixelrep_mismatch.dcm"))
    hu = ds.pixel_array.astype(np.float32)
    cv2.imwrite(str(tmp_path / "ct.png"), ((hu - hu.min()) / np.ptp(hu) * 255).astype(np.uint8))
    assert bundled.predict(tmp_path / "ct.png").plane != "axial"


@pytest.mark.xfail(strict=True, reason="known miss: the gate flags 5 of sartaj's 12 CT slices")
def test_the_gate_flags_real_ct_slices(bundled):
    assert flag_rate(bundled, trained_gate_examples()["CT"]) >= 0.75


# Colin27 ("ch2" of Debian's mricron-data): one real head, T1 at 1 mm with skull, scalp
# and neck, that none of the five collections holds and no bundled recipe learnt from.
COLIN27 = Path("/usr/share/mricron/templates/ch2.nii.gz")


def colin27_jpegs(per_plane: int = 40) -> dict[str, list[bytes]]:
    """Colin27 cut in each plane (plane.cuts: the middle 70 % of the head, anterior or
    superior at the top), each stretched to 8 bits and saved as a JPEG."""
    import cv2

    require(COLIN27.is_file(), f"{COLIN27}: apt-get install mricron-data")
    volume = nib.as_closest_canonical(nib.load(COLIN27)).get_fdata()  # RAS
    jpegs = {"axial": [], "sagittal": [], "coronal": []}
    for name, cut in plane.cuts(volume, np.random.default_rng(0), per_plane):
        grey = np.clip(cut / np.percentile(cut[cut > 0.1 * volume.max()], 99.5), 0, 1)
        jpegs[name].append(cv2.imencode(".jpg", np.round(255 * grey).astype(np.uint8))[1].tobytes())
    return jpegs


def test_the_detector_flags_sagittal_and_coronal_slices_of_a_head_none_of_the_data_holds(bundled):
    """Its 80 sagittal and coronal cuts flagged (issue #11: at least 95 %), its 40 axial
    ones passed (the target: at most 3 % flagged; 2 of 40 allowed). The plane's name is
    not tested: the gate tells sagittal from coronal less surely (README, plane gate)."""
    flagged = {
        name: np.mean([p.out_of_distribution for p in bundled.predict_batch(jpegs)])
        for name, jpegs in colin27_jpegs().items()
    }
    assert flagged["sagittal"] >= 0.95 and flagged["coronal"] >= 0.95, flagged
    assert flagged["axial"] <= 0.05, flagged
