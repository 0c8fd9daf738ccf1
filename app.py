"""Gradio app: upload a brain-MRI slice and see what the detector makes of it.

Layout, callbacks and launch only; what is shown is computed in detector.views.

    python app.py [--model DIR_OR_HUB_REPO] [--revision REV] [--examples DIR] [--concurrency N]

Serves on GRADIO_SERVER_NAME:GRADIO_SERVER_PORT (default 127.0.0.1:7860).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import tempfile
import uuid
from pathlib import Path

import gradio as gr
from PIL import Image

from detector import BrainTumorDetector, InvalidImageError, views
from preprocessing import MAX_FILE_BYTES

HERE = Path(__file__).resolve().parent
BUNDLED_MODEL = HERE / "pretrained"
BUNDLED_EXAMPLES = HERE / "examples"
EXAMPLE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".nii", ".nii.gz")
# Requests processed at once (TensorFlow's compiled graphs are safe to call from
# several threads). Measured by benchmarks/app_bench.py on 2 cores (README): under
# 32 clients x 4 requests, p95 ratios to a trivial Gradio app were 1.18-1.44 at 2,
# 0.95-1.28 at 4 and 0.93 at 8.
CONCURRENCY = 4
UPLOAD_HELP = "MRI slice (PNG, JPEG, BMP, TIFF, DICOM, NIfTI)"
IMAGE_GUIDE = (
    "**Grad-CAM**: where the classifier looked (red: most), not where a tumour is. "
    "**Reconstruction**: the autoencoder's copy of the brain; **error map**: where the "
    "copy differs (bright: unlike the training MRIs)."
)
CSS = """
#disclaimer {border: 2px solid #d97706; border-radius: 8px; padding: 4px 12px;}
#verdict {font-size: 1.15em;}
.scan img {width: 100%; height: 100%; object-fit: contain;}  /* enlarge small slices */
"""

log = logging.getLogger("app")


# ------------------------------------------------------------------- model
def load_detector(model: str, revision: str | None = None) -> BrainTumorDetector:
    """A local model directory, or a Hub repo falling back to the bundled model."""
    if Path(model).is_dir():
        return BrainTumorDetector.from_pretrained(model)
    if Path(model) == BUNDLED_MODEL:
        raise SystemExit(
            f"No model at {BUNDLED_MODEL}. Train one with train.py, or pass --model "
            "(or set MODEL_ID) to a model directory or Hub repo id."
        )
    log.info("Loading model %s from the Hugging Face Hub...", model)
    try:
        with _quiet_hub_retries():
            return BrainTumorDetector.from_pretrained(model, revision=revision)
    except (OSError, ValueError) as exc:  # no network, no such repo, bad id or files
        reason = _one_line(exc)
        if model not in reason:
            reason = f"Could not load model {model}: {reason}"
        if not BUNDLED_MODEL.is_dir():
            raise SystemExit(reason) from None
        log.warning("%s Using the bundled model %s instead.", reason, BUNDLED_MODEL)
        return BrainTumorDetector.from_pretrained(BUNDLED_MODEL)


@contextlib.contextmanager
def _quiet_hub_retries():
    """huggingface_hub logs each of its retries; the fallback line says it all."""
    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    hub_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        hub_logger.setLevel(level)


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


# ---------------------------------------------------------------------- UI
def build_app(detector: BrainTumorDetector, examples_dir: str | None = None) -> gr.Blocks:
    config = detector.config
    # Batch CSVs live here until the process exits (Gradio serves a copy from its cache).
    csv_dir = tempfile.TemporaryDirectory(prefix="brain-mri-csv-")

    def on_upload(path):
        """Preview the upload, show the slice slider for a NIfTI volume, clear old results."""
        # Empty results; the type label hides until a tumour is found.
        cleared = [gr.Label(None, visible=False) if c is tumor_type else None for c in results]
        hidden = gr.Slider(visible=False)
        if path is None:
            return None, hidden, None, *cleared
        try:
            count = views.slice_count(path)
            middle = count // 2 if views.is_volume(path) else None
            image = views.preview(path, middle)
        except InvalidImageError as exc:
            gr.Warning(str(exc))
            return None, hidden, None, *cleared
        slider = gr.Slider(visible=count > 1, maximum=max(count - 1, 1), value=middle or 0)
        return image, slider, middle, *cleared

    def on_slice(path, index):
        index = int(index)
        try:
            return views.preview(path, index), index
        except InvalidImageError as exc:
            raise _bad_input(exc) from None

    def show_example(path):
        """An example clicked: its preview and its results at once, with no Analyse click."""
        image, slider, middle, *_ = on_upload(path)
        return image, slider, middle, *predict(path, middle)

    def predict(image, slice_index=None):
        """One slice file -> label confidences, the four images, verdict and details."""
        if image is None:
            raise gr.Error("Upload an MRI slice first.")
        try:
            view = views.analyse(detector, image, slice_index if views.is_volume(image) else None)
        except InvalidImageError as exc:
            raise _bad_input(exc) from None
        p = view.prediction
        images = _unique_pngs(view.cropped, view.grad_cam, view.reconstruction, view.error_map)
        types = views.type_confidences(p)
        return (
            views.confidences(p),
            gr.Label(types, visible=types is not None),
            *images,
            views.verdict(p, config),
            views.details(p, config),
        )

    def run_batch(paths, progress=gr.Progress()):  # noqa: B008 (Gradio looks for this default)
        if not paths:
            raise gr.Error("Upload one or more slices first.")
        rows = [views.batch_row(detector, p) for p in progress.tqdm(paths, desc="Analysing")]
        # A folder per batch, so that every download is called predictions.csv.
        csv_path = Path(tempfile.mkdtemp(dir=csv_dir.name)) / "predictions.csv"
        return rows, str(views.write_csv(rows, csv_path))

    with gr.Blocks(
        title="Brain-tumour MRI detector", analytics_enabled=False, delete_cache=(3600, 3600)
    ) as demo:
        demo.csv_dir = csv_dir  # keep it alive as long as the app
        gr.Markdown("# Brain-tumour MRI detector")
        gr.Markdown(f"⚠️ **{views.DISCLAIMER}**", elem_id="disclaimer")

        with gr.Tab("Slice"), gr.Row():
            with gr.Column(scale=2) as upload_column:
                upload = gr.File(label=UPLOAD_HELP, elem_id="upload")
                preview = gr.Image(
                    label="Uploaded slice",
                    interactive=False,
                    format="png",
                    height=views.DISPLAY_SIZE + 20,
                    buttons=["fullscreen"],
                    elem_id="preview",
                    elem_classes="scan",
                )
                slice_slider = gr.Slider(
                    label="Axial slice", minimum=0, maximum=1, step=1, visible=False
                )
                analyse_button = gr.Button("Analyse", variant="primary", elem_id="analyse")
            with gr.Column(scale=3):
                verdict = gr.Markdown(label="Verdict", elem_id="verdict")
                # No heading: the verdict above decides (threshold, band), not the larger bar.
                label = gr.Label(label="Probability", show_heading=False, elem_id="probability")
                # No heading either: a big type name would read as a diagnosis.
                tumor_type = gr.Label(
                    label="Tumour type (research output)",
                    show_heading=False,
                    elem_id="tumor-type",
                    visible=False,
                )
                with gr.Row():
                    cropped = _image("Cropped brain", "cropped")
                    grad_cam = _image("Grad-CAM", "grad-cam")
                with gr.Row():
                    reconstruction = _image("Reconstruction", "reconstruction")
                    error_map = _image("Error map", "error-map")
                gr.Markdown(IMAGE_GUIDE)
                with gr.Accordion("Details", open=False):
                    details = gr.JSON(label="Details")
        slice_state = gr.State(None)  # None: the middle slice (and all an API caller gets)

        with gr.Tab("Batch"):
            batch_files = gr.File(
                label="MRI slices (PNG, JPEG, BMP, TIFF, DICOM, NIfTI)",
                file_count="multiple",
                elem_id="batch-files",
            )
            batch_button = gr.Button("Analyse all", variant="primary")
            table = gr.Dataframe(
                label="Predictions",
                headers=views.BATCH_COLUMNS,
                datatype=["str", "str", "number", "str", "str", "number", "str"],
                interactive=False,
                wrap=True,
                column_widths=["15%", "9%", "11%", "10%", "11%", "11%", "33%"],
            )
            csv_download = gr.File(label="CSV")

        with gr.Tab("About"):
            gr.Markdown(views.about_markdown(config))
            plots = views.plots(detector.assets)
            if plots:
                gr.Gallery(plots, label="Evaluation plots", columns=2, height="auto")

        results = [
            label,
            tumor_type,
            cropped,
            grad_cam,
            reconstruction,
            error_map,
            verdict,
            details,
        ]
        shown = [preview, slice_slider, slice_state, *results]
        if examples_dir:
            with upload_column:
                _examples(examples_dir, upload, show_example, shown)
        analyse_button.click(predict, [upload, slice_state], results, api_name="predict")
        batch_button.click(
            run_batch, batch_files, [table, csv_download], api_name="batch", concurrency_limit=1
        )
        # UI-only events: private, and named so that none takes the name "predict".
        # A person's upload or clear, not .change: an example click sets the file too,
        # and its own results must not be cleared by a preview racing them.
        gr.on(
            [upload.upload, upload.clear],
            on_upload,
            upload,
            shown,
            api_name="upload",
            api_visibility="private",
        )
        slice_slider.release(
            on_slice,
            [upload, slice_slider],
            [preview, slice_state],
            api_name="pick_slice",
            api_visibility="private",
        ).success(
            predict,
            [upload, slice_state],
            results,
            api_name="predict_slice",
            api_visibility="private",
        )
    return demo


def _bad_input(exc: InvalidImageError) -> gr.Error:
    # Bad input is the user's to fix, not a server fault: no traceback in the log.
    return gr.Error(str(exc), title="Cannot analyse this file", print_exception=False)


def _unique_pngs(*arrays) -> list[Image.Image]:
    """PIL images tagged with a fresh id, so each request's PNGs are new files.

    Gradio caches an output image under the hash of its bytes and rewrites that
    file in place: two requests with the same result (the same slice, uploaded
    at once) would race, and one browser would fetch a truncated image.
    """
    request_id = uuid.uuid4().hex
    images = []
    for array in arrays:
        image = Image.fromarray(array)
        image.info["request"] = request_id  # saved as a PNG text chunk
        # Gradio saves with Pillow's default zlib level (6): 11 ms for the colour
        # Grad-CAM at 240 px, 2.5 ms at level 1, for files 15 % larger. Pillow reads
        # save() parameters set on the image through `encoderinfo`.
        image.encoderinfo = {"compress_level": 1}
        images.append(image)
    return images


def _image(label: str, elem_id: str) -> gr.Image:
    # PNG: lossless, so grey levels and the heat map are shown as computed
    # (grey images as one-channel PNGs). No share button: these are medical images.
    return gr.Image(
        label=label,
        elem_id=elem_id,
        interactive=False,
        format="png",
        height=views.DISPLAY_SIZE,
        buttons=["download", "fullscreen"],
        elem_classes="scan",
    )


def _examples(examples_dir: str, upload: gr.File, show_example, shown: list) -> None:
    folder = Path(examples_dir)
    files = sorted(p for p in folder.glob("*") if p.name.lower().endswith(EXAMPLE_SUFFIXES))
    if not files:
        log.warning("No example slices in %s; showing none.", folder)
        return
    # Not cached: caching made launch no faster (README) and would analyse every
    # example at launch and write a cache folder; a click costs one analysis.
    gr.Examples(
        [[str(p)] for p in files],
        inputs=upload,
        outputs=shown,
        fn=show_example,
        cache_examples=False,
        run_on_click=True,
        label="Examples: click one",
        elem_id="examples",
    )


# ------------------------------------------------------------------ launch
def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        default=os.environ.get("MODEL_ID") or str(BUNDLED_MODEL),
        help="model directory or Hugging Face Hub repo id (env MODEL_ID; default: pretrained/)",
    )
    parser.add_argument(
        "--revision",
        default=os.environ.get("MODEL_REVISION"),
        help="Hub branch, tag or commit (env MODEL_REVISION)",
    )
    parser.add_argument(
        "--examples",
        default=os.environ.get("EXAMPLES_DIR") or str(BUNDLED_EXAMPLES),
        help="folder of example slices to offer (env EXAMPLES_DIR; default: examples/)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=int(os.environ.get("APP_CONCURRENCY") or CONCURRENCY),
        help=f"analyses run at once (env APP_CONCURRENCY; default: {CONCURRENCY})",
    )
    return parser.parse_args(argv)


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per HTTP request otherwise
    args = parse_args(argv)
    detector = load_detector(args.model, args.revision)
    demo = build_app(detector, args.examples)
    demo.queue(default_concurrency_limit=args.concurrency, max_size=64)
    # Host and port come from GRADIO_SERVER_NAME / GRADIO_SERVER_PORT (Spaces set them).
    demo.launch(
        max_file_size=MAX_FILE_BYTES,
        allowed_paths=[args.examples] if args.examples else None,
        theme=gr.themes.Soft(),
        css=CSS,
    )


if __name__ == "__main__":
    main()
