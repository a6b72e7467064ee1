"""Stimulus generation for perception studies: a study manifest in, anonymized and reproducible stimuli out.

    python -m emage_core batch STUDY.yaml -o OUTDIR [--backend local|ray] [--dry-run]

The manifest (YAML; paths are relative to the manifest's folder)::

    study: gesture-emotion-pilot   # a name (default: the file name)
    seed: 2024                     # decides left/right sides and stimulus numbering (default 0)
    speech:                        # the clips: a list (id = file stem) or a mapping id -> path
      hello: speech/hello.wav
      question: speech/question.wav
    defaults:                      # optional: condition settings shared by every condition
      seeds: [1, 2]
      temperature: 0.8
    conditions:
      - name: neutral              # letters, digits, _ . - (it names folders)
        model: default             # default | bundled | a checkpoint folder | a Hub repo id (hub:owner/name)
        revision: null             # Hub branch/tag/commit (Hub models only)
        seeds: [1, 2]              # one motion per seed and clip
        variants: 1                # n: each seed s also gives s+1 .. s+n-1 (as `generate --variants`)
        temperature: 0.8           # 0 = most likely codes (seeds then give identical motions)
        overlap: 8                 # frames crossfaded where generation windows meet (0 = the reference's, 0-28)
      - name: sad
        style: {preset: sadness, intensity: 0.8}     # emotion preset (emage_core.edit.style.PRESETS)
      - name: big
        style: {amplitude: 1.3}                      # explicit controls (emage_core.edit.style.CONTROL_RANGES)
      - name: kept
        locks: ["upper:1-2.5"]                       # PART:START-END seconds, kept from the reference
        reference: refs/ref.npz                      # a BEAT2 .npz, or a mapping clip id -> .npz
        crossfade: 0.2
        guidance_scale: 1.15                         # DiffSHEG conditions: the sampler's guidance (model: diffsheg)
    render:
      view: full                   # full | upper | face
      size: 256                    # pixels per cell, even, 64-1024
      renderer: mesh               # mesh | stick
      body: anny                   # anny | mannequin (no identity cues) | smplx (needs EMAGE_SMPLX_MODEL)
      show_labels: false           # true writes condition names into the videos (pilots only: not blind)
      audio: true                  # the speech on the videos' sound track
    layouts:
      singles: true                # every motion as its own stimulus (or a list of conditions, or false)
      pairs:                       # side-by-side comparisons (the i-th seed of A against the i-th of B)
        - [neutral, sad]
        - [neutral, big]

Every mistake in it (unknown keys, missing files, unknown presets, bad locks, pairs naming unknown
conditions, ...) is reported up front, with its line, before anything is generated.

Counterbalancing: the trials of pair number p (0-based, in manifest order) are numbered
j = clip index x seeds + seed index (clips in manifest order). The pair's first-listed condition is on
the left when ``(j + p + seed) % 2 == 0``, else on the right. So sides alternate clip by clip and seed
by seed; every condition is left exactly as often as right within each pair whenever a pair has an
even number of trials (clips x seeds); the start side alternates from pair to pair and flips with the
study seed. The counts per condition and side are in the manifest JSON (and a warning is printed
when they are unequal).

Output folder::

    stimuli/stim_0001.mp4 ...   what participants see: numbered in a random order (sha256 of study seed
                                and the stimulus' identity), so names reveal nothing about conditions
    motions/<clip>/<condition>/seed_<s>.npz + .json   every generated motion (BEAT2) and its provenance
    key.csv                     the unblinding key: one row per file (two per side-by-side stimulus, one
                                per side): clip, condition, side, seed, the motion shown, sha256
    study_manifest.json         sha256 of every input (speech, references, the manifest, weights) and
                                output, software versions, model provenance, counterbalancing, failures
    .work/                      per-item records (resuming) and the rendered videos that stimuli/ links to

Resuming: each item (a motion, a rendered stimulus) stores the sha256 of its full spec (settings +
sha256 of its inputs: speech, weights, reference, the motions it shows). A rerun skips items whose spec
is unchanged and whose outputs are intact, and redoes the rest (changing one condition's seeds redoes
that condition's motions and the stimuli showing them). Files are written to a temporary name and
renamed, so an interrupted run never leaves a half file that counts as finished. One failed item is
reported and does not stop the others.

Reproducibility: the same manifest gives byte-identical motion files (the .npz is written without
timestamps) on one machine's CPU, whether run locally or on Ray: every generation task pins its torch
thread count (``--threads``, default min(4, CPUs); recorded in each side-car as ``torch_threads``),
because float sums split over another number of threads round differently. On GPUs the numbers
depend on the CUDA kernels: compare runs made on the same kind of device (each side-car records it).

Scale: ``--backend ray`` runs motions as Ray tasks (one GPU each where the cluster has GPUs, else one
CPU) and renders as CPU tasks; tasks take and return bytes and the driver writes every file, so the
nodes need no shared folder. They do need emage_core importable (a local instance started here gets
this checkout on its PYTHONPATH), local checkpoint folders at the same path (Hub ids work anywhere;
each task checks the sha256 of the weights it loaded) and EGL for the mesh renderer. Ray is imported
only with this backend.

The package, one job per module (each imports only those listed above it):

    manifest.py   the manifest read with line numbers and checked: `load_study` -> `Study`, or `StudyError`
    plan.py       motions and stimuli (`plan_study`), sides (`first_on_left`), input hashes, item specs
    tasks.py      one item's work, bytes in and out: `generate_motion`, `render_stimulus`
    backends.py   where tasks run: `LocalBackend`, `RayBackend` (the only module that imports Ray)
    run.py        `run_study`: records, atomic writes, the key CSV, the study manifest, the summary
    cli.py        the ``batch`` command: `add_batch_parser`, `cmd_batch`
"""
from __future__ import annotations

