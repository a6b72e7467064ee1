"""Find an EMAGE checkpoint (local folder or Hugging Face Hub repo) and read its files.

A checkpoint uses the layout of the released ``H-Liu1997/emage_audio`` repo::

    config.json + model.safetensors | pytorch_model.bin          the audio model
    emage_vq/{face,upper,hands,lower}/config.json + weights     the four VQ-VAEs
    emage_vq/global/config.json + weights                        the global-motion autoencoder

This module only finds and reads files: it returns configs (``dict``) and state dicts
(``dict[str, torch.Tensor]``); building the networks is `emage_core.models.emage.model`'s job.

Downloads go through ``huggingface_hub.snapshot_download``, so the usual settings apply:
``HF_HOME`` / ``HF_HUB_CACHE`` (where the cache lives), ``HF_HUB_OFFLINE=1`` (never touch the
network), ``HF_TOKEN`` (private repos), ``HF_ENDPOINT`` (mirrors) and ``HF_HUB_ETAG_TIMEOUT``.
``huggingface_hub`` reads these environment variables once, when it is imported.

Typical use::

    ckpt = load_checkpoint("H-Liu1997/emage_audio")    # or a local folder, or None
    ckpt.audio.config, ckpt.audio.state_dict, ckpt.parts["face"].state_dict
    ckpt.provenance()                                  # JSON-ready: where it came from, sha256s
"""
from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import torch
from huggingface_hub import HfApi, constants, is_offline_mode, snapshot_download
from huggingface_hub.errors import LocalEntryNotFoundError, RevisionNotFoundError
from huggingface_hub.utils import HFValidationError, validate_repo_id
from safetensors.torch import load_file

from ..assets import CHECKPOINTS
from ..files import sha256_file

try:  # huggingface_hub >= 2: snapshot_download caches each commit's file listing
    from huggingface_hub import get_cached_repo_tree
except ImportError:  # older versions keep no listing, so there is nothing to consult
    get_cached_repo_tree = None

__all__ = [
    "HubRepo",
    "DEFAULT_REPO_ID",
    "REPO_ID_ENV",
    "BUNDLED_CHECKPOINT",
    "SUBMODELS",
    "SUBMODEL_FOLDERS",
    "CONFIG_NAME",
    "WEIGHTS_NAMES",
    "WeightsError",
    "ResolvedSource",
    "LoadedComponent",
    "Checkpoint",
    "default_repo_id",
    "default_source",
    "resolve_source",
    "load_component",
    "load_checkpoint",
]

logger = logging.getLogger(__name__)

DEFAULT_REPO_ID = "H-Liu1997/emage_audio"
"""The released weights; used when ``EMAGE_REPO_ID`` is unset (see `default_repo_id`)."""
REPO_ID_ENV = "EMAGE_REPO_ID"

SUBMODELS = ("face", "upper", "hands", "lower", "global")
SUBMODEL_FOLDERS = {name: f"emage_vq/{name}" for name in SUBMODELS}

CONFIG_NAME = "config.json"
# In order of preference: safetensors cannot run code when loaded and is read without a copy.
WEIGHTS_NAMES = ("model.safetensors", "pytorch_model.bin")

_COMPONENT_FOLDERS = ("", *SUBMODEL_FOLDERS.values())  # "" = the audio model at the root
_COMMIT_HASH = re.compile(r"[0-9a-f]{40}")
_LIBRARY_NAME = "emage-studio"  # shows up in the Hub's user agent, as libraries built on huggingface_hub do


class WeightsError(RuntimeError):
    """A checkpoint could not be found, downloaded or read; the message says which and where."""


@dataclass(frozen=True)
class ResolvedSource:
    """Where a checkpoint's files are on disk, and where they came from.

    Attributes:
        folder: local folder in the Hub layout (for Hub repos, a snapshot folder inside the cache).
        source: what the caller asked for: the path as given, or the repo id.
        kind: ``"local"`` for a folder given by path, ``"hub"`` for a Hub repo.
        revision: the commit hash of the snapshot; ``None`` for a plain local folder.
    """

    folder: Path
    source: str
    kind: Literal["local", "hub"]
    revision: str | None = None


