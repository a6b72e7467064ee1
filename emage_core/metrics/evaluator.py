"""The official evaluator's files: fetched from the Hugging Face Hub (or a local folder), checked, loaded.

The released evaluator lives in the Hub repo ``H-Liu1997/emage_evaltools`` (``$EMAGE_EVALTOOLS_REPO``
overrides it), at its root:

    AESKConv_240_100.bin          the FGD encoder, ``torch.save({"model_state": state_dict})``
    mean_vel_smplxflame_30.npy    BC's normaliser: BEAT2's mean speed of each of the 55 joints
    config.json                   (absent in the released repo) an evaluator of another size

Downloads go through ``huggingface_hub.hf_hub_download`` and its standard cache (``HF_HOME``,
``HF_HUB_CACHE``, ``HF_HUB_OFFLINE``, ``HF_TOKEN`` apply); ``revision`` pins a branch, tag or commit and
the commit actually used is recorded with every file's sha256. The ``.bin`` is read with
``torch.load(weights_only=True)`` only: a file holding anything but tensors is refused, never
unpickled unsafely.

    ev = load_evaluator()                       # or load_evaluator("path/to/folder"), revision="<commit>"
    ev.model, ev.mean_vel, ev.provenance
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..files import sha256_file
from .fgd_encoder import RELEASED_FILE, FGDAutoencoder, FGDEncoderConfig, load_fgd_encoder

__all__ = [
    "DEFAULT_EVALUATOR_REPO", "EVALUATOR_REPO_ENV", "EVALUATOR_REVISION", "MEAN_VEL_FILE", "CONFIG_FILE",
    "SMPLX_IN_REPO", "EvaluatorError", "Evaluator", "evaluator_source", "fetch_evaluator_files", "load_evaluator",
]

DEFAULT_EVALUATOR_REPO = "H-Liu1997/emage_evaltools"
EVALUATOR_REPO_ENV = "EMAGE_EVALTOOLS_REPO"
#: The commit the numbers in our docs were made with. Unknown so far (the Hub was unreachable when this
#: was written): ``None`` takes the repo's main branch, and the commit used is recorded in every result.
EVALUATOR_REVISION: str | None = None
MEAN_VEL_FILE = "mean_vel_smplxflame_30.npy"
CONFIG_FILE = "config.json"
#: Where the evaluator repo keeps the (licence-restricted) SMPL-X model the official FK uses.
SMPLX_IN_REPO = "smplx_models/smplx/SMPLX_NEUTRAL_2020.npz"


class EvaluatorError(RuntimeError):
    """The evaluator's files could not be found, downloaded, verified or read; the message says which."""


@dataclass
class Evaluator:
    """The FGD encoder, BC's per-joint normaliser (55,) float32, and where they came from.

    ``provenance``: source, kind (``hub`` / ``local``), requested and resolved revision, ``files``
    (name -> sha256), ``config`` (``released`` or ``config.json``: an evaluator of another size, whose
    FGD is not comparable with published numbers).
    """

    model: FGDAutoencoder
    mean_vel: np.ndarray
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def released_architecture(self) -> bool:
        return self.model.config == FGDEncoderConfig.released()


def evaluator_source() -> str:
    """``$EMAGE_EVALTOOLS_REPO`` or `DEFAULT_EVALUATOR_REPO` (read at each call)."""
    return os.environ.get(EVALUATOR_REPO_ENV) or DEFAULT_EVALUATOR_REPO


def _hub_file(repo_id: str, filename: str, revision: str | None, *, optional: bool = False) -> Path | None:
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    if optional:  # a file the released repo does not have: ask the cache first, then the Hub once
        cached = try_to_load_from_cache(repo_id, filename, revision=revision)
        if isinstance(cached, str):
            return Path(cached)
        if cached is not None:  # the cache knows the Hub has no such file
            return None
    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision, library_name="emage-studio"))
    except (EntryNotFoundError, LocalEntryNotFoundError) as err:
        if optional:
            return None
        where = f"{repo_id!r} (revision {revision or 'main'!r})"
        if isinstance(err, LocalEntryNotFoundError):
            raise EvaluatorError(
                f"Could not get {filename} of the evaluator {where}: the Hub is unreachable (or HF_HUB_OFFLINE=1) "
                f"and the Hugging Face cache has no copy. Run once with the Hub reachable, or pass a local folder "
                f"holding {RELEASED_FILE} and {MEAN_VEL_FILE}.") from err
        raise EvaluatorError(f"The evaluator {where} has no file {filename}.") from err
    except Exception as err:
        if optional:
            return None
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise EvaluatorError(f"Could not download {filename} of the evaluator {repo_id!r}: "
                             f"{type(err).__name__}: {first}") from err


