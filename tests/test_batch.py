"""Study stimulus generation (`emage_core.batch`): runs, resumes, anonymizes, counterbalances, fails well.

Most tests share one small study (2 synthetic clips x 3 conditions, stick renderer, 96 px) run once;
tests that change it work on a copy of its output folder.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import re
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emage_core import Motion
from emage_core.batch import (
    KEY_FILE,
    MANIFEST_FILE,
    StudyError,
    add_batch_parser,
    first_on_left,
    load_study,
    plan_study,
    run_study,
)
from emage_core.motion.beat2 import beat2_arrays, npz_bytes, read_beat2, write_beat2

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_dir() -> Path:
    """The bundled default checkpoint when it is installed, else the small random-weight golden one."""
    from conftest import EMAGE_REF

    from emage_core.models.hub import BUNDLED_CHECKPOINT, CONFIG_NAME

    if (BUNDLED_CHECKPOINT / CONFIG_NAME).is_file():
        return BUNDLED_CHECKPOINT
    if (EMAGE_REF / "golden" / CONFIG_NAME).is_file():
        return EMAGE_REF / "golden"
    pytest.skip(f"needs a checkpoint: neither {BUNDLED_CHECKPOINT} nor {EMAGE_REF / 'golden'} exists")


def _speech(seconds: float, seed: int) -> np.ndarray:
    """Syllable-like bursts of a harmonic tone: speech-shaped enough for the model, instant to make."""
    n = int(round(seconds * 16000))
    t = np.arange(n) / 16000
    env = np.clip(np.sin(2 * np.pi * 3.1 * t), 0, None)
    noise = np.random.default_rng(seed).normal(size=n)
    return (0.3 * env * np.sin(2 * np.pi * (150 + 20 * seed) * t) + 0.02 * noise).astype(np.float32)


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory, model_dir) -> Path:
    """A folder with two short clips (1.5 s, 1.2 s), a 2 s reference motion and the 2 x 3 study manifest."""
    d = tmp_path_factory.mktemp("study")
    (d / "speech").mkdir()
    sf.write(d / "speech" / "one.wav", _speech(1.5, 0), 16000)
    sf.write(d / "speech" / "two.wav", _speech(1.2, 1), 16000)
    write_beat2(Motion.zeros(60), d / "ref.npz")
    (d / "study.yaml").write_text(study_text(model_dir))
    return d


def study_text(model_dir: Path, sad_seeds: str = "[1, 2]") -> str:
    return f"""\
study: test-study
seed: 3
speech:
  - speech/one.wav
  - speech/two.wav
defaults:
  model: {model_dir}
  seeds: [1, 2]
  temperature: 0.8
conditions:
  - name: neutral
  - name: sad
    style: {{preset: sadness, intensity: 0.8}}
    seeds: {sad_seeds}
  - name: big
    style: {{amplitude: 1.3}}
render: {{size: 96, renderer: stick}}
layouts:
  singles: true
  pairs: [[neutral, sad], [neutral, big], [sad, big]]
