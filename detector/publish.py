"""Publish a model to the Hugging Face Hub.

Pushing goes through ``BrainTumorDetector.push_to_hub`` (ModelHubMixin:
create_repo, save_pretrained into a temp dir, one upload_folder commit), so
the Hub repo holds exactly what ``save_pretrained`` writes.
"""

from __future__ import annotations

from pathlib import Path

from .detector import MODEL_FILES, BrainTumorDetector
from .hub import NETWORK_ERRORS, PublishError, commit_message, push_failure_message, resolve_token


def push_model_dir(
    detector_or_dir, repo_id: str, private: bool = False, token: str | None = None
) -> str:
    """Upload a model (a BrainTumorDetector or a saved model directory) to the Hub.

    Returns the commit URL. Raises PublishError, with a message a person can act
    on, when there is no token or the Hub cannot be reached; the token itself
    never appears in any message.
    """
    token = resolve_token(token)
    detector = _as_detector(detector_or_dir)
    try:
        commit = detector.push_to_hub(
            repo_id, commit_message=commit_message(detector.config), private=private, token=token
        )
    except NETWORK_ERRORS as exc:
        raise PublishError(push_failure_message(exc, repo_id)) from exc
    return str(commit)  # CommitInfo is a str: the commit URL


def _as_detector(detector_or_dir) -> BrainTumorDetector:
    if isinstance(detector_or_dir, BrainTumorDetector):
        return detector_or_dir
    directory = Path(detector_or_dir)
    missing = [name for name in MODEL_FILES if not (directory / name).is_file()]
    if missing:
        raise PublishError(
            f"{directory} is not a complete model directory (missing {', '.join(missing)})."
        )
    return BrainTumorDetector.from_pretrained(directory)