@dataclass
class LoadedComponent:
    """One model's files: its config, its weights, and the sha256 of every file read.

    ``files`` maps each file's path relative to the checkpoint root (``"emage_vq/face/config.json"``)
    to its sha256 hex digest.
    """

    config: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    files: dict[str, str] = field(default_factory=dict)


@dataclass
class Checkpoint:
    """A full EMAGE checkpoint: the audio model plus the five sub-models of `SUBMODELS`."""

    resolved: ResolvedSource
    audio: LoadedComponent
    parts: dict[str, LoadedComponent]

    def provenance(self) -> dict[str, Any]:
        """Where the weights came from, JSON-serialisable: source, kind, commit and per-file sha256."""
        files = dict(self.audio.files)
        for part in self.parts.values():
            files.update(part.files)
        return {
            "source": self.resolved.source,
            "kind": self.resolved.kind,
            "revision": self.resolved.revision,
            "files": dict(sorted(files.items())),
        }


def default_repo_id() -> str:
    """The Hub repo to use when none is given: ``$EMAGE_REPO_ID``, else `DEFAULT_REPO_ID`.

    Read at each call, so the variable can be set after import (the author's account may move).
    """
    return os.environ.get(REPO_ID_ENV) or DEFAULT_REPO_ID


BUNDLED_CHECKPOINT = CHECKPOINTS / "emage_studio_default"
"""The small checkpoint shipped inside the package (trained on a BEAT2 sample: see its README.md)."""


def default_source() -> str | os.PathLike:
    """What ``source=None`` means everywhere in this module (the one place to change it).

    ``$EMAGE_REPO_ID`` when it is set (an explicit choice of Hub repo); otherwise the bundled
    checkpoint, so generation works offline on a fresh machine; the released weights when a
    stripped install lacks the bundled folder. The Hub weights stay available by name.
    """
    if os.environ.get(REPO_ID_ENV):
        return os.environ[REPO_ID_ENV]
    if (BUNDLED_CHECKPOINT / CONFIG_NAME).is_file():
        return BUNDLED_CHECKPOINT
    return DEFAULT_REPO_ID


class HubRepo(str):
    """A Hub repo id that must never be taken for a local folder (references from users)."""


def resolve_source(source: str | os.PathLike | None = None, revision: str | None = None, *,
                   hub_files: Collection[str] | None = None) -> ResolvedSource:
    """Find the folder holding a checkpoint, downloading it from the Hub if needed.

    Args:
        source: an existing local folder in the Hub layout, or a Hub repo id ``"owner/name"``.
            An existing folder wins over a repo id of the same spelling (as in ``transformers``),
            except for a `HubRepo`, which always means the Hub.
            ``None`` means `default_source` (``$EMAGE_REPO_ID`` if set, else the bundled checkpoint).
        revision: Hub branch, tag or commit hash (default: the repo's main branch). Ignored for
            local folders.
        hub_files: the files a Hub download fetches (another family's layout); default: EMAGE's.

    Returns:
        The resolved source; for the Hub, ``revision`` is the commit hash of the snapshot used.

    Raises:
        WeightsError: the folder does not exist, the string is neither a folder nor a repo id,
            or the Hub cannot provide the files and nothing usable is cached.
    """
    if source is None:
        source = default_source()
    if isinstance(source, HubRepo):
        validate_repo_id(source)
        return _resolve_hub(str(source), revision, hub_files)
    path = Path(source).expanduser()
    if path.is_dir():
        folder = path.resolve()
        # A folder inside the Hub cache still knows its commit: keep it for provenance.
        return ResolvedSource(folder=folder, source=str(source), kind="local", revision=_snapshot_commit(folder))
    if path.exists():
        raise WeightsError(f"Checkpoint source {str(path)!r} is a file; expected a folder or a Hub repo id.")
    if isinstance(source, str) and _looks_like_repo_id(source):
        return _resolve_hub(source, revision, hub_files)
    raise WeightsError(
        f"Checkpoint source {str(source)!r} is neither an existing folder nor a Hub repo id "
        f"('owner/name'); no folder exists at {str(path.absolute())!r}."
    )