"""


def run(manifest: Path, out: Path, **kw):
    return run_study(manifest, out, threads=1, progress=False, **kw)  # 1 thread: quick on a busy 2-core box


def tree(out: Path) -> dict[str, int]:
    """Every file under ``out`` -> its modification time (ns)."""
    return {p.relative_to(out).as_posix(): p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def key_rows(out: Path) -> list[dict]:
    with open(out / KEY_FILE, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def first_run(study_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "study_out"
    result = run(study_dir / "study.yaml", out)
    return out, result


# -- a study runs -----------------------------------------------------------------------------------------
def test_study_runs(first_run):
    out, result = first_run
    assert result.ok, result.failed
    # 2 clips x 3 conditions x 2 seeds = 12 motions; 12 singles + 3 pairs x 2 clips x 2 seeds = 12 pairs
    assert (result.n_motions, result.n_stimuli, len(result.ran)) == (12, 24, 36)
    stimuli = sorted(p.name for p in (out / "stimuli").iterdir())
    assert stimuli == [f"stim_{n:04d}.mp4" for n in range(1, 25)]
    clip = read_beat2(out / "motions" / "one" / "sad" / "seed_2.npz")
    assert clip.n_frames == 45  # floor(1.5 s * 30)
    meta = json.loads((out / "motions" / "one" / "sad" / "seed_2.json").read_text())
    assert meta["seed"] == 2 and meta["style"]["preset"] == "sadness" and meta["study"]["condition"] == "sad"
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert manifest["manifest"]["sha256"] == sha(Path(manifest["manifest"]["path"]))
    assert manifest["inputs"]["speech"]["one"]["sha256"] == sha(Path(manifest["manifest"]["path"]).parent / "speech/one.wav")
    models = manifest["inputs"]["models"].values()
    assert all(len(m["files"]) == 12 for m in models)  # sha256 of the weights, via their provenance
    assert {"emage_studio", "torch", "numpy", "python"} <= set(manifest["software"])
    assert manifest["failures"] == []


def test_names_are_anonymous_and_key_covers_every_file(first_run):
    out, _ = first_run
    rows = key_rows(out)
    on_disk = {f for f in tree(out) if not f.startswith(".work/")} - {KEY_FILE, MANIFEST_FILE}
    assert {r["file"] for r in rows} == on_disk
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert set(manifest["outputs"]) == on_disk | {KEY_FILE}
    for f, digest in manifest["outputs"].items():
        assert sha(out / f) == digest, f
    # The stimulus order is shuffled: layouts and conditions are mixed over the numbering.
    layout_by_name = {r["stimulus"]: r["layout"] for r in rows if r["kind"] == "stimulus"}
    first_half = [layout_by_name[f"stim_{n:04d}"] for n in range(1, 13)]
    assert 0 < first_half.count("pair") < 12
    for r in rows:
        if r["kind"] == "stimulus":  # the row says which motion is shown, and that motion is listed too
            assert r["motion"] in on_disk and r["condition"] in r["motion"]


def test_counterbalancing(first_run):
    out, _ = first_run
    pair_rows = [r for r in key_rows(out) if r["layout"] == "pair"]
    sides = Counter((r["condition"], r["side"]) for r in pair_rows)
    for cond in ("neutral", "sad", "big"):
        assert sides[cond, "left"] == sides[cond, "right"] == 4  # in 2 pairs x 2 clips x 2 seeds each
    # within every pair the first-listed condition is left in exactly half of its trials
    per_pair = Counter((r["condition"], r["compared_with"]) for r in pair_rows if r["side"] == "left")
    for a, b in [("neutral", "sad"), ("neutral", "big"), ("sad", "big")]:
        assert per_pair[a, b] == per_pair[b, a] == 2
    # the documented rule: alternate along trials and pairs, flip with the study seed
    assert [first_on_left(0, j, 0) for j in range(4)] == [True, False, True, False]
    assert first_on_left(1, 0, 0) is False and first_on_left(0, 0, 1) is False
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert manifest["counterbalancing"]["balanced"] is True


def test_rerun_does_nothing(first_run, study_dir):
    out, _ = first_run
    before = tree(out)
    result = run(study_dir / "study.yaml", out)
    assert result.ok and result.ran == [] and len(result.reused) == 36
    assert tree(out) == before  # not one file rewritten (mtimes unchanged), none added or removed


def test_changing_one_seed_redoes_only_its_items(first_run, study_dir, model_dir, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(first_run[0], out)  # keeps mtimes
    manifest = study_dir / "study_seed.yaml"
    manifest.write_text(study_text(model_dir, sad_seeds="[1, 7]"))
    before = {p.relative_to(out).as_posix(): sha(p) for p in (out / "motions").rglob("*.npz")}
    result = run(manifest, out)
    assert result.ok
    expected = {f"motion/{c}/sad/seed_7" for c in ("one", "two")}
    expected |= {f"single/{c}/sad/1" for c in ("one", "two")}
    expected |= {f"pair/{a}/{b}/{c}/1" for a, b in [("neutral", "sad"), ("sad", "big")] for c in ("one", "two")}
    assert set(result.ran) == expected
    after = {p.relative_to(out).as_posix(): sha(p) for p in (out / "motions").rglob("*.npz")}
    assert {f for f in before if f not in after} == {"motions/one/sad/seed_2.npz", "motions/two/sad/seed_2.npz"}
    assert all(after[f] == before[f] for f in after if f in before)  # the rest untouched
    rows = key_rows(out)
    on_disk = {f for f in tree(out) if not f.startswith(".work/")} - {KEY_FILE, MANIFEST_FILE}
    assert {r["file"] for r in rows} == on_disk  # stale files of seed 2 are gone from disk and key


def test_damaged_output_is_redone(first_run, study_dir, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(first_run[0], out)
    motion = out / "motions" / "two" / "big" / "seed_1.npz"
    good = sha(motion)
    motion.write_bytes(motion.read_bytes()[:100])  # as if a run had been killed while writing it
    (out / "stimuli" / "stim_0005.mp4").unlink()
    leftover = motion.with_name(".seed_1.npz.x1y2.tmp")  # a killed write's temporary file
    leftover.write_bytes(b"half")
    result = run(study_dir / "study.yaml", out)
    assert not leftover.exists()
    # the motion is regenerated, byte-identical, so the stimuli showing it stay valid
    assert result.ran == ["motion/two/big/seed_1"]
    assert sha(motion) == good
    assert (out / "stimuli" / "stim_0005.mp4").is_file()  # re-published from its finished render


def test_interrupted_run_resumes(study_dir, tmp_path, monkeypatch):
    import emage_core.batch as batch

    real, calls = batch.render_stimulus, []

    def render_then_interrupt(*args):
        calls.append(1)
        if len(calls) > 3:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C during the fourth video
        return real(*args)

    monkeypatch.setattr(batch, "render_stimulus", render_then_interrupt)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run(study_dir / "study.yaml", out)
    monkeypatch.setattr(batch, "render_stimulus", real)
    result = run(study_dir / "study.yaml", out)
    assert result.ok and len(result.reused) == 12 + 3 and len(result.ran) == 24 - 3


def test_npz_is_deterministic():
    clip = Motion.zeros(5)
    clip.poses[:, 3, 0] = 0.25
    data = npz_bytes(beat2_arrays(clip))
    assert data == npz_bytes(beat2_arrays(clip))
    assert read_beat2(data).allclose(clip)


# -- failures -----------------------------------------------------------------------------------------------
def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    add_batch_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["batch", *argv])
    return args.func(args)


def test_failing_item_is_reported_and_the_others_finish(study_dir, model_dir, tmp_path, capsys):
    manifest = study_dir / "study_fail.yaml"
    manifest.write_text(f"""\