def _snapshot_commit(path: Path) -> str | None:
    parent = path.parent
    while parent != parent.parent:
        if parent.parent.name == "snapshots":
            return parent.name
        parent = parent.parent
    return None


def fetch_evaluator_files(source: str | os.PathLike | None = None, revision: str | None = EVALUATOR_REVISION
                          ) -> tuple[dict[str, Path | None], dict[str, Any]]:
    """The evaluator's files on disk: ``{"weights", "mean_vel", "config"}`` (config may be None), and
    where they came from (source, kind, revision requested and resolved).

    ``source``: a local folder holding the files, or a Hub repo id (default `evaluator_source`).
    """
    source = evaluator_source() if source is None else source
    path = Path(source).expanduser()
    if path.is_dir():
        files = {"weights": path / RELEASED_FILE, "mean_vel": path / MEAN_VEL_FILE, "config": path / CONFIG_FILE}
        for key in ("weights", "mean_vel"):
            if not files[key].is_file():
                raise EvaluatorError(f"The evaluator folder {str(path)!r} has no {files[key].name}.")
        if not files["config"].is_file():
            files["config"] = None
        return files, {"source": str(source), "kind": "local", "revision": _snapshot_commit(files["weights"])}
    repo_id = str(source)
    weights = _hub_file(repo_id, RELEASED_FILE, revision)
    commit = _snapshot_commit(weights)
    # the other files at the very commit the weights came from
    files = {"weights": weights, "mean_vel": _hub_file(repo_id, MEAN_VEL_FILE, commit or revision),
             "config": _hub_file(repo_id, CONFIG_FILE, commit or revision, optional=True)}
    return files, {"source": repo_id, "kind": "hub", "revision_requested": revision, "revision": commit}


def load_evaluator(source: str | os.PathLike | None = None, revision: str | None = EVALUATOR_REVISION,
                   device: str = "cpu", expected_sha256: str | None = None) -> Evaluator:
    """Fetch (see `fetch_evaluator_files`), verify and load the evaluator.

    The encoder is built on ``meta`` and loaded strictly (all 56 keys of the released state dict); its
    masks and pooling matrices must equal those the skeleton implies. ``expected_sha256`` (hex), when
    given, must match the weights file. The normaliser must hold 55 finite positive values.
    """
    files, prov = fetch_evaluator_files(source, revision)
    sha = {name: sha256_file(p) for name, p in ((files["weights"].name, files["weights"]),
                                               (files["mean_vel"].name, files["mean_vel"]),
                                               (CONFIG_FILE, files["config"])) if p is not None}
    if expected_sha256 and sha[RELEASED_FILE] != expected_sha256.lower():
        raise EvaluatorError(f"{RELEASED_FILE} from {prov['source']!r} has sha256 {sha[RELEASED_FILE]}, "
                             f"expected {expected_sha256}")
    cfg = FGDEncoderConfig.from_json(files["config"]) if files["config"] is not None else FGDEncoderConfig.released()
    try:
        model = load_fgd_encoder(files["weights"], cfg, device=device)
    except (ValueError, RuntimeError) as err:
        raise EvaluatorError(f"Cannot load the evaluator {files['weights'].name} from {prov['source']!r}: {err}") from err
    try:
        mean_vel = np.load(files["mean_vel"], allow_pickle=False)
    except Exception as err:
        raise EvaluatorError(f"Cannot read {files['mean_vel'].name} from {prov['source']!r}: {err}") from err
    mean_vel = np.asarray(mean_vel, np.float32).reshape(-1)
    if mean_vel.shape != (55,) or not np.all(np.isfinite(mean_vel)) or not np.all(mean_vel > 0):
        raise EvaluatorError(f"{files['mean_vel'].name} from {prov['source']!r} must hold 55 finite positive "
                             f"speeds, got shape {mean_vel.shape}")
    prov = {**prov, "files": sha, "config": "config.json" if files["config"] is not None else "released",
            "architecture": cfg.to_dict() if files["config"] is not None else "AESKConv_240_100 (released)"}
    return Evaluator(model, mean_vel, prov)
