"""Write the app's example files from ../shared/data (see README.md here for sources and licences).

    python examples/make_examples.py

Run once by hand; the outputs are committed, so the app never needs the data.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1] / "shared" / "data"

COPIES = {  # example file <- data file, byte for byte
    "tumour_glioma_figshare_2199.jpg": "figshare/glioma/2199.jpg",
    "healthy_flair_ms_patient03.jpg": "ms/axial/patient03_study1_FLAIR_024.jpg",
    "sagittal_t1_ms_patient07.jpg": "ms/sagittal/patient07_mni_T1_086.jpg",
}
DICOM = ("tumour_meningioma_figshare_64.dcm", "figshare/meningioma/64.jpg")
VOLUME = ("healthy_flair_volume_ms_patient03.nii.gz", "ms/axial/patient03_study1_FLAIR_{:03d}.jpg")
VOLUME_SLICES = range(8, 37, 2)  # skull base to vertex, every other slice: small


def write_dicom(jpeg: Path, out: Path) -> None:
    """A minimal MR DICOM (8-bit MONOCHROME2) holding one slice."""
    pixels = cv2.imread(str(jpeg), cv2.IMREAD_GRAYSCALE)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "MR"
    ds.PatientName, ds.PatientID = "Anonymous", "figshare-example"
    ds.SeriesDescription = "T1 post-contrast (Cheng et al. 2015, CC BY 4.0)"
    ds.set_pixel_data(pixels, "MONOCHROME2", 8)
    ds.save_as(out, enforce_file_format=True)


def write_volume(pattern: str, out: Path) -> None:
    """Axial JPEG slices stacked into a NIfTI volume, oriented as preprocessing reads it back."""
    slices = [
        cv2.imread(str(DATA / pattern.format(k)), cv2.IMREAD_GRAYSCALE) for k in VOLUME_SLICES
    ]
    # An image's rows run anterior -> posterior and its columns patient right -> left;
    # RAS voxel axes run left -> right and posterior -> anterior.
    volume = np.stack([s.T[::-1, ::-1] for s in slices], axis=-1)
    affine = np.diag([1.0, 1.0, 2.0 * 3.0, 1.0])  # nominal: 1 mm pixels, every other 3 mm slice
    nib.save(nib.Nifti1Image(volume.astype(np.uint8), affine), out)


def main() -> None:
    for name, source in COPIES.items():
        shutil.copyfile(DATA / source, HERE / name)
    write_dicom(DATA / DICOM[1], HERE / DICOM[0])
    write_volume(VOLUME[1], HERE / VOLUME[0])


if __name__ == "__main__":
    main()