speech: {{one: speech/one.wav, two: speech/two.wav}}
defaults: {{model: {model_dir}, seeds: [1]}}
conditions:
  - name: free
  - name: kept
    locks: ["upper:0.2-1.4"]   # two.wav is 1.2 s long: this lock is past its end
    reference: ref.npz
render: {{size: 96, renderer: stick}}
layouts: {{pairs: [[free, kept]]}}
""")
    out = tmp_path / "out"
    assert _cli([str(manifest), "-o", str(out), "--quiet", "--threads", "1"]) == 1
    report = capsys.readouterr()
    assert "FAILED (3)" in report.out and "after the speech" in report.out
    failures = json.loads((out / MANIFEST_FILE).read_text())["failures"]
    assert {f["item"] for f in failures} == {"motion/two/kept/seed_1", "single/two/kept/0", "pair/free/kept/two/0"}
    assert "LockError" in failures[0]["error"]
    assert (out / "motions" / "one" / "kept" / "seed_1.npz").is_file()  # the same condition on one.wav is fine
    assert len(list((out / "stimuli").iterdir())) == 4  # 2 free + 1 kept singles + 1 pair, of 6 stimuli
    assert not (out / "motions" / "two" / "kept").exists()


# -- bad manifests fail up front, with the line ---------------------------------------------------------------
GOOD = """\
study: bad-ones
speech:
  - speech/one.wav
conditions:
  - name: neutral
    seeds: [1]
  - name: sad
    style: {preset: sadness}
  - name: kept
    locks: ["upper:0.2-1"]
    reference: ref.npz
layouts:
  pairs: [[neutral, sad]]