def load_component(folder: Path, subfolder: str = "") -> LoadedComponent:
    """Read one model's ``config.json`` and weights from ``folder / subfolder``.

    Weights come from ``model.safetensors`` when present, else from ``pytorch_model.bin``, which
    is read with ``torch.load(weights_only=True)``: only tensors and plain containers are
    unpickled, never arbitrary objects.

    Raises:
        WeightsError: naming the file that is missing, unreadable, corrupt or not a flat
            ``{name: tensor}`` mapping.
    """
    folder = Path(folder)
    component_dir = folder / subfolder
    prefix = PurePosixPath(subfolder) if subfolder else PurePosixPath()

    config_path = component_dir / CONFIG_NAME
    config = _read_config(config_path)

    weights_path = next((component_dir / n for n in WEIGHTS_NAMES if (component_dir / n).is_file()), None)
    if weights_path is None:
        raise WeightsError(f"No weights in {str(component_dir)!r}: expected {' or '.join(WEIGHTS_NAMES)}.")
    state_dict = _read_weights(weights_path)

    files = {
        str(prefix / CONFIG_NAME): sha256_file(config_path),
        str(prefix / weights_path.name): sha256_file(weights_path),
    }
    return LoadedComponent(config=config, state_dict=state_dict, files=files)


def load_checkpoint(source: str | os.PathLike | None = None, revision: str | None = None) -> Checkpoint:
    """Resolve ``source`` (see `resolve_source`) and read the audio model and its five sub-models.

    Raises:
        WeightsError: if the checkpoint cannot be found or any of its files cannot be read.
    """
    resolved = resolve_source(source, revision)
    audio = load_component(resolved.folder)
    parts = {name: load_component(resolved.folder, SUBMODEL_FOLDERS[name]) for name in SUBMODELS}
    return Checkpoint(resolved=resolved, audio=audio, parts=parts)


# --- Hub ---------------------------------------------------------------------------------------


def _resolve_hub(repo_id: str, revision: str | None, files: Collection[str] | None = None) -> ResolvedSource:
    """Download (or find in the cache) the layout files of ``repo_id`` at ``revision`` (``files``: exact
    paths of another layout; default: EMAGE's)."""
    # Ask the Hub first ourselves, with a timeout: in this huggingface_hub version
    # `snapshot_download` sends its first request (repo_info) with no timeout at all, so a Hub
    # that accepts connections but never answers would hang it. The answer also lists the repo's
    # files, which lets us skip the .bin where a .safetensors twin exists.
    unreachable: str | None = None  # why the Hub could not be asked; None = it answered
    hub_error: Exception | None = None
    listing: Collection[str] | None = None
    if is_offline_mode():
        unreachable = "offline mode is on (HF_HUB_OFFLINE=1)"
    else:
        try:
            info = HfApi(library_name=_LIBRARY_NAME).repo_info(
                repo_id, revision=revision, timeout=constants.HF_HUB_ETAG_TIMEOUT
            )
            listing = {sibling.rfilename for sibling in info.siblings or ()}
        except RevisionNotFoundError as err:  # the Hub answered: no such branch, tag or commit
            raise WeightsError(f"Revision {revision!r} does not exist in Hub repo {repo_id!r}.") from err
        except Exception as err:  # unreachable, timed out, 5xx, private... as huggingface_hub does, try the cache
            unreachable, hub_error = _reason(err), err
    if unreachable is not None:
        # Choose files as the download that filled the cache did, so that snapshot_download's
        # completeness check (against the listing it cached then) agrees with what we ask for.
        listing = _cached_listing(repo_id, revision)

    where = f"{repo_id!r} (revision {revision or constants.DEFAULT_REVISION!r})"
    try:
        folder = snapshot_download(
            repo_id,
            revision=revision,
            allow_patterns=list(files) if files is not None else _files_to_fetch(listing),
            local_files_only=unreachable is not None,  # no second, untimed attempt at a silent Hub
            library_name=_LIBRARY_NAME,
        )
    except Exception as err:
        if unreachable is None:  # the Hub answered, then the download itself failed
            message = f"Could not download checkpoint {where} from the Hugging Face Hub: {_reason(err)}"
            raise WeightsError(message) from err
        raise WeightsError(_not_cached_message(where, unreachable, err)) from (hub_error or err)
    if hub_error is not None:
        logger.warning("Could not reach the Hub for %s (%s); using the cached snapshot.", where, unreachable)

    folder = Path(folder)
    commit = _snapshot_commit(folder)
    if commit is None:  # snapshot_download always returns <cache>/models--owner--name/snapshots/<commit>
        raise WeightsError(f"Unexpected snapshot folder {str(folder)!r} for {repo_id!r}: no commit hash in its name.")
    return ResolvedSource(folder=folder, source=repo_id, kind="hub", revision=commit)


