"""decode() and preprocess() on a corpus built here (no binary fixtures).

Bad inputs must raise InvalidImageError with a message a person can act on,
and must do so under a memory cap (no pixel bomb gets allocated). Odd but
valid inputs must come out as 2-D uint8 grey and survive the brain crop.
No TensorFlow here: preprocessing is pure image code.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from _images import brain, dicom_bytes, encode, png_with_size
from nibabel.testing import data_path as NIBABEL_DATA
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.pixels.decoders.base import get_decoder

from preprocessing import (
    InvalidImageError,
    PreprocessConfig,
    decode,
    decode_with_colour,
    medical,
    preprocess,
    scale_to_uint8,
)

TESTS = Path(__file__).resolve().parent
PYDICOM_DATA = Path(get_testdata_file("MR_small.dcm")).parent
ANATOMICAL = os.path.join(NIBABEL_DATA, "anatomical.nii")  # 33 x 41 x 25, stored LAS
EXAMPLE_4D = os.path.join(NIBABEL_DATA, "example4d.nii.gz")  # 128 x 96 x 24 x 2
# Headroom over the interpreter's own footprint: a 256 x 256 slice needs a few
# MB, a 20,000 x 20,000 bomb 400 MB.
CAP_BYTES = 256 * 2**20


def _rgb() -> np.ndarray:
    b = brain()
    return np.dstack([b, b // 2, b])


def _opaque() -> np.ndarray:
    return np.full((256, 256), 255, np.uint8)


def _named(data: bytes, name: str) -> io.BytesIO:
    f = io.BytesIO(data)
    f.name = name
    return f


def _nifti(volume: np.ndarray, affine=None) -> bytes:
    return nib.Nifti1Image(volume, np.eye(4) if affine is None else affine).to_bytes()


def _noise_nifti() -> bytes:
    """Noise does not compress, so a cut .gz of it really is cut short."""
    return _nifti(np.random.default_rng(3).integers(0, 255, (64, 64, 8), dtype=np.uint8))


# ---------------------------------------------------------------- bad inputs

# name -> (builder returning (source, decode kwargs), words the message must hold)
BAD = {
    "empty bytes": (lambda: (b"", {}), "empty"),
    "truncated png": (lambda: (encode(brain())[:600], {}), "truncated"),
    "truncated jpeg": (lambda: (encode(brain(), "JPEG")[:600], {}), "truncated"),
    "random bytes": (lambda: (np.random.default_rng(0).bytes(4096), {}), "not an image"),
    "text file": (lambda: (b"patient notes\n" * 50, {}), "not an image"),
    "pdf header": (lambda: (b"%PDF-1.7\n1 0 obj\n<<>>\nendobj\n", {}), "not an image"),
    # PIL can open EPS (through Ghostscript); decode must not hand it over.
    "eps": (lambda: (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\n", {}), "not an image"),
    "20000 x 20000 png": (lambda: (png_with_size(20_000, 20_000), {}), "too large"),
    # Above our limit but below PIL's own bomb check: only ours stops it.
    "8000 x 8000 png": (lambda: (png_with_size(8_000, 8_000), {}), "too large"),
    "tiny 8 x 8": (lambda: (encode(np.full((8, 8), 200, np.uint8)), {}), "8 x 8"),
    "blank black": (lambda: (encode(np.zeros((256, 256), np.uint8)), {}), "no brain"),
    "uniform white": (lambda: (encode(np.full((256, 256), 255, np.uint8)), {}), "no brain"),
    "dicom without pixels": (lambda: (dicom_bytes(), {}), "no pixel data"),
    "dicom 20000 x 20000 header": (
        lambda: (dicom_bytes(np.zeros((4, 4)), Rows=20_000, Columns=20_000), {}),
        "too large",
    ),
    "dicom truncated (pydicom)": (
        lambda: (get_testdata_file("MR_truncated.dcm"), {}),
        "could not decode the dicom image",
    ),
    "dicom frame out of range": (
        lambda: (dicom_bytes(brain().astype(np.uint16)), {"slice_index": 5}),
        "has 1 frame (0 to 0)",
    ),
    "random bytes named .dcm": (
        lambda: (_named(np.random.default_rng(1).bytes(2048), "x.dcm"), {}),
        "dicom",
    ),
    "nifti slice out of range": (lambda: (ANATOMICAL, {"slice_index": 999}), "25 axial slices"),
    "nifti too small (standard.nii.gz)": (
        lambda: (os.path.join(NIBABEL_DATA, "standard.nii.gz"), {}),
        "pixels",
    ),
    "random bytes named .nii": (
        lambda: (_named(np.random.default_rng(2).bytes(2048), "x.nii"), {}),
        "nifti",
    ),
    "truncated .nii.gz": (lambda: (gzip.compress(_noise_nifti())[:3000], {}), "truncated"),
    "truncated .nii": (lambda: (_noise_nifti()[:3000], {}), "truncated"),
    "gzip of text": (lambda: (gzip.compress(b"hello " * 100), {}), "nifti"),
    "unsupported type": (lambda: (42, {}), "cannot read"),
    "channels-first array": (lambda: (np.zeros((3, 256, 256), np.uint8), {}), "2-d"),
    "complex array": (lambda: (np.ones((256, 256), np.complex64), {}), "type"),
    "all-nan array": (lambda: (np.full((256, 256), np.nan), {}), "finite"),
}

# Run in a child process: it builds every input, caps its address space, then
# decodes; the cap cannot leak into the rest of the test session.
_CHILD = """
import json, resource, sys
import test_decode as t
from preprocessing import preprocess