"""


@pytest.mark.parametrize("old, new, line, reason", [
    ("study: bad-ones", "study: bad-ones\ncolour: red", 2, "unknown key 'colour'"),
    ("    seeds: [1]", "    seeds: [1]\n    temprature: 0.5", 7, "did you mean 'temperature'"),
    ("  - speech/one.wav", "  - speech/one.wav\n  - speech/missing.wav", 4, "speech file not found"),
    ("{preset: sadness}", "{preset: sadnes}", 8, "unknown preset 'sadnes' (did you mean 'sadness'?)"),
    ('"upper:0.2-1"', '"upper:0.2 to 1"', 10, "expected PART:START-END"),
    ('"upper:0.2-1"', '"elbows:0.2-1"', 10, "unknown part 'elbows'"),
    ("    reference: ref.npz", "    reference: nowhere.npz", 11, "reference motion not found"),
    ("[[neutral, sad]]", "[[neutral, happy]]", 13, "unknown condition 'happy'"),
    ("    seeds: [1]", "    seeds: [one]", 6, "expected a whole number"),
    ("    seeds: [1]", "    seeds: [1]\n    overlap: 40", 7, "overlap: must be 0-28, got 40"),
    ("  - name: sad", "  - name: sad\n  - name: sad", 8, "'sad' is used twice"),
    ("  - name: neutral", "  - name: neutral: x", 5, "not valid YAML: mapping values are not allowed here"),
    ("layouts:", "layouts: [", 14, "(while parsing a flow sequence that starts on line 12)"),
])
def test_bad_manifest_fails_up_front(study_dir, tmp_path, old, new, line, reason):
    manifest = study_dir / "bad.yaml"
    assert GOOD.count(old) == 1
    manifest.write_text(GOOD.replace(old, new))
    with pytest.raises(StudyError) as err:
        run(manifest, tmp_path / "out")
    assert f"bad.yaml:{line}:" in str(err.value) and reason in str(err.value), str(err.value)
    assert not (tmp_path / "out").exists()  # nothing generated, not even the folder


def test_all_problems_are_reported_at_once(study_dir, tmp_path, capsys):
    manifest = study_dir / "bad_many.yaml"
    manifest.write_text(GOOD.replace("seeds: [1]", "seeds: [-1]").replace("[[neutral, sad]]", "[[neutral, nope]]"))
    assert _cli([str(manifest), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "2 problem(s)" in err and "bad_many.yaml:6:" in err and "bad_many.yaml:13:" in err
    assert not (tmp_path / "out").exists()


def test_example_study_is_valid():
    study = load_study(REPO / "examples" / "study.yaml")
    plan = plan_study(study)
    assert [c.id for c in study.clips] == ["hello", "question"] and len(study.conditions) == 3
    assert len(plan.motions) == 12 and len(plan.stimuli) == 24
    assert study.render.show_labels is False
    assert all(re.fullmatch(r"stim_\d{4}", s.name) for s in plan.stimuli)


# -- Ray --------------------------------------------------------------------------------------------------
def test_ray_is_imported_only_for_the_ray_backend(first_run, study_dir):
    import subprocess
    import sys

    code = ("import sys; from emage_core.batch import run_study; "
            f"run_study({str(study_dir / 'study.yaml')!r}, {str(first_run[0])!r}, progress=False); "
            "assert 'ray' not in sys.modules, 'the local backend imported ray'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_ray_backend_gives_the_same_motions(first_run, study_dir, tmp_path):
    pytest.importorskip("ray", reason="the Ray backend needs `pip install ray`; not installed here")
    local_out, _ = first_run
    out = tmp_path / "ray_out"
    result = run(study_dir / "study.yaml", out, backend="ray", num_cpus=2)  # starts and stops a local instance
    assert result.ok, result.failed
    local = {p.relative_to(local_out): sha(p) for p in (local_out / "motions").rglob("*.npz")}
    remote = {p.relative_to(out): sha(p) for p in (out / "motions").rglob("*.npz")}
    assert len(local) == 12 and remote == local
    assert [r["file"] for r in key_rows(out)] == [r["file"] for r in key_rows(local_out)]  # same names, same order


def test_cli_local_and_ray_write_identical_motions(model_dir, tmp_path):
    """Through the CLI, default settings: the same study on this machine gives byte-identical motion files
    locally and on the test's local Ray instance (each task pins its torch thread count)."""
    pytest.importorskip("ray", reason="the Ray backend needs `pip install ray`; not installed here")
    import subprocess
    import sys

    (tmp_path / "speech").mkdir()
    for k in range(2):
        sf.write(tmp_path / "speech" / f"c{k}.wav", _speech(4.0, k), 16000)
    (tmp_path / "study.yaml").write_text(f"""\
study: threads
seed: 1
speech: [speech/c0.wav, speech/c1.wav]
defaults: {{model: {model_dir}, seeds: [5], temperature: 0.9}}
conditions: [{{name: only}}]
render: {{size: 64, renderer: stick}}
layouts: {{singles: true}}
""")

    def motions(out: str, *args: str) -> dict:
        r = subprocess.run([sys.executable, "-m", "emage_core", "batch", str(tmp_path / "study.yaml"), "-o",
                            str(tmp_path / out), "--quiet", *args], cwd=REPO, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        return {p.relative_to(tmp_path / out).as_posix(): sha(p) for p in (tmp_path / out / "motions").rglob("*.npz")}

    local = motions("local")
    assert len(local) == 2
    assert motions("ray", "--backend", "ray", "--num-cpus", "2") == local
    from emage_core.batch.tasks import DEFAULT_THREADS

    for out in ("local", "ray"):  # both pinned the same thread count, and say so
        sidecars = list((tmp_path / out / "motions").rglob("*.json"))
        assert sidecars and all(json.loads(p.read_text())["torch_threads"] == DEFAULT_THREADS for p in sidecars)