def _not_cached_message(where: str, unreachable: str, cache_error: Exception) -> str:
    """Why a checkpoint is unavailable when the Hub could not be asked and the cache cannot serve it."""
    # A bare LocalEntryNotFoundError means "nothing cached"; its text talks of local_files_only,
    # which the caller never set. Its subclasses (an incomplete snapshot...) say something useful.
    if type(cache_error) is LocalEntryNotFoundError:
        cache = "has no copy of it"
    else:
        cache = f"has no complete copy of it ({_reason(cache_error)})"
    if is_offline_mode():
        hint = "Run once with the Hub reachable to fill the cache, or pass a local folder in the Hub layout."
    else:
        hint = ("To work without the Hub, set HF_HUB_OFFLINE=1 with a populated cache (HF_HOME / HF_HUB_CACHE), "
                "or pass a local folder in the Hub layout.")
    return (
        f"Could not get checkpoint {where} from the Hugging Face Hub: {unreachable}. "
        f"The cache {constants.HF_HUB_CACHE!r} {cache}. {hint}"
    )


def _files_to_fetch(listing: Collection[str] | None) -> list[str]:
    """Exact paths to download: each component's config plus one weights file.

    With the repo's file listing, take the preferred weights format present (the official .bin is
    556 MB: no need for both). Without it, allow both names and take whatever the repo has.
    """
    files = []
    for sub in _COMPONENT_FOLDERS:
        files.append(_join(sub, CONFIG_NAME))
        weights = [_join(sub, name) for name in WEIGHTS_NAMES]
        present = [w for w in weights if listing is not None and w in listing]
        files.extend(present[:1] or weights)
    return files


def _cached_listing(repo_id: str, revision: str | None) -> set[str] | None:
    """The file listing cached by an earlier download of this revision, or ``None`` if unknown."""
    if get_cached_repo_tree is None:
        return None
    try:
        return {entry.path for entry in get_cached_repo_tree(repo_id, revision=revision)}
    except Exception:  # not cached (or unreadable): snapshot_download then does no completeness check
        return None


def _reason(err: Exception) -> str:
    """One line saying what went wrong (Hub errors can span many lines)."""
    first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {first_line}" if first_line else type(err).__name__


def _looks_like_repo_id(text: str) -> bool:
    """``owner/name`` with the Hub's allowed characters (a bare ``name`` is more likely a typo'd path)."""
    if text.count("/") != 1:
        return False
    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


def _snapshot_commit(folder: Path) -> str | None:
    """The commit hash if ``folder`` is a Hub cache snapshot (``.../snapshots/<commit>``), else ``None``."""
    if folder.parent.name == "snapshots" and _COMMIT_HASH.fullmatch(folder.name):
        return folder.name
    return None


# --- Files -------------------------------------------------------------------------------------


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise WeightsError(f"Missing config file {str(path)!r}.")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise WeightsError(f"Cannot read config file {str(path)!r}: {err}") from err
    if not isinstance(config, dict):
        raise WeightsError(f"Config file {str(path)!r} must hold a JSON object, not {type(config).__name__}.")
    return config


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            state_dict = load_file(path, device="cpu")
        else:
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, corrupt, or pickled objects that weights_only refuses
        raise WeightsError(f"Cannot read weights file {str(path)!r}: {_reason(err)}") from err
    if not isinstance(state_dict, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state_dict.items()
    ):
        raise WeightsError(f"Weights file {str(path)!r} is not a flat mapping of tensor names to tensors.")
    return dict(state_dict)


def _join(subfolder: str, name: str) -> str:
    return f"{subfolder}/{name}" if subfolder else name
