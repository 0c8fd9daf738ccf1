"""BrainTumorDetector: load, run and save the classifier + autoencoder pair."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from huggingface_hub import ModelHubMixin, hf_hub_download

from preprocessing import InvalidImageError, PreprocessConfig, Preprocessed, preprocess, to_input

from . import plane
from .ood import (
    CHECKS,
    anomaly_ratios,
    background_levels,
    failed_checks,
    feature_distances,
    layout_scores,
    limit,
)

CONFIG_FILE = "config.json"
CLASSIFIER_FILE = "classifier.keras"
AUTOENCODER_FILE = "autoencoder.keras"
OOD_FILE = "ood.npz"  # detector.ood's fitted arrays: the layout check, the gate's feature Gaussians
MODEL_FILES = (CONFIG_FILE, CLASSIFIER_FILE, AUTOENCODER_FILE, OOD_FILE)
PLANE_GATE_FILE = "plane_gate.keras"  # detector.plane's gate; models saved before it have none
TYPE_CLASSIFIER_FILE = "type_classifier.keras"  # the tumour-type network; older models have none
OPTIONAL_FILES = (PLANE_GATE_FILE, TYPE_CLASSIFIER_FILE)
# Files that travel with a model directory but are not needed to run it.
ASSET_SUFFIXES = (".png", ".csv", ".json")


@dataclass
class Prediction:
    """What the detector says about one slice."""

    tumor_probability: float
    label: str  # "tumor" | "normal" | "inconclusive"
    anomaly_score: float  # mean squared reconstruction error of the autoencoder
    out_of_distribution: bool  # a check of detector.ood fired: unlike the training slices
    cropped: np.ndarray  # uint8 grey, the brain crop at its own resolution
    reconstruction: np.ndarray  # uint8 grey, the autoencoder's output at model size
    error_map: np.ndarray  # uint8 grey, |input - reconstruction| stretched to 0..255
    # The other scores of detector.ood's checks:
    layout_score: float = 0.0  # edge layout's distance from the training slices'
    chroma: float = 0.0  # how colourful the picture is, 0..255
    background_level: float = 0.0  # how light the crop's corners are, 0..1
    not_axial: float = 0.0  # 1 - P(axial brain MRI): the plane check's score
    gate_distance: float = 0.0  # the gate's features' distance from the MRI slices it learnt
    anomaly_ratio: float = 0.0  # anomaly_score over the slice's own fine detail: the check's score
    # What the slice is: one of detector.plane.PLANES, "" when neither a header
    # nor a gate says (a model saved before the gate).
    plane: str = ""
    plane_probabilities: dict[str, float] = field(default_factory=dict)  # P(each plane)
    plane_source: str = ""  # "header" (DICOM/NIfTI: exact), "gate" (the network) or ""
    # The most likely of config["tumor_types"] and P(each), only when the label
    # is "tumor" and the model has a type network: a research output.
    tumor_type: str | None = None
    type_probabilities: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        """The JSON-friendly part (no images)."""
        return {
            "tumor_probability": self.tumor_probability,
            "label": self.label,
            "tumor_type": self.tumor_type,
            "type_probabilities": self.type_probabilities,
            "out_of_distribution": self.out_of_distribution,
            "plane": self.plane,
            "plane_probabilities": self.plane_probabilities,
            "plane_source": self.plane_source,
            "anomaly_score": self.anomaly_score,
            **self.ood_scores(),
        }

    def ood_scores(self) -> dict[str, float]:
        """The score of each check in detector.ood.CHECKS."""
        return {name: getattr(self, name) for name, _, _ in CHECKS}


class BrainTumorDetector(
    ModelHubMixin,
    library_name="keras",
    pipeline_tag="image-classification",
    license="mit",
    tags=["medical-imaging", "mri", "brain-tumor", "keras"],
):
    """Tumour classifier plus autoencoder anomaly detector for brain-MRI slices.

    ``config`` holds everything needed to run the pair the way it was trained
    (preprocessing, thresholds, calibration) and what it scored (metrics);
    ``assets`` holds the files that document it (plots, split.json), written
    back unchanged by ``save_pretrained``; ``ood`` holds the arrays of the
    layout check (detector.ood.fit_layout) and of the gate's feature distance
    (detector.ood.fit_feature_distance), each absent when the model has none;
    ``plane_gate`` is detector.plane's network, None when the model has none
    (a DICOM or NIfTI header still says the plane then); ``type_classifier``
    gives P(each of config["tumor_types"]) of a tumour slice, None when the
    model has none.
    """

    def __init__(
        self,
        classifier,
        autoencoder,
        config: dict,
        assets: dict | None = None,
        ood: dict | None = None,
        plane_gate=None,
        type_classifier=None,
    ):
        self.classifier = classifier
        self.autoencoder = autoencoder
        self.config = config
        self.assets = dict(assets or {})
        self.ood = dict(ood or {})
        self.preprocess_config = PreprocessConfig.from_dict(config["preprocessing"])
        self._grad_cams = {}  # compiled on the first explanation: predict-only users pay nothing
        self._grad_cam_lock = threading.Lock()
        self.plane_gate = plane_gate  # compiles the forward pass
        self.type_classifier = type_classifier  # and the type network's

    @property
    def plane_gate(self):
        return self._plane_gate

    @plane_gate.setter
    def plane_gate(self, gate) -> None:
        """A new gate (benchmarks/plane_gate.py puts one in) needs a new forward pass:
        the compiled graph holds the networks it was traced with."""
        import tensorflow as tf

        self._plane_gate = gate
        size, channels = self.preprocess_config.image_size, self.preprocess_config.channels
        gate_and_features = None if gate is None else plane.with_features(gate)

        def forward(x, x_gate):
            if gate is None:
                planes = tf.zeros([tf.shape(x)[0], len(plane.PLANES)])
                features = tf.zeros([tf.shape(x)[0], 1])
            else:
                planes, features = gate_and_features(x_gate, training=False)
            classified = self._tta(self.classifier, x)
            return classified, self.autoencoder(x, training=False), planes, features

        # One compiled graph for all networks: model.predict costs ~35 ms of
        # per-call overhead, far more than the networks themselves.
        self._forward = tf.function(
            forward,
            input_signature=[
                tf.TensorSpec([None, size, size, channels], tf.float32),
                tf.TensorSpec([None, size, size, 1], tf.float32),
            ],
        )

    @property
    def gate_config(self) -> PreprocessConfig:
        """What the plane gate reads: the crop in grey, letterboxed if config["gate_letterbox"]
        says so, else as the classifier reads it (every gate saved before the option)."""
        letterbox = self.config.get("gate_letterbox", self.preprocess_config.letterbox)
        return replace(self.preprocess_config, channels=1, letterbox=letterbox)

    def gate_inputs(self, x: np.ndarray, x_gate: np.ndarray | None = None) -> np.ndarray:
        """The gate's inputs of the classifier's inputs ``x``: ``x_gate`` when given (made
        at self.gate_config), else x in grey, which is only right when the gate reads
        the crop as the classifier does."""
        if x_gate is not None:
            return x_gate
        reads_alike = self.gate_config.letterbox == self.preprocess_config.letterbox
        if self.plane_gate is not None and not reads_alike:
            raise ValueError(
                "This model's plane gate reads the crop letterboxed and the classifier does not: "
                "pass x_gate, the inputs made at detector.gate_config."
            )
        return x.mean(axis=-1, keepdims=True)

    @property
    def type_classifier(self):
        return self._type_classifier

    @type_classifier.setter
    def type_classifier(self, network) -> None:
        """A new type network (benchmarks/type_network.py puts one in) needs its own
        compiled forward pass and Grad-CAM. It reads the same crop at its own, finer
        size (config["type_image_size"]): tumour types need more detail than detection."""
        import tensorflow as tf

        self._type_classifier = network
        self.tumor_types = list(self.config.get("tumor_types", [])) if network is not None else []
        self.type_config = replace(
            self.preprocess_config,
            image_size=self.config.get("type_image_size", self.preprocess_config.image_size),
        )
        side, channels = self.type_config.image_size, self.type_config.channels
        self._type_forward = None
        if network is not None:
            self._type_forward = tf.function(
                lambda x: self._tta(network, x),
                input_signature=[tf.TensorSpec([None, side, side, channels], tf.float32)],
            )
        self._grad_cams.pop("type_classifier", None)

    def _tta(self, network, x):
        p = network(x, training=False)
        if self.config.get("tta_flip", False):  # test-time augmentation: average with the mirror
            import tensorflow as tf

            p = (p + network(tf.reverse(x, axis=[2]), training=False)) / 2
        return p

    # ------------------------------------------------------------------ predict
    def predict(self, source, *, slice_index: int | None = None) -> Prediction:
        """Classify one slice (path, bytes, PIL image, array, .dcm, .nii[.gz])."""
        return self.predict_batch([source], slice_index=slice_index)[0]

    def predict_batch(self, sources, *, slice_index: int | None = None) -> list[Prediction]:
        """Classify many slices with one pass of each network.

        Any bad input raises InvalidImageError naming its position.
        """
        sources = list(sources)
        slices = []
        for i, source in enumerate(sources):
            try:
                slices.append(preprocess(source, self.preprocess_config, slice_index=slice_index))
            except InvalidImageError as exc:
                if len(sources) == 1:
                    raise
                raise InvalidImageError(f"Input {i + 1}: {exc}") from None
        if not slices:
            return []
        return self._predict_slices(slices)

    def predict_arrays(
        self, x: np.ndarray, chroma: np.ndarray | None = None, x_gate: np.ndarray | None = None
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Preprocessed inputs -> (calibrated P(tumour), the score of each check in detector.ood).

        ``chroma``: the inputs' Preprocessed.chroma; None means grey pictures.
        ``x_gate``: the same slices at self.gate_config (gate_inputs).
        """
        x_gate = self.gate_inputs(x, x_gate)
        probabilities, reconstructions, planes, distances = self._run(x, x_gate)
        scores = self._ood_scores(x, reconstructions, chroma)
        not_axial = self.planes(planes)[1][:, 1:].sum(axis=1)
        return probabilities, {**scores, "not_axial": not_axial, "gate_distance": distances}

    def run_networks(self, x: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """Preprocessed inputs -> (calibrated P(tumour), autoencoder reconstructions)."""
        return self._run(x, x.mean(axis=-1, keepdims=True), batch_size)[:2]  # gate unread

    def type_probabilities(self, x_type: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Inputs at self.type_config's size -> P(each of self.tumor_types), (N, K).

        Raises ValueError for a model without a type network.
        """
        if self.type_classifier is None:
            raise ValueError("This model has no tumour-type network (it was saved without one).")
        batches = [
            self._type_forward(
                np.ascontiguousarray(x_type[start : start + batch_size], np.float32)
            ).numpy()
            for start in range(0, len(x_type), batch_size)
        ]
        return (
            np.concatenate(batches).astype(np.float64)
            if batches
            else np.zeros((0, len(self.tumor_types)))
        )

    def _run(self, x: np.ndarray, x_gate: np.ndarray, batch_size: int = 64):
        """-> calibrated P(tumour), reconstructions, the gate's P(each plane) and its
        features' distance (detector.ood.feature_distances; zeros: no gate or no fit)."""
        outputs = [[], [], [], []]
        for start in range(0, len(x), batch_size):
            part = slice(start, start + batch_size)
            batch = self._forward(
                np.ascontiguousarray(x[part], np.float32),
                np.ascontiguousarray(x_gate[part], np.float32),
            )
            for out, tensor in zip(outputs, batch):
                out.append(tensor.numpy())
        probabilities, reconstructions, planes, features = map(np.concatenate, outputs)
        distances = (
            feature_distances(features, self.ood)
            if "gate_feature_means" in self.ood and self.plane_gate is not None
            else np.zeros(len(x))
        )
        return self.calibrate(probabilities[:, 0]), reconstructions, planes, distances

    def planes(
        self, gate_probabilities: np.ndarray, headers: list[str] | None = None
    ) -> tuple[list[str], np.ndarray, list[str]]:
        """Each slice's plane, P(each of plane.PLANES) and where that came from.

        A DICOM or NIfTI header (Preprocessed.plane) says the plane exactly,
        so it wins over the gate; without either, the plane is unknown ("").
        """
        headers = headers or [""] * len(gate_probabilities)
        p = np.array(gate_probabilities, np.float64)
        sources = ["gate" if self.plane_gate is not None else ""] * len(p)
        for i, header in enumerate(headers):
            if header:
                p[i], sources[i] = np.eye(len(plane.PLANES))[plane.PLANES.index(header)], "header"
        names = plane.verdicts(p, limit("plane_threshold", self.config))
        return [n if s else "" for n, s in zip(names, sources)], p, sources

    def _ood_scores(self, x, reconstructions, chroma) -> dict[str, np.ndarray]:
        return {
            "chroma": np.zeros(len(x)) if chroma is None else np.asarray(chroma, np.float64),
            "background_level": background_levels(x),
            "layout_score": self.layout_scores(x),
            "anomaly_score": np.mean((x - reconstructions) ** 2, axis=(1, 2, 3)),
            "anomaly_ratio": anomaly_ratios(x, reconstructions),
        }

    def layout_scores(self, x: np.ndarray) -> np.ndarray:
        """detector.ood's layout score of preprocessed inputs (zeros when the model has no check)."""
        if "layout_mean" not in self.ood:
            return np.zeros(len(x))
        return layout_scores(x, self.ood)

    def out_of_distribution(self, scores: dict[str, np.ndarray]) -> np.ndarray:
        """Where any check of detector.ood fires. Each catches what the others miss:
        the autoencoder rebuilds sagittal slices and smooth photos well, the layout
        check passes a cat's face, only the fixed rules see colour and paper."""
        return np.any(list(failed_checks(scores, self.config).values()), axis=0)

    def _predict_slices(self, slices: list[Preprocessed]) -> list[Prediction]:
        x = np.stack([s.x for s in slices])
        x_gate = None  # the classifier's inputs in grey, unless the gate reads the crop its own way
        if self.gate_config.letterbox != self.preprocess_config.letterbox:
            x_gate = np.stack([to_input(s.cropped, self.gate_config) for s in slices])
        x_gate = self.gate_inputs(x, x_gate)
        probabilities, reconstructions, gate, distances = self._run(x, x_gate)
        names, planes, sources = self.planes(gate, [s.plane for s in slices])
        scores = self._ood_scores(x, reconstructions, [s.chroma for s in slices])
        scores["not_axial"] = planes[:, 1:].sum(axis=1)
        # A header says plane and modality exactly: the gate's answers are not used.
        scores["gate_distance"] = np.where(np.array(sources) == "header", 0.0, distances)
        flags = self.out_of_distribution(scores)
        labels = [self.label_for(float(p), bool(ood)) for p, ood in zip(probabilities, flags)]
        types = self._types_of_tumours(slices, labels)
        results = []
        for i, preprocessed in enumerate(slices):
            error = np.abs(x[i] - reconstructions[i]).mean(axis=-1)
            results.append(
                Prediction(
                    tumor_probability=float(probabilities[i]),
                    label=labels[i],
                    out_of_distribution=bool(flags[i]),
                    cropped=preprocessed.cropped,
                    reconstruction=_to_uint8(reconstructions[i].mean(axis=-1)),
                    error_map=_to_uint8(error / max(float(error.max()), 1e-6)),
                    plane=names[i],
                    plane_probabilities=(
                        dict(zip(plane.PLANES, map(float, planes[i]))) if sources[i] else {}
                    ),
                    plane_source=sources[i],
                    tumor_type=max(types[i], key=types[i].get) if i in types else None,
                    type_probabilities=types.get(i, {}),
                    **{name: float(score[i]) for name, score in scores.items()},
                )
            )
        return results

    def _types_of_tumours(self, slices: list[Preprocessed], labels: list[str]) -> dict[int, dict]:
        """P(each tumour type) of the slices labelled "tumor", by position; {} without a type network."""
        tumours = [i for i, label in enumerate(labels) if label == "tumor"]
        if self.type_classifier is None or not tumours:
            return {}
        x_type = np.stack([to_input(slices[i].cropped, self.type_config) for i in tumours])
        p = self.type_probabilities(x_type)
        return {i: dict(zip(self.tumor_types, map(float, row))) for i, row in zip(tumours, p)}

    def calibrate(self, probabilities: np.ndarray) -> np.ndarray:
        """Temperature scaling fitted on validation slices (T = 1 leaves p unchanged)."""
        temperature = self.config.get("temperature", 1.0)
        p = np.clip(np.asarray(probabilities, np.float64), 1e-7, 1 - 1e-7)
        return 1.0 / (1.0 + np.exp(-np.log(p / (1 - p)) / temperature))

    def label_for(self, probability: float, out_of_distribution: bool = False) -> str:
        low, high = self.config["inconclusive_band"]
        if out_of_distribution or low <= probability <= high:
            return "inconclusive"
        return "tumor" if probability >= self.config["decision_threshold"] else "normal"

    # ------------------------------------------------------------------ explain
    def explain(self, source, *, slice_index: int | None = None) -> np.ndarray:
        """Grad-CAM heat map (float32 in [0, 1], model input size) for one slice."""
        return self.heat_map(preprocess(source, self.preprocess_config, slice_index=slice_index).x)

    def predict_and_explain(self, preprocessed: Preprocessed) -> tuple[Prediction, np.ndarray]:
        """predict() and explain() of one slice already preprocessed: decoded and cropped once."""
        return self._predict_slices([preprocessed])[0], self.heat_map(preprocessed.x)

    def heat_map(self, x: np.ndarray, network: str = "classifier") -> np.ndarray:
        """Grad-CAM heat map of one preprocessed input (S, S, C): where the
        "classifier" saw a tumour, or where the "type_classifier" saw its type
        (x then at self.type_config's size)."""
        return self.heat_maps(x[None], network)[0]

    def heat_maps(self, x: np.ndarray, network: str = "classifier") -> np.ndarray:
        """Grad-CAM heat maps (N, S, S) of preprocessed inputs (N, S, S, C)."""
        with self._grad_cam_lock:  # the app explains from several threads; compile once
            if network not in self._grad_cams:
                from .explain import GradCam

                self._grad_cams[network] = GradCam(getattr(self, network))
        return self._grad_cams[network](x)

    # ------------------------------------------------------------- save / load
    def _save_pretrained(self, save_directory: Path) -> None:
        from .card import render_model_card

        save_directory = Path(save_directory)
        _save_keras(self.classifier, save_directory / CLASSIFIER_FILE)
        _save_keras(self.autoencoder, save_directory / AUTOENCODER_FILE)
        if self.plane_gate is not None:
            _save_keras(self.plane_gate, save_directory / PLANE_GATE_FILE)
        if self.type_classifier is not None:
            _save_keras(self.type_classifier, save_directory / TYPE_CLASSIFIER_FILE)
        (save_directory / CONFIG_FILE).write_text(json.dumps(self.config, indent=2) + "\n")
        np.savez(save_directory / OOD_FILE, **self.ood)
        for name, data in self.assets.items():
            (save_directory / name).write_bytes(data)
        (save_directory / "README.md").write_text(
            render_model_card(self.config, self.assets), encoding="utf-8"
        )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs) -> BrainTumorDetector:
        """A local model directory, or a Hub repo id ("user/repo", revision=... to pin it).

        Hub failures (offline and not cached, no such repo or revision) raise
        detector.hub.ModelDownloadError with a message naming the repo. They are
        caught here, not in _from_pretrained, because ModelHubMixin downloads
        config.json before it calls _from_pretrained.
        """
        from .hub import DOWNLOAD_ERRORS, ModelDownloadError, download_failure_message

        try:
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        except DOWNLOAD_ERRORS as exc:
            model_id, revision = str(pretrained_model_name_or_path), kwargs.get("revision")
            message = download_failure_message(exc, model_id, revision, kwargs.get("cache_dir"))
            raise ModelDownloadError(message) from exc

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision: str | None,
        cache_dir,
        force_download: bool,
        local_files_only: bool,
        token,
        **model_kwargs,
    ) -> BrainTumorDetector:
        local = Path(model_id)
        if local.is_dir():
            paths = {name: local / name for name in (*MODEL_FILES, *OPTIONAL_FILES)}
            assets = read_assets(local)
        else:
            paths = {
                name: Path(
                    hf_hub_download(
                        repo_id=model_id,
                        filename=name,
                        revision=revision,
                        cache_dir=cache_dir,
                        force_download=force_download,
                        local_files_only=local_files_only,
                        token=token,
                    )
                )
                for name in MODEL_FILES
            }
            paths.update(
                _download_optional(
                    model_id, revision, cache_dir, force_download, local_files_only, token
                )
            )
            assets = {}
        # Models saved before the layout check existed have no ood.npz: run without it.
        missing = [n for n in MODEL_FILES if not paths[n].is_file() and n != OOD_FILE]
        if missing:
            raise FileNotFoundError(f"{model_id} is not a model directory: missing {missing}.")
        return cls(
            classifier=_load_keras(paths[CLASSIFIER_FILE]),
            autoencoder=_load_keras(paths[AUTOENCODER_FILE]),
            config=json.loads(paths[CONFIG_FILE].read_text()),
            assets=assets,
            ood=_load_arrays(paths[OOD_FILE]) if paths[OOD_FILE].is_file() else {},
            plane_gate=_load_optional(paths, PLANE_GATE_FILE),
            type_classifier=_load_optional(paths, TYPE_CLASSIFIER_FILE),
        )


