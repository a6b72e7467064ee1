"""Model families behind one interface: a new family plugs in by registration only.

`upper_family.UpperOnly` generates the upper body alone. Registered through the plugin variable, it
appears in the app's selector, renders beside EMAGE in ``compare``, runs in batch studies, and
``--complete-with emage`` fills its other parts while its upper body stays exactly as it made it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import REPO
from emage_core.generate import registry
from emage_core.generate.complete import complete_parts
from emage_core.generate.settings import GenerationSettings
from emage_core.motion.beat2 import read_beat2
from emage_core.motion.skeleton import PARTS
from upper_family import UpperOnly

TESTS = Path(__file__).resolve().parent
PLUGIN = {"EMAGE_STUDIO_GENERATORS": "upper_family:UpperOnly",
          "PYTHONPATH": os.pathsep.join([str(TESTS), str(REPO), os.environ.get("PYTHONPATH", "")])}


def _speech(path: Path, seconds: float = 2.0) -> Path:
    t = np.arange(int(seconds * 16000)) / 16000
    wav = 0.3 * np.clip(np.sin(2 * np.pi * 3 * t), 0, None) * np.sin(2 * np.pi * 150 * t)
    sf.write(path, wav.astype(np.float32), 16000)
    return path


@pytest.fixture
def plugin(monkeypatch):
    """The test family registered through the plugin variable, as an operator would."""
    monkeypatch.setenv("EMAGE_STUDIO_GENERATORS", PLUGIN["EMAGE_STUDIO_GENERATORS"])
    monkeypatch.setattr(registry, "_FAMILIES", {})  # discovered afresh from the environment
    yield
    registry._FAMILIES.clear()


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "emage_core", *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, **PLUGIN}, timeout=600)


def test_a_registered_family_appears_in_the_selector(plugin):
    from ui.studio import model_choices, model_info

    assert registry.families()[0] == "emage" and "upper-test" in registry.families() and "diffsheg" in registry.families()
    values = [v for _, v in model_choices()]
    assert "emage" in values and "upper-test" in values
    assert "upper only" in model_info("upper-test").lower() or "upper only" in model_info("upper-test")
    ref = registry.parse_ref("upper-test", allow_paths=False)
    assert (ref.family, ref.kind, ref.label) == ("upper-test", "default", "upper-test")


def test_parts_a_family_does_not_make_stay_at_rest_and_say_so(tmp_path):
    out = tmp_path / "upper.npz"
    r = _cli("generate", str(_speech(tmp_path / "s.wav")), "-o", str(out), "--model", "upper-test", "--seed", "4")
    assert r.returncode == 0, r.stderr
    assert "does not generate face, hands, lower, global: left at rest" in r.stderr
    m, meta = read_beat2(out), json.loads(out.with_suffix(".json").read_text())
    assert np.abs(m.poses[:, list(PARTS["upper"])]).max() > 0.01
    assert not m.poses[:, list(PARTS["lower"]) + list(PARTS["hands"])].any() and not m.trans.any()
    assert meta["parts"] == {"generated": ["upper"], "completed_by": {},
                             "at_rest": ["face", "hands", "lower", "global"]}
    assert meta["model_id"] == "upper-test"


def test_complete_with_emage_fills_the_rest_and_keeps_the_upper_body_exactly(tmp_path):
    speech = _speech(tmp_path / "s.wav")
    alone = UpperOnly().generate(str(speech), seed=4)[0]
    out = tmp_path / "completed.npz"
    r = _cli("generate", str(speech), "-o", str(out), "--model", "upper-test", "--seed", "4",
             "--complete-with", "emage")
    assert r.returncode == 0, r.stderr
    m, meta = read_beat2(out), json.loads(out.with_suffix(".json").read_text())
    upper = list(PARTS["upper"])
    np.testing.assert_allclose(m.poses[:, upper], alone.poses[:, upper], atol=1e-6)  # exactly as it made it
    assert np.abs(m.poses[:, list(PARTS["lower"])]).max() > 1e-3 and np.abs(m.trans).max() > 1e-4  # EMAGE's
    assert meta["parts"]["generated"] == ["upper"] and meta["parts"]["at_rest"] == []
    assert meta["parts"]["completed_by"] == {p: "emage" for p in ("face", "hands", "lower", "global")}
    assert meta["completed_by"]["model"] == "emage" and meta["completed_by"]["weights"]["files"]


def test_complete_parts_in_python_and_its_settings(plugin):
    gen = registry.load("upper-test")
    emage = registry.load("emage", device="cpu")
    wav = np.zeros(16000, np.float32)
    wav[4000:12000] = 0.2 * np.sin(np.arange(8000) / 5)
    clips = gen.generate(wav, GenerationSettings(seed=1, variants=2, temperature=0.5))
    done = complete_parts(clips, wav, gen.capabilities.parts, emage, GenerationSettings(temperature=0.5))
    assert [c.meta["seed"] for c in done] == [1, 2]
    for before, after in zip(clips, done):
        np.testing.assert_allclose(after.poses[:, list(PARTS["upper"])], before.poses[:, list(PARTS["upper"])],
                                   atol=1e-6)
        assert after.n_frames == before.n_frames == 30


def test_compare_renders_a_family_beside_emage(tmp_path):
    speech = _speech(tmp_path / "s.wav", 1.5)
    out = tmp_path / "cmp.mp4"
    r = _cli("compare", str(speech), "--model", "emage", "--model", "upper-test", "-o", str(out), "--seed", "2",
             "--renderer", "stick", "--size", "96")
    assert r.returncode == 0, r.stderr
    from emage_core.render.video import probe_video

    info = probe_video(out)
    assert info.width == 2 * 96 and abs(info.duration - 1.5) < 0.2 and info.audio_codec
    a, b = read_beat2(tmp_path / "cmp_1.npz"), read_beat2(tmp_path / "cmp_2.npz")
    assert a.n_frames == b.n_frames == 45
    assert json.loads((tmp_path / "cmp_2.json").read_text())["model_id"] == "upper-test"
    assert json.loads((tmp_path / "cmp_1.json").read_text())["seed"] == 2 == \
        json.loads((tmp_path / "cmp_2.json").read_text())["seed"]  # the same seed for every model
    bad = _cli("compare", str(speech), "--model", "emage", "-o", str(out))
    assert bad.returncode != 0 and "2-4 --model" in bad.stderr


def test_batch_pairs_conditions_that_differ_only_in_model(tmp_path):
    (tmp_path / "speech").mkdir()
    _speech(tmp_path / "speech" / "a.wav", 1.2)
    (tmp_path / "study.yaml").write_text("""\
study: models
seed: 1
speech: [speech/a.wav]
defaults: {seeds: [3]}
conditions:
  - {name: emage, model: emage}
  - {name: upper, model: upper-test}
render: {size: 64, renderer: stick}
layouts: {singles: false, pairs: [[emage, upper]]}
""")
    r = _cli("batch", str(tmp_path / "study.yaml"), "-o", str(tmp_path / "out"), "--quiet")
    assert r.returncode == 0, r.stderr
    upper = read_beat2(next((tmp_path / "out" / "motions").rglob("upper/*.npz")))
    emage = read_beat2(next((tmp_path / "out" / "motions").rglob("emage/*.npz")))
    assert not upper.trans.any() and np.abs(emage.poses).max() > 0
    assert len(list((tmp_path / "out" / "stimuli").glob("*.mp4"))) == 1
