import io
import subprocess
import sys

import numpy as np
import pytest

from emage_core.motion.beat2 import MotionFileError, read_beat2, write_beat2


def _arrays(T=10):
    rng = np.random.default_rng(1)
    return dict(betas=np.zeros(300, np.float32), poses=rng.normal(size=(T, 165)).astype(np.float32),
                expressions=rng.normal(size=(T, 100)), trans=rng.normal(size=(T, 3)).astype(np.float32),
                model=np.array("smplx2020"), gender=np.array("neutral"), mocap_frame_rate=np.array(30))


def _npz(tmp_path, name="m.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def test_real_file_reads_and_round_trips_exactly(beat2_npz, tmp_path):
    m = read_beat2(beat2_npz)
    assert (m.n_frames, m.fps) == (1906, 30) and abs(m.duration - 63.53) < 0.01
    with np.load(beat2_npz) as raw:  # values equal the file's (expressions are float64 there)
        assert np.array_equal(m.poses.reshape(1906, 165), raw["poses"])
        assert np.allclose(m.expressions, raw["expressions"], atol=1e-6)
    out = write_beat2(m, tmp_path / "copy.npz")
    again = read_beat2(out)
    assert again.allclose(m, atol=0)


def test_written_file_matches_official_writer(tmp_path, emage_ref):
    official = emage_ref / "golden" / "beat2_b2p5s_output.npz"
    ours = write_beat2(read_beat2(official), tmp_path / "ours.npz")
    with np.load(official) as a, np.load(ours) as b:
        assert sorted(a.files) == sorted(b.files)
        for k in a.files:
            assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
            assert np.array_equal(a[k], b[k]), k


def test_written_file_needs_no_pickle(tmp_path):
    path = _npz(tmp_path, **_arrays())
    out = write_beat2(read_beat2(path), tmp_path / "out")
    assert out.name == "out.npz"
    with np.load(out, allow_pickle=False) as z:
        assert z["mocap_frame_rate"].dtype == np.int64 and z["poses"].dtype == np.float32
        assert str(z["model"]) == "smplx2020" and str(z["gender"]) == "neutral"


def _bad(key, value):
    a = _arrays()
    if value is None:
        del a[key]
    else:
        a[key] = value
    return a


@pytest.mark.parametrize("arrays, match", [
    (_bad("poses", None), "missing key.*poses"),
    (_bad("expressions", None), "missing key.*expressions"),
    (_bad("poses", np.zeros((10, 160), np.float32)), r"'poses' has shape \(10, 160\)"),
    (_bad("trans", np.zeros((9, 3))), r"'trans' has shape \(9, 3\)"),
    (_bad("expressions", np.full((10, 100), np.inf)), "'expressions' contains NaN or infinite"),
    (_bad("poses", np.full((10, 165), np.nan, np.float32)), "'poses' contains NaN"),
    (_bad("poses", np.array([[None] * 165] * 10, dtype=object)), "'poses' holds Python objects"),
    (_bad("poses", np.zeros((0, 165))) | dict(trans=np.zeros((0, 3)), expressions=np.zeros((0, 100))), "zero frames"),
    (_bad("poses", np.array([["a"] * 165] * 10)), "dtype"),
])
def test_bad_files_raise_clear_errors(tmp_path, arrays, match):
    path = _npz(tmp_path, **arrays)
    with pytest.raises(MotionFileError, match=match) as e:
        read_beat2(path)
    assert str(e.value).startswith(f"{path.name}: ") and str(path.parent) not in str(e.value)  # the file, no folder


def test_frame_limit(tmp_path):
    path = _npz(tmp_path, **_arrays(50))
    assert read_beat2(path, max_frames=50).n_frames == 50
    with pytest.raises(MotionFileError, match="'poses' claims 50 frames; the limit is 49"):
        read_beat2(path, max_frames=49)


def test_not_an_npz(tmp_path):
    txt = tmp_path / "motion.npz"
    txt.write_text("hello")
    with pytest.raises(MotionFileError, match=r"motion.npz: not an .npz file \(no zip archive\)"):
        read_beat2(txt)
    with pytest.raises(MotionFileError, match="cannot open"):
        read_beat2(tmp_path / "absent.npz")
    buf = io.BytesIO(); np.save(buf, np.zeros(3))
    with pytest.raises(MotionFileError, match="single .npy"):
        read_beat2(buf.getvalue())


def test_bytes_input_and_defaults(tmp_path):
    a = _arrays(); del a["betas"]; del a["mocap_frame_rate"]
    buf = io.BytesIO(); np.savez(buf, **a)
    m = read_beat2(buf.getvalue())
    assert m.fps == 30 and np.all(m.betas == 0) and m.n_frames == 10


def test_cli_info_on_real_file(beat2_npz):
    out = subprocess.run([sys.executable, "-m", "emage_core", "info", str(beat2_npz)],
                         capture_output=True, text=True, check=True).stdout
    assert "frames:       1906" in out and "fps:          30" in out and "63.53 s" in out
    for part in ("face", "upper", "hands", "lower", "global"):
        assert f"  {part}" in out


def test_cli_bad_file_is_a_clear_error(tmp_path):
    path = _npz(tmp_path, **_bad("poses", None))
    r = subprocess.run([sys.executable, "-m", "emage_core", "info", str(path)], capture_output=True, text=True)
    assert r.returncode == 2 and "missing key" in r.stderr and "Traceback" not in r.stderr


def test_writing_is_deterministic(tmp_path):
    m = read_beat2(_npz(tmp_path, **_arrays()))
    a, b = write_beat2(m, tmp_path / "a.npz"), write_beat2(m, tmp_path / "b.npz")
    assert a.read_bytes() == b.read_bytes()  # no timestamps: equal motion, equal sha256


def _npz_with_header(tmp_path, key_shapes: dict, data_bytes: int = 1024):
    """An .npz whose members' headers claim ``key_shapes`` but hold only ``data_bytes`` of data."""
    import zipfile

    path = tmp_path / "liar.npz"
    with zipfile.ZipFile(path, "w") as zf:
        for key, shape in key_shapes.items():
            buf = io.BytesIO()
            np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": shape})
            zf.writestr(f"{key}.npy", buf.getvalue() + bytes(data_bytes))
    return path


def test_headers_are_checked_before_anything_is_allocated(tmp_path):
    """A header may claim any size; the reader refuses before allocating (no MemoryError)."""
    huge = _npz_with_header(tmp_path, {"poses": (1_700_000_000, 165), "trans": (1_700_000_000, 3),
                                       "expressions": (1_700_000_000, 100)})
    with pytest.raises(MotionFileError, match="'poses' claims 1,700,000,000 frames; the limit is 21,600"):
        read_beat2(huge)
    within_limit = _npz_with_header(tmp_path, {"poses": (20_000, 165), "trans": (20_000, 3),
                                               "expressions": (20_000, 100)})
    with pytest.raises(MotionFileError, match=r"'poses' claims shape \(20000, 165\) \(13,200,000 bytes\) but holds "
                                              "only 1,024 bytes"):
        read_beat2(within_limit)
    with pytest.raises(MotionFileError, match="'poses' claims 13,333,334 frames"):  # 2.2 GB of float32
        read_beat2(_npz_with_header(tmp_path, {"poses": (13_333_334, 165), "trans": (13_333_334, 3),
                                               "expressions": (13_333_334, 100)}))


def test_garbage_members_are_named(tmp_path):
    import zipfile

    path = tmp_path / "garbage.npz"
    with zipfile.ZipFile(path, "w") as zf:
        for key in ("poses", "trans", "expressions"):
            zf.writestr(f"{key}.npy", b"this is not a numpy array")
    with pytest.raises(MotionFileError, match="garbage.npz: 'poses' is not a readable NumPy array"):
        read_beat2(path)