def _load_optional(paths: dict[str, Path], name: str):
    """The network in OPTIONAL_FILES ``name``, None when the model has none."""
    path = paths.get(name)
    return _load_keras(path) if path and path.is_file() else None


def _download_optional(repo_id, revision, cache_dir, force_download, local_files_only, token):
    """OPTIONAL_FILES the Hub repo has (one pushed before the plane gate or the type network lacks them)."""
    from huggingface_hub.errors import RemoteEntryNotFoundError

    found = {}
    for name in OPTIONAL_FILES:
        try:
            found[name] = Path(
                hf_hub_download(
                    repo_id=repo_id, filename=name, revision=revision, cache_dir=cache_dir,
                    force_download=force_download, local_files_only=local_files_only, token=token,
                )
            )  # fmt: skip
        except RemoteEntryNotFoundError:
            pass
    return found


def read_assets(directory: Path) -> dict[str, bytes]:
    """A model directory's plots and tables (what its card shows or lists), by file name."""
    return {
        p.name: p.read_bytes()
        for p in sorted(directory.iterdir())
        if p.is_file() and p.name.endswith(ASSET_SUFFIXES) and p.name != CONFIG_FILE
    }


def _load_arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def _save_keras(model, path: Path) -> None:
    """Save weights and architecture only: optimiser state would triple the size.

    An uncompiled functional view over the same layers has no optimiser to save.
    """
    import keras

    keras.Model(model.input, model.output, name=model.name).save(path)


def _load_keras(path: Path):
    import keras

    from . import models  # noqa: F401  registers the layers of ours a classifier may hold

    return keras.saving.load_model(path, compile=False, safe_mode=True)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)
