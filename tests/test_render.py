"""Rendering: mp4 encoding, framing, the mesh renderer, grids and labels, stick preview, CLI.

Small on purpose (64-128 px, 10-20 frames). Tests that draw the mesh need offscreen OpenGL (EGL);
they skip, naming the reason, only where the EGL library is absent (CI installs the Debian packages,
and under its strict switch a skip is a failure).
"""
from __future__ import annotations

import argparse

import numpy as np
import pytest
import soundfile as sf

from emage_core import Motion
from emage_core.render import gl as render
from emage_core.render.camera import clip_camera, fit_camera, motion_floor, view_region
from emage_core.render.grid import compose_grid, draw_label, grid_shape, label_box, motion_frames, render_grid, render_motion
from emage_core.render.mesh import BACKGROUND, MeshRenderer
from emage_core.render.stick import STICK_BONES, StickRenderer
from emage_core.render.video import VideoError, VideoWriter, probe_video, read_video_frames, write_video

BG = np.round(np.array(BACKGROUND) * 255).astype(int)
RAISE_RIGHT_ARM = (17, (0.0, 0.0, -np.pi / 2))  # right shoulder: T-pose arm -> straight up
ARMS_DOWN = ((16, (0.0, 0.0, -1.2)), (17, (0.0, 0.0, 1.2)))  # shoulders: T-pose arms -> along the body
JAW = 22  # SMPL-X joint: opening the mouth is a rotation about +x


@pytest.fixture(scope="module")
def gl():
    """Skips only where the machine has no EGL; any other failure to render is a test failure."""
    missing = render.egl_library_missing()
    if missing:
        pytest.skip(f"offscreen OpenGL unavailable here: {missing}")
    reason = render.egl_unavailable_reason()
    assert reason is None, f"EGL is installed but our renderer could not start: {reason}"


@pytest.fixture(scope="module")
def body():
    from emage_core.body.anny import Body

    return Body.load()


def _motion(n: int, *, drift: float = 0.0, raise_arm_from: int | None = None, arms_down: bool = False) -> Motion:
    """A T-pose clip; optional drift along +X (metres over the clip), arms lowered along the body,
    and a raised right arm."""
    m = Motion.zeros(n)
    m.trans[:, 0] = np.linspace(0.0, drift, n)
    if arms_down:
        for joint, aa in ARMS_DOWN:
            m.poses[:, joint] = aa
    if raise_arm_from is not None:
        joint, aa = RAISE_RIGHT_ARM
        m.poses[raise_arm_from:, joint] = aa
    return m


