"""The Hugging Face Hub boundary: tokens, commit messages, and why a push or a
download failed, in words a person can act on.

Below detector.detector (which uses the download messages); detector.publish,
above both, does the pushing.
"""

from __future__ import annotations

import importlib
import os

from huggingface_hub import constants, get_token
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from .card import fmt_metric, metric_value

LOGIN_HELP = (
    "Log in with `hf auth login` (a token with write access from "
    "https://huggingface.co/settings/tokens), or set the HF_TOKEN environment variable."
)


class PublishError(RuntimeError):
    """A push that did not happen; the message says what to do about it."""


class ModelDownloadError(OSError):
    """A Hub model that could not be fetched; the message names the repo and the way out."""


def _transport_errors() -> tuple[type[Exception], ...]:
    """Connection and timeout errors of whichever HTTP client huggingface_hub uses
    (httpx2 in 2.x, httpx in 1.x, requests in 0.x): they are not OSErrors."""
    errors: list[type[Exception]] = [ConnectionError, TimeoutError]
    for module, name in (
        ("httpx2", "TransportError"),
        ("httpx", "TransportError"),
        ("requests", "RequestException"),
    ):
        try:
            errors.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


TRANSPORT_ERRORS = _transport_errors()
NETWORK_ERRORS = (HfHubHTTPError, OfflineModeIsEnabled, *TRANSPORT_ERRORS)
# What hf_hub_download raises for a repo it cannot fetch (offline + not cached:
# LocalEntryNotFoundError; a path that is no directory and no repo id: HFValidationError).
DOWNLOAD_ERRORS = (HFValidationError, LocalEntryNotFoundError, *NETWORK_ERRORS)


# ------------------------------------------------------------------ publish
def resolve_token(token: str | None = None) -> str:
    """The token to push with: the argument, then HF_TOKEN, then the `hf auth login` cache."""
    token = token or os.environ.get("HF_TOKEN") or get_token()
    if not token:
        raise PublishError(f"No Hugging Face token found, so nothing was pushed. {LOGIN_HELP}")
    return token


def commit_message(config: dict) -> str:
    """'Upload brain-tumour detector: test accuracy 0.953 [0.936, 0.968], AUROC 0.987, ...'."""
    test = (config.get("metrics") or {}).get("test") or {}
    if metric_value(test.get("accuracy")) is None:
        return "Upload brain-tumour detector (not evaluated)"
    parts = [f"test accuracy {fmt_metric(test['accuracy'])}"]
    for key in ("auroc", "sensitivity", "specificity"):
        value = metric_value(test.get(key))
        if value is not None:
            parts.append(f"{'AUROC' if key == 'auroc' else key} {value:.3f}")
    return "Upload brain-tumour detector: " + ", ".join(parts)


def push_failure_message(exc: Exception, repo_id: str) -> str:
    if isinstance(exc, OfflineModeIsEnabled):
        return f"HF_HUB_OFFLINE is set, so {repo_id} was not pushed. Unset it and run again."
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status in (401, 403):
        return f"The Hub refused the push to {repo_id} (HTTP {status}): the token lacks write access there. {LOGIN_HELP}"
    if isinstance(exc, HfHubHTTPError):
        return f"The Hub refused the push to {repo_id} (HTTP {status}): {_first_line(exc)}"
    return (
        f"Could not reach the Hugging Face Hub to push {repo_id} ({type(exc).__name__}: {_first_line(exc)}). "
        "Check the network connection (and HF_ENDPOINT / proxy settings) and run the push again."
    )


# ----------------------------------------------------------------- download
def download_failure_message(
    exc: Exception, repo_id: str, revision: str | None, cache_dir=None
) -> str:
    """Why BrainTumorDetector.from_pretrained(repo_id) failed, and what to do."""
    where = repo_id + (f" (revision {revision!r})" if revision else "")
    if isinstance(exc, HFValidationError):
        return f"{repo_id!r} is neither a model directory on this machine nor a Hub repo id like 'user/repo'."
    if isinstance(exc, GatedRepoError):
        return f"{where} is gated: accept its terms on huggingface.co, then log in. {LOGIN_HELP}"
    if isinstance(exc, RepositoryNotFoundError):
        return f"{where} was not found on the Hugging Face Hub. Check the id; if it is private, log in. {LOGIN_HELP}"
    if isinstance(exc, RevisionNotFoundError):
        return f"Revision {revision!r} does not exist in {repo_id} on the Hugging Face Hub."
    if isinstance(exc, RemoteEntryNotFoundError):
        return (
            f"{where} lacks a model file ({_first_line(exc)}): is it a brain-tumour detector repo?"
        )
    if isinstance(exc, (LocalEntryNotFoundError, OfflineModeIsEnabled, *TRANSPORT_ERRORS)):
        if constants.HF_HUB_OFFLINE:
            reason, fix = (
                "offline mode is on (HF_HUB_OFFLINE=1)",
                "Unset HF_HUB_OFFLINE and connect",
            )
        else:
            reason, fix = (
                "the Hugging Face Hub could not be reached",
                "Check the network connection",
            )
        return (
            f"Could not load {where}: {reason} and its files are not in the local cache "
            f"({cache_dir or constants.HF_HUB_CACHE}). {fix} to download it once, "
            "or load a local model directory instead, e.g. 'pretrained'."
        )
    return f"The Hugging Face Hub could not serve {where}: {_first_line(exc)}"


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
