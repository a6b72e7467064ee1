"""``python -m emage_core evaluate`` end to end, offline.

The data is a small folder in BEAT2's layout built here from the sample take (CC BY-NC; cut into
pieces in a temporary folder, never copied into the repository): one train take, three speaker-2 test
takes and one short "speaker 4" test take. The official evaluator is played by the golden's random
evaluator (``../shared/reference/emage_eval/golden``), saved as ``AESKConv_240_100.bin`` with its
config.json and the BC normaliser in a Hugging Face cache laid out by hand, so the Hub code path runs
without a network. SMPL-X kinematics run on synthetic model files (the real one is licence-restricted).
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import shutil

import numpy as np
import pytest
import torch
from huggingface_hub import constants

from emage_core.cli.evaluate import add_evaluate_parser
from emage_core.metrics.evaluate import (NOT_COMPARABLE, EvaluationError, FaceErrorSums, run_evaluation,
                                         smplx_kinematics, split_takes)
from emage_core.metrics.evaluator import EvaluatorError, load_evaluator
from emage_core.metrics.fgd_encoder import RELEASED_FILE, load_fgd_encoder, save_released_bin
from emage_core.metrics.official import face_mse, lvd
from emage_core.motion.beat2 import read_beat2, write_beat2
from emage_core.motion.skeleton import PARENTS

from conftest import BEAT2, SHARED, need

GOLDEN = SHARED / "reference" / "emage_eval" / "golden"
REPO_ID = "H-Liu1997/emage_evaltools"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
OTHER_COMMIT = "89abcdef0123456789abcdef0123456789abcdef"
TAKES = {  # id: (first frame, end frame, split) of the sample take
    "2_scott_0_1_1": (0, 476, "train"),
    "2_scott_0_2_2": (476, 952, "test"),
    "2_scott_0_3_3": (952, 1428, "test"),
    "2_scott_0_4_4": (1428, 1906, "test"),
    "4_lawrence_0_1_1": (1000, 1300, "test"),  # a 10 s take standing in for another speaker
}
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # librosa's lazy imports


# --- data ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def beat2_layout(tmp_path_factory):
    """BEAT2 as released, in miniature: train_test_split.csv, smplxflame_30/, wave16k/."""
    import soundfile as sf

    motion = read_beat2(need(BEAT2 / "2_scott_0_1_1.npz"))
    speech, sr = sf.read(need(BEAT2 / "2_scott_0_1_1.wav"), dtype="float32")
    root = tmp_path_factory.mktemp("beat2") / "beat_english_v2.0.0"
    (root / "wave16k").mkdir(parents=True)
    rows = ["id,type"]
    for take, (a, b, split) in TAKES.items():
        write_beat2(motion.slice(a, b), root / "smplxflame_30" / f"{take}.npz")
        sf.write(root / "wave16k" / f"{take}.wav", speech[a * sr // 30:b * sr // 30], sr, subtype="FLOAT")
        rows.append(f"{take},{split}")
    (root / "train_test_split.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def evaluator_files(tmp_path_factory):
    """The golden's random evaluator as the released repo would hold it (+ its config.json)."""
    golden = need(GOLDEN)
    folder = tmp_path_factory.mktemp("evaluator")
    save_released_bin(load_fgd_encoder(golden / "model.safetensors").state_dict(), folder / RELEASED_FILE)
    shutil.copy(golden / "config.json", folder / "config.json")
    np.save(folder / "mean_vel_smplxflame_30.npy", np.load(golden / "inputs.npz")["bc_mean_vel"])
    return folder


def _hand_made_cache(cache, repo_id: str, commit: str, files_from, ref: str | None = "main") -> None:
    """A Hub cache as huggingface_hub writes it: blobs named by sha256, a symlinked snapshot, refs/<ref>."""
    repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
    (repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
    for path in sorted(files_from.iterdir()):
        data = path.read_bytes()
        blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = repo_dir / "snapshots" / commit / path.name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    if ref:
        (repo_dir / "refs").mkdir(exist_ok=True)
        (repo_dir / "refs" / ref).write_text(commit)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch, evaluator_files):
    """A local Hub cache holding the stand-in evaluator at COMMIT (= main), and no reachable Hub:
    offline mode on, and the endpoint a closed loopback port should anything still try."""
    cache = tmp_path / "hf_cache"
    _hand_made_cache(cache, REPO_ID, COMMIT, evaluator_files)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    url = "http://127.0.0.1:9"
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.delenv("EMAGE_EVALTOOLS_REPO", raising=False)
    return cache


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    add_evaluate_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["evaluate", *argv])
    return args.func(args)


