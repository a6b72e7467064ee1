"""Live generation: EMAGE over speech that arrives in chunks (`EmageStream`), the live session around it
(`LiveStream`: idle layer, recording, labels), `Generator.live` / `stream`, `write_take` and the ``live``
command. Synthetic speech made here (and the bundled example speech) and the bundled EMAGE checkpoint:
nothing external is needed."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import soundfile as sf

from emage_core.audio import SAMPLE_RATE, load_audio
from emage_core.assets import example_speech
from emage_core.edit.idle import HEAD, SPINE, Idle
from emage_core.edit.locks import Lock
from emage_core.generate.emage import LIVE_LOOKAHEAD, EmageGenerator
from emage_core.generate.live import MAX_CHUNK_SECONDS, LiveStream, MotionChunk
from emage_core.serve.live import write_take
from emage_core.generate.settings import GenerationSettings
from emage_core.models.emage.streaming import EmageStream
from emage_core.motion.beat2 import read_beat2
from emage_core.motion.clip import Motion
from emage_core.motion.skeleton import JAW, N_JOINTS

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FPS = 30
SPF = SAMPLE_RATE / FPS  # samples per frame
CHUNK = 3200  # 200 ms
FIRST = 9  # frames of speech before the first window can run (seed frames + 5)
EYES = (23, 24)
BODY = [j for j in range(N_JOINTS) if j != JAW and j not in EYES]


def _speech(seconds: float, seed: int = 0) -> np.ndarray:
    """Speech-like sound: a voiced tone with gliding pitch and harmonics under a syllable envelope, plus noise."""
    n = int(round(seconds * SAMPLE_RATE))
    t = np.arange(n) / SAMPLE_RATE
    rng = np.random.default_rng(seed)
    rate = rng.uniform(2.5, 4.0)
    env = np.clip(np.sin(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi)), 0, None) ** 0.7
    f0 = 140 + 30 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 2 * np.pi))
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    voiced = np.sin(phase) + 0.5 * np.sin(2 * phase) + 0.25 * np.sin(3 * phase)
    return (0.2 * env * voiced + 0.01 * rng.normal(size=n)).astype(np.float32)


def _chunks(wav: np.ndarray, sizes) -> list[np.ndarray]:
    """``wav`` cut into pieces of ``sizes`` (cycled; an int = all the same), covering all of it."""
    sizes = [sizes] if isinstance(sizes, int) else list(sizes)
    out, i, k = [], 0, 0
    while i < wav.shape[0]:
        n = sizes[k % len(sizes)]
        out.append(wav[i:i + n])
        i, k = i + n, k + 1
    return out


def _frames(n_samples: int) -> int:
    return n_samples * FPS // SAMPLE_RATE


@pytest.fixture(scope="module")
def gen() -> EmageGenerator:
    return EmageGenerator.from_pretrained(device="cpu")  # the bundled default, offline


def _run(gen, wav, sizes=CHUNK, settings=None, **options) -> tuple[LiveStream, list[MotionChunk]]:
    live = gen.live(settings or GenerationSettings(seed=0), **options)
    chunks = [live.push(c) for c in _chunks(wav, sizes)]
    chunks.append(live.finish())
    return live, chunks


# -- frames ------------------------------------------------------------------------------------------
IRREGULAR = [1, 4000, 0, 533, 2999, 7777, 160, 32000, 1200]


@pytest.mark.parametrize("seconds,sizes", [(2.0, CHUNK), (2.0, 1000), (2.3, IRREGULAR), (0.35, CHUNK),
                                           (0.35, 5600), (0.3, 100)])
def test_frame_count_and_contiguous_chunks(gen, seconds, sizes):
    """Whatever the chunking, the take covers floor(N * 30 / 16000) frames, chunk by contiguous chunk."""
    wav = _speech(seconds, seed=1)
    live, chunks = _run(gen, wav, sizes)
    n = _frames(wav.shape[0])
    assert sum(c.n_frames for c in chunks) == n == live.frames
    assert [c.start for c in chunks] == list(np.cumsum([0] + [c.n_frames for c in chunks[:-1]]))
    for c in chunks:
        assert c.poses.shape == (c.n_frames, N_JOINTS, 3) and c.expressions.shape == (c.n_frames, 100)
        assert c.trans.shape == (c.n_frames, 3) and c.fps == FPS
        assert c.poses.dtype == c.expressions.dtype == c.trans.dtype == np.float32
    take = live.take()
    assert take.n_frames == n and take.fps == FPS
    assert take.poses.shape == (n, N_JOINTS, 3) and take.expressions.shape == (n, 100) and take.trans.shape == (n, 3)
    for name in ("poses", "expressions", "trans"):
        values = getattr(take, name)
        assert np.isfinite(values).all()
        np.testing.assert_array_equal(values, np.concatenate([getattr(c, name) for c in chunks]))
    assert np.abs(take.poses[:, BODY]).max() > 0  # the model moved the body
    np.testing.assert_array_equal(live.speech(), wav)
    assert chunks[-1].heard_s == pytest.approx(wav.shape[0] / SAMPLE_RATE)


def test_speech_too_short_for_motion(gen, tmp_path):
    """Under 0.3 s (9 frames) nothing is generated; the take then cannot be written, and says why."""
    wav = _speech(0.29)
    live, chunks = _run(gen, wav, 1600)
    assert live.frames == 0 and all(c.n_frames == 0 for c in chunks) and live.take().n_frames == 0
    with pytest.raises(ValueError, match="0.3 s"):
        write_take(live, tmp_path)


def test_recording_on_disk_matches_memory(gen, tmp_path):
    wav = _speech(1.4, seed=2)
    mem, _ = _run(gen, wav, settings=GenerationSettings(seed=5))
    disk, _ = _run(gen, wav, settings=GenerationSettings(seed=5), record_dir=tmp_path / "rec")
    assert (tmp_path / "rec" / "poses.f32").is_file()
    a, b = mem.take(), disk.take()
    for name in ("poses", "expressions", "trans"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    np.testing.assert_array_equal(mem.speech(), disk.speech())


# -- causality ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("lookahead,temperature", [(LIVE_LOOKAHEAD, 0.0), (0, 0.8), (12, 0.8)])
def test_emitted_motion_never_depends_on_later_speech(gen, lookahead, temperature):
    """Frames shown while only the prefix was heard are final: the take starts with exactly them whatever
    speech follows; and the speech after does change the motion after."""
    prefix = _speech(1.6, seed=3)
    takes, during = [], []
    for suffix in (_speech(1.2, seed=4), np.zeros(int(1.2 * SAMPLE_RATE), np.float32)):
        live = gen.live(GenerationSettings(seed=7, temperature=temperature), lookahead=lookahead)
        early = [live.push(c) for c in _chunks(prefix, CHUNK)]
        k = live.frames
        assert k == max(0, _frames(prefix.shape[0]) - lookahead)
        for c in _chunks(suffix, CHUNK):
            live.push(c)
        live.finish()
        take = live.take()
        np.testing.assert_array_equal(take.poses[:k], np.concatenate([c.poses for c in early]))
        np.testing.assert_array_equal(take.expressions[:k], np.concatenate([c.expressions for c in early]))
        np.testing.assert_array_equal(take.trans[:k], np.concatenate([c.trans for c in early]))
        takes.append(take)
        during.append(k)
    k = during[0]
    assert k == during[1] > 0
    np.testing.assert_array_equal(takes[0].poses[:k], takes[1].poses[:k])
    np.testing.assert_array_equal(takes[0].trans[:k], takes[1].trans[:k])
    assert not np.array_equal(takes[0].poses[k:], takes[1].poses[k:])


@pytest.mark.parametrize("lookahead", [0, 3, LIVE_LOOKAHEAD, 30])
def test_lookahead_holds_back_exactly_that_many_frames(gen, lookahead):
    """After audio covering F frames, F - lookahead frames have been emitted (once F >= 9), never more."""
    wav = _speech(3.0, seed=5)
    live = gen.live(GenerationSettings(seed=0), lookahead=lookahead, idle=False)
    for c in _chunks(wav, [700, 3200, 0, 2500, 9000, 1]):
        live.push(c)
        heard = _frames(live.n_samples)
        assert live.frames == (max(0, heard - lookahead) if heard >= FIRST else 0), (heard, live.frames)
    live.finish()
    assert live.frames == _frames(wav.shape[0])
    assert live.take().meta["live"]["lookahead_frames"] == lookahead


def test_stream_core_emits_long_pushes_and_respects_lookahead(gen):
    """`EmageStream` itself takes pushes longer than a window (several windows in one push)."""
    s = EmageStream(gen.models, lookahead=4)
    wav = _speech(6.0, seed=6)
    total = 0
    for piece in (wav[:5000], wav[5000:5000 + 3 * SAMPLE_RATE], wav[5000 + 3 * SAMPLE_RATE:]):
        out = s.push(piece)
        assert out["poses"].shape[1:] == (N_JOINTS, 3) and np.isfinite(out["poses"]).all()
        total += out["poses"].shape[0]
        assert total == s.done == s.frames_heard - 4
    total += s.finish()["poses"].shape[0]
    assert total == s.done == _frames(wav.shape[0])
    with pytest.raises(ValueError, match="lookahead"):
        EmageStream(gen.models, lookahead=-1)
    with pytest.raises(ValueError, match="lookahead"):
        EmageStream(gen.models, lookahead=33)
    with pytest.raises(ValueError, match="NaN"):
        s.push(np.array([0.0, np.nan], np.float32))


@pytest.mark.parametrize("options", [dict(precision="float32"), dict(precision="bfloat16", snap_face=True)])
def test_live_options_run_and_are_recorded(gen, options):
    wav = _speech(1.0, seed=16)
    live, _ = _run(gen, wav, CHUNK, GenerationSettings(seed=1), **options)
    take = live.take()
    assert take.n_frames == _frames(wav.shape[0]) and np.isfinite(take.poses).all()
    assert take.meta["precision"] == options["precision"]
    assert take.meta["snap_face"] is options.get("snap_face", False)
    assert take.meta["audio_context"] == "window" and take.meta["family"] == "emage"


# -- reproducibility -----------------------------------------------------------------------------------
def test_same_seed_same_take_other_seed_other_take(gen):
    wav = _speech(1.8, seed=8)
    takes = [_run(gen, wav, [3200, 1111], GenerationSettings(seed=s, temperature=0.8))[0].take() for s in (11, 11, 12)]
    for name in ("poses", "expressions", "trans"):
        np.testing.assert_array_equal(getattr(takes[0], name), getattr(takes[1], name))
    assert takes[0].meta["seed"] == takes[1].meta["seed"] == 11 and takes[2].meta["seed"] == 12
    assert not np.allclose(takes[0].poses, takes[2].poses, atol=1e-4)


# -- bounded state -------------------------------------------------------------------------------------
def _state(live: LiveStream) -> dict:
    s = live.backend
    return {"audio": s._audio.shape, "motion": tuple(s._motion.shape),
            **{f"latent_{p}": tuple(v.shape) for p, v in s._latent.items()},
            "lower": tuple(s._lower.shape), **{f"pending_{k}": tuple(v.shape) for k, v in s._pending.items()},
            "live_pending_audio": live._pending_audio.shape}


def test_state_does_not_grow_over_a_long_session(gen, tmp_path):
    """What a session keeps between pushes (besides its recording, here on disk) is as large after 30 s
    as after 10 s, and within a window's worth all along."""
    wav = _speech(30.0, seed=9)
    live = gen.live(GenerationSettings(seed=0), record_dir=tmp_path / "rec")
    s = live.backend
    seen = {}
    for k, c in enumerate(_chunks(wav, CHUNK), 1):
        live.push(c)
        if live.frames:
            assert s._audio.shape[0] <= (s.W + s.lookahead + 2) * SPF  # a window before the newest frame
            assert s._motion.shape[1] <= s.W and s._lower.shape[1] <= s.global_halo
            assert all(v.shape[1] <= s.halo for v in s._latent.values())
            assert live._pending_audio.shape[0] <= (live.lookahead + 1) * SPF + 1
        if k * CHUNK in (10 * SAMPLE_RATE, 30 * SAMPLE_RATE):
            seen[k * CHUNK // SAMPLE_RATE] = _state(live)
    assert seen[10] == seen[30]
    live.finish()
    assert live.take().n_frames == _frames(wav.shape[0])


# -- continuity ----------------------------------------------------------------------------------------
def test_no_jumps_where_chunks_meet(gen):
    """With the default look-ahead the frame-to-frame change where one chunk's frames follow the previous
    chunk's is like the change inside chunks (poses, expressions, root), on real speech."""
    wav = np.concatenate([load_audio(p) for p in example_speech()])[: 12 * SAMPLE_RATE]
    live, chunks = _run(gen, wav, CHUNK, GenerationSettings(seed=0), lookahead=LIVE_LOOKAHEAD, idle=False)
    take = live.take()
    seams = np.array(sorted({c.start for c in chunks if 0 < c.start < take.n_frames}))
    assert len(seams) > 30
    for name in ("poses", "expressions", "trans"):
        x = getattr(take, name).reshape(take.n_frames, -1)
        step = np.abs(np.diff(x, axis=0)).mean(axis=1)  # step[t]: frame t -> t + 1
        at = np.zeros(len(step), bool)
        at[seams - 1] = True
        ratio = step[at].mean() / step[~at].mean()
        assert ratio < 2.0, (name, ratio)


def test_long_pushes_keep_the_look_ahead_and_stay_smooth(gen):
    """A push of 2 s (more than one window's new frames) runs several windows; each that stops short of the
    speech received emits all but its last ``lookahead`` frames too, so every seam gets the crossfade."""
    wav = np.concatenate([load_audio(p) for p in example_speech()])[: 12 * SAMPLE_RATE]
    live = gen.live(GenerationSettings(seed=0), idle=False)
    s = live.backend
    windows, original = [], s._window

    def window(start, end, emit_to):
        windows.append((end, emit_to, s.frames_heard))
        return original(start, end, emit_to)

    s._window = window
    starts = [live.push(c).start for c in _chunks(wav, 2 * SAMPLE_RATE)]
    live.finish()
    assert len(windows) > len(starts)  # several windows per push
    for end, emit_to, heard in windows[:-1]:
        assert emit_to <= end - LIVE_LOOKAHEAD or end == heard, (end, emit_to, heard)
    take = live.take()
    seams = np.array(sorted({e for _, e, _ in windows if 0 < e < take.n_frames}))
    step = np.abs(np.diff(take.poses.reshape(take.n_frames, -1), axis=0)).mean(axis=1)
    at = np.zeros(len(step), bool)
    at[seams - 1] = True
    assert step[at].mean() / step[~at].mean() < 2.0


# -- idle ------------------------------------------------------------------------------------------------
def test_idle_calms_the_body_in_silence_but_does_not_freeze_it(gen):
    wav = np.concatenate([_speech(2.5, seed=10), np.zeros(4 * SAMPLE_RATE, np.float32)])
    with_idle, _ = _run(gen, wav, CHUNK, GenerationSettings(seed=0), idle=True)
    without, _ = _run(gen, wav, CHUNK, GenerationSettings(seed=0), idle=False)
    assert with_idle.idle.gate == pytest.approx(1.0)
    a, b = with_idle.take(), without.take()
    info = a.meta["live"]["idle"]
    assert "explicit" in info["kind"] and 0 < info["frames_idling"] < a.n_frames
    assert info["frames_idling"] == with_idle.idle.idle_frames
    assert b.meta["live"]["idle"] is None
    for take in (a, b):
        assert take.meta["live"]["generated_live"] is True
        assert take.meta["live"]["lookahead_frames"] == LIVE_LOOKAHEAD
        assert take.meta["live"]["speech_seconds"] == pytest.approx(6.5)
    # while speaking the motion is as generated; jaw, face and root always are
    speaking = int(2.0 * FPS)
    np.testing.assert_allclose(a.poses[:speaking], b.poses[:speaking], atol=1e-5)
    np.testing.assert_array_equal(a.poses[:, JAW], b.poses[:, JAW])
    np.testing.assert_array_equal(a.expressions, b.expressions)
    np.testing.assert_array_equal(a.trans, b.trans)
    # in silence (after the fade-in) the body moves much less, but still breathes and sways
    quiet = int(3.5 * FPS)
    step_a = np.abs(np.diff(a.poses[quiet:], axis=0))
    step_b = np.abs(np.diff(b.poses[quiet:], axis=0))
    assert step_a[:, BODY].mean() < 0.5 * step_b[:, BODY].mean()
    assert step_a[:, list(SPINE)].mean() > 1e-5 and step_a[:, list(HEAD)].mean() > 1e-5
    assert (step_a[:, list(SPINE) + list(HEAD)].reshape(len(step_a), -1).max(axis=1) > 0).all()  # never frozen


def test_idle_layer_follows_silence_and_speech():
    """The gate opens after silence, closes within the release when speech resumes, passes speech through,
    and gives the same poses whether applied at once or chunk by chunk."""
    rng = np.random.default_rng(0)
    n = 240  # 8 s: speech 0-2 s, silence 2-5 s, speech 5-8 s
    poses = np.cumsum(rng.normal(0, 0.02, (n, N_JOINTS, 3)), axis=0).astype(np.float32)
    samples = _speech(8.0, seed=11)
    samples[2 * SAMPLE_RATE: 5 * SAMPLE_RATE] = 0
    whole = Idle(seed=3)
    out = whole.apply(poses, samples)
    chunked = Idle(seed=3)
    gates = []
    parts = []
    for f in range(0, n, 6):
        parts.append(chunked.apply(poses[f:f + 6], samples[int(round(f * SPF)): int(round((f + 6) * SPF))]))
        gates.append(chunked.gate)
    np.testing.assert_allclose(np.concatenate(parts), out, atol=1e-6)
    gates = np.array(gates)  # after each 6-frame chunk
    assert gates[: 60 // 6].max() == 0  # speaking
    assert gates[(150 - 6) // 6] == pytest.approx(1.0)  # end of the silence
    assert gates[(150 + 12) // 6:].max() == 0  # speech again: released within 0.15 s (and a chunk)
    np.testing.assert_allclose(out[:60], poses[:60], atol=1e-5)
    np.testing.assert_allclose(out[165:], poses[165:], atol=1e-5)
    np.testing.assert_array_equal(out[:, JAW], poses[:, JAW])
    silent = out[100:150, BODY]
    assert np.abs(np.diff(silent, axis=0)).mean() < 0.5 * np.abs(np.diff(poses[100:150, BODY], axis=0)).mean()
    assert 0 < whole.idle_frames < n and whole.describe()["frames_idling"] == whole.idle_frames


# -- errors ----------------------------------------------------------------------------------------------
def test_bad_chunks_are_refused_and_the_session_continues(gen):
    live = gen.live(GenerationSettings(seed=0), max_seconds=2)
    wav = _speech(1.5, seed=12)
    live.push(wav[:CHUNK])
    with pytest.raises(ValueError, match="at most 2 s"):
        live.push(np.zeros(int(MAX_CHUNK_SECONDS * SAMPLE_RATE) + 1, np.float32))
    bad = wav[CHUNK:2 * CHUNK].copy()
    bad[10] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        live.push(bad)
    bad[10] = np.inf
    with pytest.raises(ValueError, match="infinite"):
        live.push(bad)
    for c in _chunks(wav[CHUNK:], CHUNK):
        live.push(c)
    with pytest.raises(ValueError, match="limit of 2 s"):
        live.push(wav[: int(0.6 * SAMPLE_RATE)])
    live.finish()
    np.testing.assert_array_equal(live.speech(), wav)  # refused chunks were not kept
    assert live.take().n_frames == _frames(wav.shape[0])
    with pytest.raises(RuntimeError, match="finished"):
        live.push(wav[:CHUNK])


@pytest.mark.parametrize("settings,words", [
    (dict(locks=[Lock("upper", 0.0, 0.5)], reference=Motion.zeros(30)), "locks"),
    (dict(variants=2), "variant"),
    (dict(emotion="happiness"), "happiness"),
    (dict(style={"amplitude": 1.3}), "style"),
    (dict(guidance=2.0), "guidance"),
    (dict(speaker="nobody"), "speaker"),
])
def test_live_refuses_whole_clip_settings(gen, settings, words):
    assert not gen.emotions  # the bundled model learned no emotion: happiness would be the explicit edit
    with pytest.raises(ValueError, match=words):
        gen.live(GenerationSettings(seed=0, **settings))
    with pytest.raises(ValueError, match=words):
        gen.live(seed=0, **settings)


def test_live_refuses_bad_lookahead(gen):
    for bad in (-1, 40):
        with pytest.raises(ValueError, match="lookahead"):
            gen.live(GenerationSettings(seed=0), lookahead=bad)


# -- files -----------------------------------------------------------------------------------------------
def test_write_take(gen, tmp_path):
    wav = _speech(1.7, seed=13)
    live, _ = _run(gen, wav, CHUNK, GenerationSettings(seed=4))
    files = write_take(live, tmp_path / "out")
    assert set(files) == {"wav", "npz", "bvh", "glb", "metadata"}
    names = {"take.npz", "take.json", "take.bvh", "take.glb", "take.wav", "metadata.json"}
    assert names <= {p.name for p in (tmp_path / "out").iterdir()}
    assert all(p.stat().st_size > 0 for p in (tmp_path / "out").iterdir())
    n = _frames(wav.shape[0])
    back = read_beat2(files["npz"])
    assert back.n_frames == n
    np.testing.assert_allclose(back.poses, live.take().poses, atol=1e-5)
    info = sf.info(str(files["wav"]))
    assert info.samplerate == SAMPLE_RATE and info.frames == wav.shape[0]
    assert abs(info.duration - n / FPS) < 1 / FPS
    meta = json.loads(files["metadata"].read_text())
    assert meta["live"]["generated_live"] is True and meta["frames"] == n and meta["seed"] == 4
    assert meta["family"] == "emage" and len(meta["audio_sha256"]) == 64
    sidecar = json.loads((tmp_path / "out" / "take.json").read_text())
    assert sidecar["live"]["lookahead_frames"] == LIVE_LOOKAHEAD


# -- Generator.stream ------------------------------------------------------------------------------------
def test_generator_stream_is_live_push(gen):
    wav = _speech(1.5, seed=14)
    pieces = _chunks(wav, CHUNK)
    got = list(gen.stream(iter(pieces), GenerationSettings(seed=2), lookahead=3))
    assert len(got) == len(pieces) + 1 and all(isinstance(c, MotionChunk) for c in got)
    assert sum(c.n_frames for c in got) == _frames(wav.shape[0])
    live, ref = _run(gen, wav, CHUNK, GenerationSettings(seed=2), lookahead=3)
    assert [c.start for c in got] == [c.start for c in ref]
    np.testing.assert_array_equal(np.concatenate([c.poses for c in got]), live.take().poses)


def test_family_that_cannot_stream_says_so():
    from emage_core.generate.emotiongesture import EmotionGestureGenerator

    eg = EmotionGestureGenerator.from_pretrained(device="cpu")  # the bundled default, offline
    assert not eg.capabilities.streaming
    wav = _speech(1.0)
    with pytest.raises(ValueError, match="cannot generate live"):
        list(eg.stream(iter(_chunks(wav, CHUNK)), GenerationSettings(seed=0)))
    with pytest.raises(ValueError, match="emotiongesture"):
        eg.live(GenerationSettings(seed=0))


# -- command line ----------------------------------------------------------------------------------------
LINE = re.compile(r"^\s*\d+\s+\d+\.\d\d\s+\d+\s+\d+\.\d$")


def test_cli_live(tmp_path, capsys):
    from emage_core.cli.main import main

    wav = _speech(1.3, seed=15)
    path = tmp_path / "speech.wav"
    sf.write(path, wav, SAMPLE_RATE, subtype="FLOAT")
    out = tmp_path / "takes" / "take.npz"
    assert main(["live", str(path), "--chunk-ms", "200", "-o", str(out), "--no-realtime", "--seed", "0",
                 "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    text = captured.out + captured.err
    n_chunks = -(-wav.shape[0] // CHUNK)
    assert sum(bool(LINE.match(line)) for line in text.splitlines()) == n_chunks
    assert f"{n_chunks} chunks of 200 ms" in text and "latency median" in text
    n = _frames(wav.shape[0])
    assert f"take: {n} frames" in text
    assert read_beat2(out).n_frames == n
    for suffix in (".json", ".bvh", ".glb", ".wav"):
        assert out.with_suffix(suffix).is_file()
    meta = json.loads((out.parent / "metadata.json").read_text())
    assert meta["seed"] == 0 and meta["live"]["generated_live"] is True and meta["live"]["idle"] is not None


@pytest.mark.parametrize("args,words", [(["--chunk-ms", "5"], "--chunk-ms"), (["--chunk-ms", "3000"], "--chunk-ms"),
                                        (["-o", "take.bvh"], ".npz")])
def test_cli_live_bad_arguments(tmp_path, capsys, args, words):
    from emage_core.cli.main import main

    path = tmp_path / "speech.wav"
    sf.write(path, _speech(0.5), SAMPLE_RATE)
    argv = ["live", str(path), "-o", str(tmp_path / "take.npz"), "--no-realtime", "--device", "cpu"]
    if args[0] == "-o":
        argv[3] = str(tmp_path / args[1])
    else:
        argv += args
    assert main(argv) == 2
    assert words in capsys.readouterr().err
    assert not (tmp_path / "take.npz").exists()