cases = {name: t.BAD[name][0]() for name in t.BAD}
vm = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status")
          if line.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (vm + t.CAP_BYTES, resource.RLIM_INFINITY))
try:
    bytearray(2 * t.CAP_BYTES)
    capped = False
except MemoryError:
    capped = True
results = {}
for name, (source, kwargs) in cases.items():
    try:
        preprocess(source, **kwargs)
        results[name] = ["no error", ""]
    except Exception as exc:
        results[name] = [type(exc).__name__, str(exc)]
print(json.dumps({"capped": capped, "tf": "tensorflow" in sys.modules, "results": results}))
"""


@pytest.fixture(scope="module")
def capped_run() -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), str(TESTS.parent)]))
    done = subprocess.run(
        [sys.executable, "-c", _CHILD],
        cwd=TESTS,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_memory_cap_is_in_force_and_tensorflow_never_loaded(capped_run):
    assert capped_run["capped"], "RLIMIT_AS did not stop a 512 MB allocation"
    assert not capped_run["tf"], "preprocessing imported TensorFlow"


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_is_refused_with_a_clear_message(capped_run, name):
    kind, message = capped_run["results"][name]
    assert kind == "InvalidImageError", f"{name}: {kind}: {message}"
    assert BAD[name][1] in message.lower(), message


def test_invalid_image_error_is_a_value_error():
    with pytest.raises(ValueError, match="empty"):
        decode(b"")


def test_gzip_bomb_stops_at_the_cap(monkeypatch):
    monkeypatch.setattr(medical, "MAX_NIFTI_BYTES", 2**20)
    bomb = gzip.compress(_nifti(np.zeros((128, 128, 128), np.uint8)))  # 2 MB unpacked
    with pytest.raises(InvalidImageError, match="unpacks to more than 1 MB"):
        decode(bomb)


def test_text_mode_file_is_refused(tmp_path):
    path = tmp_path / "scan.png"
    path.write_bytes(encode(brain()))
    with path.open("r", encoding="latin-1") as f, pytest.raises(InvalidImageError, match="binary"):
        decode(f)


# ---------------------------------------------------------------- odd but valid


def _on_disk(tmp: Path, data: bytes, name: str) -> Path:
    path = tmp / name
    path.write_bytes(data)
    return path


# name -> builder(tmp_path) returning a source for decode()
GOOD = {
    "png": lambda tmp: encode(brain()),
    "bytearray": lambda tmp: bytearray(encode(brain())),
    "memoryview": lambda tmp: memoryview(encode(brain())),
    "jpeg": lambda tmp: encode(brain(), "JPEG"),
    "16-bit png": lambda tmp: encode(brain().astype(np.uint16) * 257),
    "12-bit values in a 16-bit png": lambda tmp: encode(brain().astype(np.uint16) * 16),
    "rgb png": lambda tmp: encode(_rgb()),
    "rgba png": lambda tmp: encode(np.dstack([_rgb(), _opaque()])),
    "grey + alpha png": lambda tmp: encode(np.dstack([brain(), _opaque()])),
    "palette png": lambda tmp: encode(Image.fromarray(_rgb()).quantize(32)),
    "1-bit png": lambda tmp: encode(brain() > 45),
    "bmp": lambda tmp: encode(brain(), "BMP"),
    "tiff": lambda tmp: encode(brain(), "TIFF"),
    "float tiff": lambda tmp: encode(brain().astype(np.float32) * 3.5, "TIFF"),
    "gif": lambda tmp: encode(brain(), "GIF"),
    "webp": lambda tmp: encode(brain(), "WEBP", lossless=True),
    "cmyk jpeg": lambda tmp: encode(Image.fromarray(_rgb()).convert("CMYK"), "JPEG"),
    "path str": lambda tmp: str(_on_disk(tmp, encode(brain()), "scan.png")),
    "pathlib path": lambda tmp: _on_disk(tmp, encode(brain(), "JPEG"), "scan.JPG"),
    "file object": lambda tmp: io.BytesIO(encode(brain())),
    "open binary file": lambda tmp: _on_disk(tmp, encode(brain()), "scan.png").open("rb"),
    "PIL image": lambda tmp: Image.fromarray(brain()),
    "lazy PIL image": lambda tmp: Image.open(io.BytesIO(encode(brain()))),
    "uint8 array": lambda tmp: brain(),
    "uint16 array": lambda tmp: brain().astype(np.uint16) * 300,
    "float array in [0, 1]": lambda tmp: brain() / 255.0,
    "float array, any range": lambda tmp: brain().astype(np.float32) * 17 - 400,
    "H x W x 1 array": lambda tmp: brain()[..., None],
    "rgb array": lambda tmp: _rgb(),
    "rgba array": lambda tmp: np.dstack([_rgb(), _opaque()]),
    "bool array": lambda tmp: brain() > 45,
    "dicom bytes": lambda tmp: dicom_bytes(brain().astype(np.uint16) * 10),
    "dicom path (MR_small.dcm)": lambda tmp: get_testdata_file("MR_small.dcm"),
    "dicom file object named .dcm": lambda tmp: _named(dicom_bytes(brain()), "scan.dcm"),
    "nifti path (anatomical.nii)": lambda tmp: ANATOMICAL,
    "nifti bytes, no name": lambda tmp: _nifti(brain()[..., None].repeat(3, axis=2)),
    "nifti.gz bytes, no name": lambda tmp: gzip.compress(_nifti(brain()[..., None].repeat(3, 2))),
    "2-D nifti": lambda tmp: _nifti(brain()),
}


@pytest.mark.parametrize("name", list(GOOD))
def test_valid_input_decodes_and_crops(tmp_path, name):
    source = GOOD[name](tmp_path)
    try:
        grey = decode(source)
        if hasattr(source, "seek"):
            source.seek(0)
        cropped, x, chroma, _ = preprocess(source)
    finally:
        if hasattr(source, "close") and not isinstance(source, Image.Image):
            source.close()
    assert grey.ndim == 2 and grey.dtype == np.uint8
    assert grey.max() > grey.min()
    assert cropped.ndim == 2 and cropped.dtype == np.uint8
    size = PreprocessConfig().image_size
    assert x.shape == (size, size, 1) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert 0.0 <= chroma <= 255.0


def test_colour_is_measured_whatever_the_container():
    """The out-of-distribution check reads colour (detector.ood); the grey image cannot show it."""
    rgb = _rgb()
    expected = np.mean(rgb.max(axis=-1) - rgb.min(axis=-1))
    assert expected > 20
    containers = {
        "png": encode(rgb),
        "PIL image": Image.fromarray(rgb),
        "uint8 array": rgb,
        "rgba array": np.dstack([rgb, _opaque()]),
        "uint16 array": rgb.astype(np.uint16) * 257,
        "float array in [0, 1]": rgb / 255.0,
    }
    for name, source in containers.items():
        assert decode_with_colour(source).chroma == pytest.approx(expected, rel=0.01), name
    # pydicom's colour-bar test image, JPEG-compressed in a DICOM file
    assert decode_with_colour(get_testdata_file("SC_rgb_jpeg_dcmtk.dcm")).chroma > 100
    grey = brain()
    for source in (encode(grey), encode(np.dstack([grey] * 3)), grey, dicom_bytes(grey)):
        assert decode_with_colour(source).chroma == 0.0


def test_high_bit_depth_is_stretched_by_percentiles():
    grey = decode(encode(brain().astype(np.uint16) * 16))  # values 0..3200 of 65535
    assert grey.max() == 255 and grey.min() == 0


def test_transparent_areas_become_black():
    alpha = np.zeros((256, 256), np.uint8)
    alpha[:, 128:] = 255
    grey = decode(encode(np.dstack([_rgb(), alpha])))
    assert grey[:, :128].max() == 0 and grey[:, 128:].max() > 0


def test_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    grey = decode(encode(brain(256, height=200), "JPEG", exif=exif))
    assert grey.shape == (256, 200)


def test_multi_frame_tiff_gives_its_first_frame():
    frames = [Image.fromarray(brain()), Image.fromarray(np.zeros((256, 256), np.uint8))]
    data = encode(frames[0], "TIFF", save_all=True, append_images=frames[1:])
    np.testing.assert_array_equal(decode(data), brain())


def test_scale_to_uint8_ignores_non_finite_values():
    a = brain().astype(np.float64) * 10
    a[0, 0], a[0, 1] = np.nan, np.inf
    grey = scale_to_uint8(a)
    assert grey[0, 0] == grey[0, 1] == 0 and grey.max() == 255


# ---------------------------------------------------------------- DICOM

MR_SMALL = sorted(PYDICOM_DATA.glob("MR_small*.dcm"))


@pytest.mark.parametrize("path", MR_SMALL, ids=[p.name for p in MR_SMALL])
def test_pydicom_mr_small_variants(path):
    syntax = pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
    if not get_decoder(syntax).is_available:
        with pytest.raises(InvalidImageError, match=syntax.name):
            decode(path)
        pytest.skip(f"no decoder installed for {syntax.name}")
    grey = decode(path)
    # Every encoding of the same slice must give the same picture.
    np.testing.assert_array_equal(grey, decode(get_testdata_file("MR_small.dcm")))
    assert grey.shape == (64, 64) and grey.max() == 255
    preprocess(path)


def test_dicom_with_a_transfer_syntax_nobody_decodes_names_it():
    ds = pydicom.dcmread(get_testdata_file("MR_small_RLE.dcm"))
    ds.file_meta.TransferSyntaxUID = pydicom.uid.MPEG2MPML
    buffer = io.BytesIO()
    ds.save_as(buffer)
    with pytest.raises(InvalidImageError, match="MPEG2 Main Profile"):
        decode(buffer.getvalue())


def test_monochrome1_is_inverted():
    pixels = brain().astype(np.uint16) * 10
    mono2 = decode(dicom_bytes(pixels))
    mono1 = decode(dicom_bytes(pixels, PhotometricInterpretation="MONOCHROME1"))
    np.testing.assert_array_equal(mono1, 255 - mono2)


def test_rescale_then_window():
    stored = np.arange(4096, dtype=np.uint16).reshape(64, 64)
    # Rescaled values 2 * stored - 1000; the window shows 0..2000 of them.
    window = {"WindowCenter": 1000, "WindowWidth": 2000}
    grey = decode(dicom_bytes(stored, RescaleSlope=2, RescaleIntercept=-1000, **window)).ravel()
    assert grey[:500].max() == 0 and grey[1500:].min() == 255
    assert 120 < grey[1000] < 136
    assert np.all(np.diff(grey.astype(int)) >= 0)


def test_multi_frame_dicom_middle_frame_or_chosen_one():
    frames = np.stack([np.roll(brain(), 20 * i, axis=1) for i in range(5)]).astype(np.uint16)
    data = dicom_bytes(frames)
    single = [decode(dicom_bytes(f)) for f in frames]
    np.testing.assert_array_equal(decode(data), single[2])
    np.testing.assert_array_equal(decode(data, slice_index=4), single[4])
    assert medical.dicom_frame_count(data) == 5
    with pytest.raises(InvalidImageError, match="0 to 4"):
        decode(data, slice_index=-1)


# ---------------------------------------------------------------- NIfTI


def test_4d_nifti_gives_the_first_volume_with_a_warning():
    with pytest.warns(UserWarning, match="first volume"):
        grey = decode(EXAMPLE_4D, slice_index=12)
    assert grey.shape == (96, 128)
    with pytest.warns(UserWarning):
        preprocess(EXAMPLE_4D)


def test_nifti_slice_count_and_index():
    data = Path(ANATOMICAL).read_bytes()
    assert medical.nifti_slice_count(data, "anatomical.nii") == 25
    first, last = decode(ANATOMICAL, slice_index=0), decode(ANATOMICAL, slice_index=24)
    assert first.shape == last.shape == (41, 33)
    assert not np.array_equal(first, last)
    with pytest.raises(InvalidImageError, match="25 axial slices"):
        decode(ANATOMICAL, slice_index=25)


def test_nifti_is_shown_radiologically_whatever_its_storage_order():
    volume = np.zeros((64, 80, 5), np.uint8)  # canonical RAS+: x to the right, y to the front
    volume[:, :, 2] = brain(80, height=64)
    volume[56:62, 72:78, 2] = 255  # a marker at the front, on the patient's right
    canonical = nib.Nifti1Image(volume, np.eye(4))
    codes = nib.orientations.axcodes2ornt
    stored = canonical.as_reoriented(nib.orientations.ornt_transform(codes("RAS"), codes("LSA")))
    assert nib.aff2axcodes(stored.affine) == ("L", "S", "A")
    grey = decode(stored.to_bytes())
    np.testing.assert_array_equal(grey, decode(canonical.to_bytes()))
    assert grey.shape == (80, 64)
    # Anterior at the top, the patient's right on the viewer's left.
    assert (grey[2:8, 2:8] == grey.max()).all()
    assert medical.nifti_slice_count(stored.to_bytes()) == 5