def _perturbed_motions(root, folder, sigma: float, seed: int = 0):
    """A folder of "generated" motions: each test take's real motion with Gaussian noise on its poses."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for take, (_, _, split) in TAKES.items():
        if split == "test":
            m = read_beat2(root / "smplxflame_30" / f"{take}.npz")
            m.poses = (m.poses + rng.normal(scale=sigma, size=m.poses.shape)).astype(np.float32)
            m.expressions = (m.expressions + rng.normal(scale=sigma, size=m.expressions.shape)).astype(np.float32)
            write_beat2(m, folder / f"{take}.npz")
    return folder


# --- the data layout ----------------------------------------------------------------------------


def test_test_files_follow_the_split_file_and_speakers(beat2_layout):
    split_file, files = split_takes(beat2_layout.parent)  # the parent of beat_english_v2.0.0 works too
    assert split_file == beat2_layout / "train_test_split.csv"
    assert [f.id for f in files] == ["2_scott_0_2_2", "2_scott_0_3_3", "2_scott_0_4_4"]  # speaker 2 by default
    assert files[0].motion == beat2_layout / "smplxflame_30" / "2_scott_0_2_2.npz"
    assert [f.id for f in split_takes(beat2_layout, (4,))[1]] == ["4_lawrence_0_1_1"]
    assert len(split_takes(beat2_layout, None)[1]) == 4
    assert [f.id for f in split_takes(beat2_layout, (2,), "train")[1]] == ["2_scott_0_1_1"]
    with pytest.raises(EvaluationError, match="no 'test' takes of speaker 9"):
        split_takes(beat2_layout, (9,))


def test_a_missing_file_names_itself(beat2_layout, tmp_path, hub_cache):
    data = tmp_path / "beat2"
    shutil.copytree(beat2_layout, data)
    (data / "wave16k" / "2_scott_0_3_3.wav").unlink()
    with pytest.raises(EvaluationError, match=r"wave16k/2_scott_0_3_3\.wav: missing \(listed as test"):
        run_evaluation(data)
    with pytest.raises(EvaluationError, match=r"train_test_split\.csv: missing"):
        run_evaluation(tmp_path / "beat2" / "wave16k")
    motions = _perturbed_motions(beat2_layout, tmp_path / "gen", 0.01)
    (motions / "2_scott_0_4_4.npz").unlink()
    with pytest.raises(EvaluationError, match=r"gen/2_scott_0_4_4\.npz: missing \(a generated motion"):
        run_evaluation(beat2_layout, motions=[motions])


# --- the evaluator through the Hub cache --------------------------------------------------------


def test_evaluator_comes_from_the_hub_cache_with_its_commit_and_sha256(hub_cache, evaluator_files, monkeypatch):
    ev = load_evaluator()
    p = ev.provenance
    assert (p["source"], p["kind"], p["revision"]) == (REPO_ID, "hub", COMMIT)
    assert p["files"][RELEASED_FILE] == hashlib.sha256((evaluator_files / RELEASED_FILE).read_bytes()).hexdigest()
    assert p["config"] == "config.json" and not ev.released_architecture  # the golden's reduced size
    assert ev.mean_vel.shape == (55,) and ev.mean_vel.dtype == np.float32
    with pytest.raises(EvaluatorError, match="sha256"):
        load_evaluator(expected_sha256="0" * 64)
    # online but unreachable (a closed port): the cached copy is used, as huggingface_hub does
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert load_evaluator(revision=COMMIT).provenance["revision"] == COMMIT


def test_evaluator_revision_is_pinned(hub_cache, evaluator_files, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    state = load_fgd_encoder(evaluator_files / RELEASED_FILE).state_dict()
    state["encoder.layers.0.0.residual.0.bias"] = state["encoder.layers.0.0.residual.0.bias"] + 1
    save_released_bin(state, other / RELEASED_FILE)
    for name in ("config.json", "mean_vel_smplxflame_30.npy"):
        shutil.copy(evaluator_files / name, other / name)
    _hand_made_cache(hub_cache, REPO_ID, OTHER_COMMIT, other, ref=None)
    main, pinned = load_evaluator(), load_evaluator(revision=OTHER_COMMIT)
    assert (main.provenance["revision"], pinned.provenance["revision"]) == (COMMIT, OTHER_COMMIT)
    assert main.provenance["files"][RELEASED_FILE] != pinned.provenance["files"][RELEASED_FILE]
    with pytest.raises(EvaluatorError, match="cache has no copy"):
        load_evaluator(revision="v9")


def test_evaluator_refuses_a_pickled_object_and_a_bad_normaliser(tmp_path, evaluator_files):
    folder = tmp_path / "ev"
    shutil.copytree(evaluator_files, folder)
    torch.save({"model_state": {}, "note": argparse.Namespace(a=1)}, folder / RELEASED_FILE)
    with pytest.raises(EvaluatorError, match="weights_only"):
        load_evaluator(folder)
    shutil.copy(evaluator_files / RELEASED_FILE, folder / RELEASED_FILE)
    np.save(folder / "mean_vel_smplxflame_30.npy", np.ones(54, np.float32))
    with pytest.raises(EvaluatorError, match="55 finite positive"):
        load_evaluator(folder)
    (folder / "mean_vel_smplxflame_30.npy").unlink()
    with pytest.raises(EvaluatorError, match="has no mean_vel_smplxflame_30.npy"):
        load_evaluator(folder)


# --- evaluate end to end ------------------------------------------------------------------------


def test_evaluate_end_to_end(beat2_layout, hub_cache, evaluator_files, tmp_path, capsys):
    """Anchors and a folder of motions, the golden's random evaluator from the local Hub cache."""
    motions = _perturbed_motions(beat2_layout, tmp_path / "jittered", 0.05)
    out = tmp_path / "results" / "eval"
    assert _cli(["--data", str(beat2_layout), "--motions", str(motions), "-o", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    for row in ("real: 1st vs 2nd halves", "real test motion", "noise (Gaussian poses)", "jittered"):
        assert row in text
    assert "FGD x10 (raw)" in text and "BC x10 (raw)" in text and "face MSE x1e7 (raw)" in text
    assert NOT_COMPARABLE in text  # project kinematics, and an evaluator that is not the released size

    doc = json.loads(out.with_suffix(".json").read_text())
    rows = {r["name"]: r for r in doc["rows"]}
    halves, real, noise, jit = (rows[k] for k in ("real: 1st vs 2nd halves", "real test motion",
                                                 "noise (Gaussian poses)", "jittered"))
    assert halves["fgd_raw"] < noise["fgd_raw"]  # real against real is far closer than real against noise
    assert halves["fgd_display"] == pytest.approx(10 * halves["fgd_raw"])
    assert halves["fgd_rank_deficient"] and not noise["fgd_rank_deficient"]  # 42 vs 84 rows, 60 dims
    assert 0 < real["bc_raw"] < 1 and real["bc_clips"] == 3 and real["l1div_raw"] > 0
    assert jit["fgd_raw"] < noise["fgd_raw"] and jit["files"] == 3
    assert all(r["mse_face_raw"] is None for r in doc["rows"])  # no SMPL-X model: no face metrics
    assert doc["comparable"] == {"fgd": False, "bc": False, "l1div": False, "mse_face": False, "lvd_face": False}

    prov = doc["provenance"]
    assert prov["evaluator"]["revision"] == COMMIT and prov["evaluator"]["source"] == REPO_ID
    assert prov["evaluator"]["files"][RELEASED_FILE] == hashlib.sha256(
        (evaluator_files / RELEASED_FILE).read_bytes()).hexdigest()
    assert prov["data"]["files"]["2_scott_0_2_2"]["speech_sha256"] == hashlib.sha256(
        (beat2_layout / "wave16k" / "2_scott_0_2_2.wav").read_bytes()).hexdigest()
    assert set(prov["motions"]["jittered"]["files"]) == {"2_scott_0_2_2.npz", "2_scott_0_3_3.npz", "2_scott_0_4_4.npz"}
    assert {"torch", "numpy", "scipy", "librosa", "emage_studio"} <= set(prov["versions"])
    assert doc["settings"]["speakers"] == [2] and doc["settings"]["variant"] == "evaltools"

    with open(out.with_suffix(".csv"), newline="") as fh:
        table = list(csv.DictReader(fh))
    assert [r["name"] for r in table] == [r["name"] for r in doc["rows"]]
    assert float(table[0]["fgd_raw"]) == pytest.approx(halves["fgd_raw"])


def test_evaluate_paper_variant(beat2_layout, hub_cache):
    ours, paper = (run_evaluation(beat2_layout, variant=v) for v in ("evaltools", "paper"))
    (h1, r1, _), (h2, r2, _) = ours.rows, paper.rows
    assert h1.fgd.value == pytest.approx(h2.fgd.value, rel=1e-3) and h1.fgd.value != h2.fgd.value  # eps only
    assert r1.bc != r2.bc and r1.l1div == r2.l1div
    assert any("Variant 'paper'" in n for n in paper.notes)


def test_evaluate_the_bundled_emage_model(beat2_layout, hub_cache, tmp_path, capsys):
    """--model emage generates the (one, 10 s) test take with a fixed seed; the saved motions evaluated
    with --motions give the same row."""
    saved = tmp_path / "generated"
    out = tmp_path / "eval"
    assert _cli(["--data", str(beat2_layout), "--speakers", "4", "--model", "emage", "--seed", "3",
                 "--save-motions", str(saved), "-o", str(out), "--no-progress"]) == 0
    assert "emage" in capsys.readouterr().out
    doc = json.loads(out.with_suffix(".json").read_text())
    row = next(r for r in doc["rows"] if r["kind"] == "model")
    assert np.isfinite(row["fgd_raw"]) and 0 <= row["bc_raw"] <= 1 and row["l1div_raw"] > 0 and row["files"] == 1
    model_prov = doc["provenance"]["models"][row["name"]]
    assert model_prov["seeds"] == {"4_lawrence_0_1_1": 3} and model_prov["settings"]["seed"] == 3
    folder = saved / row["name"]
    assert (folder / "4_lawrence_0_1_1.npz").is_file()
    again = run_evaluation(beat2_layout, speakers=(4,), motions=[folder])
    assert again.rows[-1].fgd.value == pytest.approx(row["fgd_raw"], rel=1e-6)
    assert again.rows[-1].bc == pytest.approx(row["bc_raw"], abs=1e-9)


# --- SMPL-X kinematics and face metrics -----------------------------------------------------------


def _fake_smplx(path, n_vertices: int = 10475, seed: int = 0):
    """A random model file with every array SMPL-X's has (300 shape + 100 expression components)."""
    rng = np.random.default_rng(seed)
    V = n_vertices
    weights = rng.random((V, 55)) ** 8
    weights /= weights.sum(1, keepdims=True)
    J = np.zeros((55, V))
    for j in range(55):
        J[j, rng.choice(V, 8, replace=False)] = 1 / 8
    np.savez(path, v_template=rng.normal(scale=0.3, size=(V, 3)),
             shapedirs=rng.normal(scale=1e-3, size=(V, 3, 400)).astype(np.float32),
             posedirs=rng.normal(scale=1e-3, size=(V, 3, 486)).astype(np.float32), J_regressor=J, weights=weights,
             kintree_table=np.array([[2**32 - 1, *PARENTS[1:]], list(range(55))], dtype=np.int64),
             f=rng.integers(0, V, size=(100, 3)), hands_componentsl=np.eye(45), hands_componentsr=np.eye(45),
             hands_meanl=rng.normal(scale=0.2, size=45), hands_meanr=rng.normal(scale=0.2, size=45),
             lmk_faces_idx=np.arange(51), lmk_bary_coords=np.full((51, 3), 1 / 3),
             dynamic_lmk_faces_idx=np.zeros((79, 17), np.int64), dynamic_lmk_bary_coords=np.full((79, 17, 3), 1 / 3))
    return path


def test_smplx_kinematics_equal_the_smplx_package(tmp_path):
    """Joints and face vertices as smplx.create(..., gender="NEUTRAL_2020", num_betas=300,
    num_expression_coeffs=100, use_pca=False) computes them in evaluation_fn."""
    smplx = pytest.importorskip("smplx", reason="the smplx package (a test requirement) is not installed")
    path = _fake_smplx(tmp_path / "SMPLX_NEUTRAL_2020.npz")
    ref = smplx.create(str(path), model_type="smplx", gender="NEUTRAL_2020", num_betas=300,
                       num_expression_coeffs=100, use_pca=False, ext="npz")
    kin = smplx_kinematics(path)
    assert kin.official and kin.provenance["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    rng = np.random.default_rng(1)
    T = 4
    pose = rng.normal(scale=0.4, size=(T, 55, 3)).astype(np.float32)
    betas = rng.normal(size=300).astype(np.float32)
    expr = rng.normal(size=(T, 100)).astype(np.float32)
    tp, z = torch.from_numpy(pose.reshape(T, -1)), (lambda n: torch.zeros(T, n))
    b = torch.from_numpy(betas)[None].expand(T, -1)
    with torch.no_grad():
        body = ref(betas=b, global_orient=z(3), body_pose=tp[:, 3:66], left_hand_pose=tp[:, 75:120],
                   right_hand_pose=tp[:, 120:165], jaw_pose=z(3), leye_pose=z(3), reye_pose=z(3), expression=z(100),
                   transl=z(3))
        face = ref(betas=b, global_orient=z(3), body_pose=z(63), left_hand_pose=z(45), right_hand_pose=z(45),
                   jaw_pose=tp[:, 66:69], leye_pose=z(3), reye_pose=z(3), expression=torch.from_numpy(expr),
                   transl=z(3))
    # the pose mask is ours: global orientation, jaw and eyes of `pose` must not matter for the joints
    np.testing.assert_allclose(kin.body_joints(pose, betas), body.joints[:, :55].numpy(), atol=1e-6)
    verts = np.concatenate(list(kin.face_chunks(pose[:, 22], expr, betas)))
    np.testing.assert_allclose(verts, face.vertices.reshape(T, -1).numpy(), atol=1e-6)


def test_face_error_sums_stream_the_official_face_metrics():
    rng = np.random.default_rng(0)
    pred = [rng.normal(size=(t, 12)) for t in (7, 10)]
    gt = [rng.normal(size=(t, 12)) for t in (7, 10)]
    sums = FaceErrorSums()
    for p, g in zip(pred, gt):
        sums.add_clip(np.array_split(p, 3), np.array_split(g, 3))  # chunks of 2-4 frames
    assert sums.mse() == pytest.approx(face_mse(pred, gt))
    assert sums.lvd() == pytest.approx(lvd(pred, gt))
    assert sums.lvd("paper") == pytest.approx(lvd(pred, gt, "paper"))


def test_evaluate_with_an_smplx_model_file_computes_face_metrics(beat2_layout, hub_cache, tmp_path):
    model_file = _fake_smplx(tmp_path / "SMPLX_NEUTRAL_2020.npz", n_vertices=300)
    motions = _perturbed_motions(beat2_layout, tmp_path / "jittered", 0.05)
    table = run_evaluation(beat2_layout, speakers=(4,), motions=[motions], smplx_model=model_file)
    jit = table.rows[-1]
    assert jit.mse_face > 0 and jit.lvd_face > 0 and table.rows[0].mse_face is None
    assert table.comparable["bc"] and table.comparable["mse_face"] and not table.comparable["fgd"]
    assert not any("BC, L1div" in n for n in table.notes)
    assert table.provenance["kinematics"]["kind"] == "smplx"