def _tone(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def _non_bg(img: np.ndarray, tol: int = 12) -> np.ndarray:
    """(H, W) bool: pixels clearly different from the plain background colour."""
    return np.abs(img.astype(int) - BG).max(axis=-1) > tol


# ---------------------------------------------------------------------------- video.py

def test_mp4_is_h264_yuv420p_30fps_with_aac_of_the_video_length(tmp_path):
    for audio_s in (2.0, 0.4):  # longer speech is cut, shorter is padded with silence
        out = tmp_path / f"a{audio_s}.mp4"
        with VideoWriter(out, 128, 96, 30, audio=_tone(audio_s)) as w:
            for i in range(20):
                w.write(np.full((96, 128, 3), 10 * i, np.uint8))
        info = probe_video(out)
        assert (info.video_codec, info.pix_fmt, info.width, info.height) == ("h264", "yuv420p", 128, 96)
        assert info.fps == 30 and info.n_frames == 20
        assert info.audio_codec == "aac"
        assert info.audio_duration == pytest.approx(20 / 30, abs=0.01)
        data = out.read_bytes()
        assert data.index(b"moov") < data.index(b"mdat"), "+faststart: the index must come first"


def test_audio_from_a_file_and_frames_keep_their_colours(tmp_path):
    wav = tmp_path / "speech.wav"
    sf.write(wav, _tone(1.0), 16000)
    colours = [(220, 30, 30), (30, 220, 30), (30, 30, 220)]  # catches swapped channels
    frames = [np.tile(np.array(c, np.uint8), (64, 64, 1)) for c in colours for _ in range(4)]
    calls = []
    out = write_video(iter(frames), tmp_path / "c.mp4", audio=wav, n_frames=12,
                      progress=lambda f, m: calls.append(f), progress_every=4)
    back = read_video_frames(out)
    assert back.shape == (12, 64, 64, 3)
    for k, c in enumerate(colours):
        assert np.abs(back[4 * k + 2].reshape(-1, 3).mean(0) - c).max() < 8
    assert probe_video(out).audio_duration == pytest.approx(12 / 30, abs=0.01)
    assert calls == sorted(calls) and calls[-1] == 1.0 and len(calls) == 4


def test_video_writer_rejects_bad_input(tmp_path):
    with pytest.raises(VideoError, match="even"):
        VideoWriter(tmp_path / "odd.mp4", 65, 64)
    with pytest.raises(VideoError, match=r"\(64, 64, 3\) uint8"):
        with VideoWriter(tmp_path / "x.mp4", 64, 64) as w:
            w.write(np.zeros((32, 32, 3), np.uint8))
    assert not (tmp_path / "x.mp4").exists()  # aborted: no half-written file
    with pytest.raises(VideoError, match="mono"):
        VideoWriter(tmp_path / "y.mp4", 64, 64, audio=np.zeros((10, 2), np.float32))


# ---------------------------------------------------------------------------- framing

def test_clip_camera_is_one_fixed_camera_for_the_clip():
    rng = np.random.default_rng(0)
    clip = rng.normal(size=(12, 50, 3)).astype(np.float32) * [0.3, 0.8, 0.2] + [0, 1, 0]
    cam = clip_camera(clip, "full", 1.0)
    # The same camera whatever order or chunking the frames come in (it depends on the extent only).
    again = clip_camera([clip[6:], clip[:6][::-1]], "full", 1.0)
    np.testing.assert_allclose(cam.pose, again.pose)
    assert not cam.pose.flags.writeable
    # Every vertex of every frame is in the picture, and the picture is not mostly empty.
    px = cam.project(clip.reshape(-1, 3), 100, 100)
    assert px.min() > 0 and px.max() < 100
    assert np.ptp(px[:, 1]) > 60
    assert cam.floor_y == pytest.approx(clip[..., 1].min())


def test_views_zoom_in():
    lo, hi = np.array([-0.8, 0.0, -0.2]), np.array([0.8, 1.7, 0.2])
    full = fit_camera(lo, hi, 1.0, "full")
    face = fit_camera(np.array([-0.1, 1.5, -0.1]), np.array([0.1, 1.75, 0.1]), 1.0, "face")
    assert np.linalg.norm(face.pose[:3, 3] - face.target) < np.linalg.norm(full.pose[:3, 3] - full.target)
    with pytest.raises(ValueError, match="unknown view"):
        fit_camera(lo, hi, 1.0, "side")


def test_camera_pose_stays_identical_over_a_rendered_clip(gl, body):
    m = _motion(10, raise_arm_from=5)
    verts = body.vertices(m.poses, m.trans)
    r = MeshRenderer(64, 64)
    poses = []
    for _ in r.render_clip(verts, body.faces):
        poses.append(r._scene.get_pose(r._camera_node).copy())
    assert len(poses) == 10
    for p in poses:
        np.testing.assert_array_equal(p, poses[0])
    np.testing.assert_allclose(poses[0], r.camera.pose, atol=1e-12)


# ---------------------------------------------------------------------------- the mesh

def test_the_body_is_visible_and_a_raised_arm_shows_where_expected(gl, body):
    rest, raised = _motion(1), _motion(1, raise_arm_from=0)
    v_rest = body.vertices(rest.poses, rest.trans)
    v_up = body.vertices(raised.poses, raised.trans)
    r = MeshRenderer(128, 128)
    r.set_camera(clip_camera(np.concatenate([v_rest, v_up]), "full", 1.0))  # one camera for both
    img_rest, img_up = r.render_frame(v_rest[0], body.faces), r.render_frame(v_up[0])
    assert _non_bg(img_rest[54:74, 54:74]).mean() > 0.5, "the torso fills the centre"
    assert _non_bg(img_rest).mean() < 0.5
    # The raised right forearm (between elbow and wrist): body there now, background at rest.
    j = body.joints(raised.poses, raised.trans)[0]
    x, y = np.round(r.camera.project((j[19:20] + j[21:22]) / 2, 128, 128)[0]).astype(int)
    assert x < 64, "the character's right is on the image's left (camera in front)"
    assert y < 40, "above the head"
    patch = (slice(y - 1, y + 2), slice(x - 1, x + 2))
    assert _non_bg(img_up[y, x]) and _non_bg(img_up[patch]).mean() > 0.5
    assert not _non_bg(img_rest[patch]).any()
    # The T-pose right hand, out to the side, is gone when the arm is up.
    hand = body.joints(rest.poses, rest.trans)[0, 21]
    hx, hy = np.round(r.camera.project(hand[None], 128, 128)[0]).astype(int)
    assert _non_bg(img_rest[hy, hx - 1:hx + 2]).any() and not _non_bg(img_up[hy, hx - 1:hx + 2]).any()


def test_the_jaw_opens_in_the_face_view(gl, body):
    rest, talking = _motion(1), _motion(1)
    talking.poses[:, JAW] = (0.4, 0.0, 0.0)
    v_rest = body.vertices(rest.poses, rest.trans)
    v_open = body.vertices(talking.poses, talking.trans)
    size = 128
    region = view_region(body.rest_vertices, body.rest_joints, "face")
    r = MeshRenderer(size, size, view="face")
    r.set_camera(clip_camera(np.concatenate([v_rest, v_open]), "face", 1.0, region))
    closed, opened = r.render_frame(v_rest[0], body.faces), r.render_frame(v_open[0])
    # The face crop: the framed head (and upper neck), projected.
    x0, y0 = r.camera.project(v_rest[0][region], size, size).min(0)
    x1, y1 = r.camera.project(v_rest[0][region], size, size).max(0)
    assert x1 - x0 > 0.3 * size and y1 - y0 > 0.4 * size, "the face view is a close-up"
    changed = np.abs(closed.astype(int) - opened).max(-1) > 12

    def box(top, bottom, left=0.2, right=0.8):  # fractions of the face crop
        return (slice(int(y0 + top * (y1 - y0)), int(np.ceil(y0 + bottom * (y1 - y0)))),
                slice(int(x0 + left * (x1 - x0)), int(np.ceil(x0 + right * (x1 - x0)))))

    mouth, forehead = box(0.6, 1.2), box(0.0, 0.35)  # the chin drops below the rest pose's crop
    assert changed[mouth].sum() > 60 and changed[mouth].mean() > 0.05, "the mouth opens"
    assert not changed[forehead].any(), "the forehead stays put"
    outside = changed.copy()
    outside[mouth] = False
    assert outside.sum() <= 0.05 * changed.sum(), "only the mouth and chin change"


def test_a_2up_mesh_grid_shows_two_bodies(gl, body, tmp_path):
    cell = 96
    res = render_grid([_motion(4, arms_down=True), _motion(4, arms_down=True, raise_arm_from=0)],
                      tmp_path / "two.mp4", size=cell, body=body, write_cells=False)
    frames = read_video_frames(res.grid_path)
    assert frames.shape == (4, cell, 2 * cell, 3)
    upper = frames[-1, : cell * 3 // 5].astype(int)  # head to hips: the floor lies below
    body_px = np.abs(upper - BG).max(-1) > 20  # h.264 blurs edges: a tolerance above its ringing
    for k in (0, 1):
        part = body_px[:, k * cell:(k + 1) * cell]
        assert part.mean() > 0.04, f"cell {k + 1} shows a body"
        cols = np.nonzero(part.any(0))[0]
        assert abs(cols.mean() - cell / 2) < cell / 8, f"the body in cell {k + 1} is centred"
    gap = body_px[:, cell - cell // 8:cell + cell // 8]
    assert gap.mean() < 0.01, "background between the two bodies"
    # The cells differ where the poses do: the raised arm is above the head in the second only.
    above_head = body_px[: cell // 8]
    assert not above_head[:, :cell].any() and above_head[:, cell:].any()


def test_msaa_smooths_edges(gl, body):
    m = _motion(1)
    v = body.vertices(m.poses, m.trans)[0]
    cam = clip_camera(v[None], "full", 1.0)
    sharp, smooth = MeshRenderer(96, 96, msaa=0, floor=False), MeshRenderer(96, 96, msaa=4, floor=False)
    sharp.set_camera(cam), smooth.set_camera(cam)
    a, b = sharp.render_frame(v, body.faces), smooth.render_frame(v, body.faces)
    assert (a != b).any(axis=-1).mean() < 0.1  # only edges differ
    assert (a != b).any()


def test_renders_from_threads_and_after_closing_match(gl, body):
    import threading

    clips = [_motion(6, raise_arm_from=2), _motion(6, drift=0.5)]
    settings = [dict(size=64, msaa=0), dict(size=96, msaa=4)]  # switching sizes and MSAA
    alone = [list(motion_frames([m], body=body, **kw)[0]) for m, kw in zip(clips, settings)]
    together = [None, None]

    def work(k):
        together[k] = list(motion_frames([clips[k]], body=body, **settings[k])[0])

    threads = [threading.Thread(target=work, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a, b in zip(alone, together):
        np.testing.assert_array_equal(np.stack(a), np.stack(b))
    # A renderer keeps working when the shared context is closed and made anew.
    r = MeshRenderer(64, 64)
    v = body.vertices(clips[0].poses, clips[0].trans)
    r.set_camera(clip_camera(v, "full", 1.0))
    before = r.render_frame(v[3], body.faces)
    render.close_renderer()
    np.testing.assert_array_equal(r.render_frame(v[3]), before)


def test_keep_translation_false_removes_drift(gl, body):
    m = _motion(10, drift=1.0)
    for renderer in ("mesh", "stick"):
        drift = [list(src) for src in motion_frames([m], size=64, renderer=renderer, body=body)][0]
        still = [list(src) for src in motion_frames([m], size=64, renderer=renderer, body=body,
                                                    keep_translation=False)][0]
        assert not np.array_equal(drift[0], drift[-1]), renderer
        np.testing.assert_array_equal(still[0], still[-1])


def test_render_motion_writes_a_clip_with_speech(gl, body, tmp_path):
    m = _motion(12, raise_arm_from=6)
    fractions = []
    out = render_motion(m, tmp_path / "one.mp4", audio=_tone(3.0), size=128, body=body, view="upper",
                        progress=lambda f, msg: fractions.append(f))
    info = probe_video(out)
    assert (info.width, info.height, info.n_frames, info.fps) == (128, 128, 12, 30)
    assert info.audio_duration == pytest.approx(12 / 30, abs=0.01)
    assert fractions[0] == 0.0 and fractions[-1] == 1.0


def _container_duration(path) -> float:
    """The duration ffmpeg (and so a player) reports for the file: ``Duration: HH:MM:SS.ss``."""
    import re
    import subprocess

    import imageio_ffmpeg

    log = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)],
                         capture_output=True, text=True, timeout=60).stderr
    h, m, s = re.search(r"Duration: (\d+):(\d+):([\d.]+)", log).groups()
    return 3600 * int(h) + 60 * int(m) + float(s)


def test_video_lasts_as_long_as_the_speech_within_one_frame(gl, body, tmp_path):
    # Speech of a length that is no whole number of frames, from a file as the app passes it;
    # the motion has as many frames as generation makes for it (inference: T = N * 30 // 16000).
    n_samples = 9100  # 0.56875 s
    wav = tmp_path / "speech.wav"
    sf.write(wav, _tone(1.0)[:n_samples], 16000)
    speech_s = n_samples / 16000
    m = _motion(n_samples * 30 // 16000, raise_arm_from=8)
    out = render_motion(m, tmp_path / "talk.mp4", audio=wav, size=64, body=body)
    info = probe_video(out)
    assert info.n_frames == m.n_frames == 17
    assert info.audio_codec == "aac" and info.audio_rate == 16000, "no speech in the video"
    one_frame = 1 / 30
    assert abs(info.duration - speech_s) < one_frame
    assert abs(info.audio_duration - speech_s) < one_frame
    assert abs(info.audio_duration - info.duration) < 0.005, "speech and picture end together"
    assert abs(_container_duration(out) - speech_s) < one_frame, "what players show"


# ---------------------------------------------------------------------------- SMPL-X skeleton, bodies, floor

def test_the_floor_comes_from_the_skeleton_not_the_mesh():
    from emage_core.motion import smplx_skeleton as S

    still = _motion(5)  # no translation: the model frame, whose floor is SMPL-X's rest sole height
    assert motion_floor([still]) == pytest.approx(S.rest_floor())
    beat2 = _motion(5)
    beat2.trans[:, 1] = 1.3  # BEAT2 / EMAGE translations: the neutral shape's soles at y = 0
    assert motion_floor([beat2]) == 0.0
    kick = _motion(5)
    kick.trans[:, 1] = 1.3
    kick.poses[:, 2] = [-1.2, 0, 0]  # a leg kicked forward: the floor stays where it is
    assert motion_floor([kick]) == 0.0
    tall = _motion(5)
    tall.trans[:, 1] = 1.3
    tall.betas[0] = 2.0  # a bigger body stands lower in BEAT2's frame; shown together, the lowest floor
    assert motion_floor([tall]) == pytest.approx(S.floor_height(tall.betas)) and motion_floor([tall]) < 0
    assert motion_floor([beat2, tall]) == motion_floor([tall])


def test_a_clip_at_rest_beside_a_translated_one_stands_on_the_same_floor():
    """A family that leaves translation at rest (pelvis at the origin) compared with one that moves the
    root as BEAT2 does: both are lifted onto the one floor the cells share, so neither floats nor sinks."""
    from dataclasses import replace

    from emage_core.motion import smplx_skeleton as S
    from emage_core.motion.kinematics import joint_positions
    from emage_core.render import grid

    still = _motion(5)
    beat2 = _motion(5)
    beat2.trans[:, 1] = -S.rest_floor()  # BEAT2-style: the soles at y = 0, the floor of BEAT2 translations
    floor = motion_floor([still, beat2])
    feet = []
    for m in (still, beat2):
        j = joint_positions(replace(m, trans=grid._trans(m, True, floor)))
        feet.append(j[:, [7, 8, 10, 11], 1].min())
    assert abs(feet[0] - feet[1]) < 0.02
    np.testing.assert_array_equal(grid._trans(beat2, True, motion_floor([beat2])), beat2.trans)  # alone: as is


def _beat2_clip(frames: slice):
    from conftest import BEAT2
    from emage_core.motion.beat2 import read_beat2

    path = BEAT2 / "2_scott_0_1_1.npz"
    if not path.is_file():
        pytest.skip(f"needs the BEAT2 sample {path} (the shared test data beside the repository); absent here")
    return read_beat2(path)[frames]


@pytest.mark.parametrize("name", ["anny", "mannequin"])
def test_rendered_feet_meet_the_floor_of_a_beat2_clip(gl, name, monkeypatch):
    """The renderer's floor is the skeleton's (no per-clip shift), and the rendered body's lowest
    vertex is within 3 cm of it in most frames."""
    from emage_core.body import load_body
    from emage_core.render import grid

    m = _beat2_clip(slice(300, 360))
    cameras = []
    original = MeshRenderer.set_camera
    monkeypatch.setattr(MeshRenderer, "set_camera", lambda self, cam: (cameras.append(cam), original(self, cam))[1])
    frames = list(motion_frames([m], size=64, body=name)[0])
    assert len(frames) == 60 and cameras[0].floor_y == pytest.approx(motion_floor([m]))
    low = np.concatenate(list(grid._posed_chunks(load_body(name), m, m.trans)))[..., 1].min(1)
    assert np.mean(np.abs(low - cameras[0].floor_y) < 0.03) > 0.9


def test_zero_finger_rotations_render_the_relaxed_hand(gl, body):
    """Pixel test: a close-up of the right hand; with zero finger rotations the fingers hang down
    (SMPL-X's mean hand), with the mean hand taken out they stretch out flat."""
    from emage_core.motion.smplx_skeleton import hand_mean

    relaxed, flat = _motion(1), _motion(1)
    flat.poses[:, 25:] = -hand_mean()
    v_relaxed, v_flat = body.vertices(relaxed.poses, relaxed.trans), body.vertices(flat.poses, flat.trans)
    wrist = body.rest_joints[21]
    hand = np.linalg.norm(body.rest_vertices - wrist, axis=1) < 0.25
    r = MeshRenderer(96, 96, view="upper", floor=False)
    r.set_camera(clip_camera(np.concatenate([v_relaxed, v_flat]), "upper", 1.0, hand))
    a, b = _non_bg(r.render_frame(v_relaxed[0], body.faces)), _non_bg(r.render_frame(v_flat[0]))
    x = int(np.round(r.camera.project(wrist[None], 96, 96)[0, 0]))
    fingers_a, fingers_b = a[:, :x - 8], b[:, :x - 8]  # the right hand is on the image's left
    assert fingers_a.sum() > 20 and fingers_b.sum() > 20
    rows = np.arange(96)[:, None]
    low_a = (rows * fingers_a).sum() / fingers_a.sum()
    low_b = (rows * fingers_b).sum() / fingers_b.sum()
    assert low_a > low_b + 2, (low_a, low_b)  # relaxed fingers: lower in the picture
    assert fingers_b.any(0).nonzero()[0].min() < fingers_a.any(0).nonzero()[0].min()  # flat ones reach further


def test_mannequin_grid_and_names(gl, tmp_path):
    from emage_core.render.grid import body_name

    res = render_grid([_motion(3, arms_down=True), _motion(3, raise_arm_from=0)], tmp_path / "m.mp4", size=64,
                      body="mannequin", write_cells=False)
    frames = read_video_frames(res.grid_path)
    assert frames.shape == (3, 64, 128, 3)
    assert (np.abs(frames[-1, :40].astype(int) - BG).max(-1) > 20).mean() > 0.03  # a body in each cell
    assert body_name("mannequin") == "mannequin" and body_name(None) in ("anny", "smplx")
    with pytest.raises(ValueError, match="body must be one of"):
        render_grid([_motion(2)], tmp_path / "x.mp4", size=64, body="robot")


def test_stick_floor_line_is_the_given_floor():
    from emage_core.motion.kinematics import joint_positions
    from emage_core.render.stick import FLOOR

    m = _motion(1)
    joints = joint_positions(m)
    floor = float(joints[..., 1].min()) - 0.06  # the soles, below the ankle and foot joints
    r = StickRenderer(128, 128).fit(joints, floor_y=floor)
    assert r.floor_y == floor
    img = r.render_frame(joints[0])
    y = int(round(float(r.to_pixels(np.array([0.0, floor, 0.0]))[1])))
    assert 0 < y < 127 and (img[y, :5] == FLOOR).all()


# ---------------------------------------------------------------------------- grids and labels

def test_grid_layouts():
    assert [grid_shape(n) for n in (1, 2, 3, 4)] == [(1, 1), (1, 2), (1, 3), (2, 2)]
    cells = [np.full((8, 10, 3), k, np.uint8) for k in range(4)]
    g = compose_grid(cells)
    assert g.shape == (16, 20, 3)
    assert g[0, 0, 0] == 0 and g[0, 10, 0] == 1 and g[8, 0, 0] == 2 and g[8, 10, 0] == 3
    assert compose_grid(cells[:3]).shape == (8, 30, 3)


def test_labels_change_pixels_only_in_the_label_box():
    rng = np.random.default_rng(1)
    cell = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
    plain = compose_grid([cell, cell])
    labelled = compose_grid([draw_label(cell.copy(), "model A"), draw_label(cell.copy(), "B")])
    changed = (plain != labelled).any(axis=-1)
    inside = np.zeros_like(changed)
    for k, text in enumerate(("model A", "B")):
        x0, y0, x1, y1 = label_box(text, 128, 96)
        inside[y0:y1, 128 * k + x0:128 * k + x1] = True
        assert changed[y0:y1, 128 * k + x0:128 * k + x1].mean() > 0.3
    assert not changed[~inside].any()


def test_render_grid_writes_grid_and_cells_in_one_pass(tmp_path):
    a, b = _motion(10), _motion(10, raise_arm_from=3)
    res = render_grid([a, b], tmp_path / "g.mp4", labels=["A", "B"], size=64, renderer="stick",
                      audio=_tone(1.0))
    grid = probe_video(res.grid_path)
    assert (grid.width, grid.height, grid.n_frames) == (128, 64, 10)
    assert [p.name for p in res.cell_paths] == ["g_cell1.mp4", "g_cell2.mp4"]
    for p in res.cell_paths:
        info = probe_video(p)
        assert (info.width, info.height, info.n_frames, info.audio_codec) == (64, 64, 10, "aac")
    # Each cell file shows exactly its grid cell.
    g, c2 = read_video_frames(res.grid_path), read_video_frames(res.cell_paths[1])
    assert np.abs(g[5, :, 64:].astype(int) - c2[5]).mean() < 3


def test_labels_off_means_no_text_at_all(tmp_path):
    ms = [_motion(6), _motion(6, raise_arm_from=0)]
    hidden = render_grid(ms, tmp_path / "h.mp4", labels=["secret A", "secret B"], show_labels=False,
                         size=64, renderer="stick", write_cells=False)
    none = render_grid(ms, tmp_path / "n.mp4", size=64, renderer="stick", write_cells=False)
    shown = render_grid(ms, tmp_path / "s.mp4", labels=["secret A", "secret B"], size=64,
                        renderer="stick", write_cells=False)
    assert hidden.cell_paths == []
    h, n, s = (read_video_frames(r.grid_path) for r in (hidden, none, shown))
    np.testing.assert_array_equal(h, n)
    assert np.abs(s.astype(int) - n).max() > 50


def test_clear_errors_for_bad_motion_sets(tmp_path):
    with pytest.raises(ValueError, match="same number of frames.*10, 12"):
        render_grid([_motion(10), _motion(12)], tmp_path / "x.mp4", renderer="stick")
    for n in (0, 5):
        with pytest.raises(ValueError, match=f"1 to 4 motions, got {n}"):
            render_grid([_motion(4)] * n, tmp_path / "x.mp4", renderer="stick")
    with pytest.raises(ValueError, match="2 labels for 1 motions"):
        render_grid([_motion(4)], tmp_path / "x.mp4", labels=["a", "b"], renderer="stick")
    with pytest.raises(ValueError, match="even"):
        render_grid([_motion(4)], tmp_path / "x.mp4", size=63, renderer="stick")
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------------- stick preview

def test_stick_preview_draws_every_limb_fast():
    from emage_core.motion.kinematics import joint_positions

    assert len(STICK_BONES) == 52  # 54 bones of the 55-joint skeleton, minus the two eyes
    joints = joint_positions(_motion(1))
    r = StickRenderer(256, 256).fit(joints)
    img = r.render_frame(joints[0])
    bg = np.array(img[0, 0], int)
    for c, p in STICK_BONES:
        x, y = np.round(r.to_pixels((joints[0, c] + joints[0, p]) / 2)).astype(int)
        assert (np.abs(img[y - 1:y + 2, x - 1:x + 2].astype(int) - bg).max(-1) > 30).any(), (c, p)


# ---------------------------------------------------------------------------- command line

def _cli(argv: list[str]) -> int:
    from emage_core.cli.render import add_render_parser

    parser = argparse.ArgumentParser()
    add_render_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_render_and_export(tmp_path):
    from emage_core.motion.beat2 import write_beat2

    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    write_beat2(_motion(8), a)
    write_beat2(_motion(8, raise_arm_from=2), b)
    wav = tmp_path / "s.wav"
    sf.write(wav, _tone(1.0), 16000)
    assert _cli(["render", str(a), str(b), "-o", str(tmp_path / "cmp.mp4"), "--stick", "--size", "64",
                 "--labels", "one,two", "--audio", str(wav)]) == 0
    assert probe_video(tmp_path / "cmp.mp4").width == 128
    assert (tmp_path / "cmp_cell1.mp4").is_file() and (tmp_path / "cmp_cell2.mp4").is_file()
    assert _cli(["export", str(a), "-o", str(tmp_path / "a.bvh")]) == 0
    assert (tmp_path / "a.bvh").read_text().startswith("HIERARCHY")


def test_cli_body_option(gl, tmp_path):
    from emage_core.motion.beat2 import write_beat2

    a = tmp_path / "a.npz"
    write_beat2(_motion(3), a)
    assert _cli(["render", str(a), "-o", str(tmp_path / "wood.mp4"), "--size", "64", "--body", "mannequin"]) == 0
    assert probe_video(tmp_path / "wood.mp4").n_frames == 3
    with pytest.raises(SystemExit):
        _cli(["render", str(a), "-o", str(tmp_path / "x.mp4"), "--body", "robot"])