from .backends import LocalBackend, RayBackend
from .cli import add_batch_parser, cmd_batch
from .manifest import (
    CONDITION_KEYS,
    LAYOUT_KEYS,
    MAX_VARIANTS,
    NAME_RE,
    RENDER_KEYS,
    RENDER_VIEWS,
    RENDERERS,
    TOP_KEYS,
    Clip,
    Condition,
    Node,
    RenderSettings,
    Study,
    StudyError,
    compose_manifest,
    load_study,
)
from .plan import (
    COUNTERBALANCING_RULE,
    SPEC_FORMAT,
    WORK,
    Inputs,
    ModelInfo,
    MotionItem,
    Plan,
    Stimulus,
    first_on_left,
    hash_inputs,
    model_info,
    motion_spec,
    plan_study,
    sha256_file,
    sha256_json,
    side_counts,
    stimulus_spec,
)
from .run import (
    KEY_COLUMNS,
    KEY_FILE,
    MANIFEST_FILE,
    STIMULUS_RE,
    Records,
    StudyResult,
    atomic_write,
    key_rows,
    run_study,
    software_versions,
    study_manifest,
    summary,
)
from .tasks import generate_motion, render_stimulus

__all__ = [
    # manifest
    "CONDITION_KEYS", "LAYOUT_KEYS", "MAX_VARIANTS", "NAME_RE", "RENDER_KEYS", "RENDER_VIEWS", "RENDERERS", "TOP_KEYS",
    "Clip", "Condition", "Node", "RenderSettings", "Study", "StudyError", "compose_manifest", "load_study",
    # plan
    "COUNTERBALANCING_RULE", "SPEC_FORMAT", "WORK", "Inputs", "ModelInfo", "MotionItem", "Plan", "Stimulus",
    "first_on_left", "hash_inputs", "model_info", "motion_spec", "plan_study", "sha256_file", "sha256_json",
    "side_counts", "stimulus_spec",
    # tasks (run.py looks these two up here at run time, so they can be substituted)
    "generate_motion", "render_stimulus",
    # backends
    "LocalBackend", "RayBackend",
    # run
    "KEY_COLUMNS", "KEY_FILE", "MANIFEST_FILE", "STIMULUS_RE", "Records", "StudyResult", "atomic_write", "key_rows",
    "run_study", "software_versions", "study_manifest", "summary",
    # cli
    "add_batch_parser", "cmd_batch",
]
