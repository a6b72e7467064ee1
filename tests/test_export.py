"""Exports for animation tools: animated glTF (.glb), BVH and FBX, with the SMPL-X or Mixamo rig and an
in-place root option.

The .glb is read back with pygltflib and posed here from its own nodes, animation, skin and inverse bind
matrices (SciPy for the quaternions), then compared with our kinematics and our body; the Khronos glTF
validator checks the files; Blender (headless) imports .glb, .bvh and .fbx, and what it makes of them is
compared with our forward kinematics. The validator and Blender are optional tools: without them those
tests skip with an ``optional:`` reason (scripts/install.sh --test installs both).
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from conftest import OPTIONAL, REPO
from emage_core import Motion
from emage_core.body.anny import Body
from emage_core.export import export_motion, root_motion
from emage_core.export.blender import (BLENDER_ENV, BlenderError, BlenderMissing, find_blender, glb_to_fbx,
                                       run_blender)
from emage_core.export.gltf import write_glb
from emage_core.export.rigs import bone_names
from emage_core.motion import smplx_skeleton
from emage_core.motion.beat2 import read_beat2, write_beat2
from emage_core.motion.bvh import BVH_SCALE, write_bvh
from emage_core.motion.kinematics import BODY_ASSET, joint_positions, rest_skeleton
from emage_core.motion.skeleton import JOINT_NAMES, PARENTS

VALIDATOR = REPO / ".tools" / "gltf-validator" / "node_modules" / "gltf-validator"
PROBE = Path(__file__).with_name("blender_probe.py")
_VALIDATE_JS = """
const fs = require('fs');
const validator = require(process.argv[2]);
validator.validateBytes(new Uint8Array(fs.readFileSync(process.argv[3])), {maxIssues: 100})
  .then(report => console.log(JSON.stringify(report)))
  .catch(error => { console.error(String(error)); process.exit(1); });
"""


def _motion(T: int = 24, seed: int = 0, fps: float = 30) -> Motion:
    """Large random rotations on every joint, a walk with some height change, a non-neutral shape."""
    rng = np.random.default_rng(seed)
    m = Motion.zeros(T, fps=fps)
    m.poses[:] = rng.normal(0, 0.5, (T, 55, 3))
    m.trans[:] = np.cumsum(rng.normal(0, 0.05, (T, 3)), axis=0) + [0.3, 0.0, -0.2]
    m.betas[:4] = [0.8, -1.2, 0.5, 0.3]
    return m


# -- reading a .glb back (independently of the writer) -------------------------------------------


def _accessor(gltf, blob: bytes, index: int) -> np.ndarray:
    acc = gltf.accessors[index]
    view = gltf.bufferViews[acc.bufferView]
    dtype = {5126: np.float32, 5121: np.uint8, 5123: np.uint16, 5125: np.uint32}[acc.componentType]
    width = {"SCALAR": 1, "VEC3": 3, "VEC4": 4, "MAT4": 16}[acc.type]
    start = (view.byteOffset or 0) + (acc.byteOffset or 0)
    a = np.frombuffer(blob, dtype, acc.count * width, start)
    return a.reshape(acc.count, width) if width > 1 else a


class Glb:
    """A .glb as data: node names and parents, the rest pose, the animation sampled per key, the skin."""

    def __init__(self, path: Path):
        import pygltflib

        g = pygltflib.GLTF2().load_binary(str(path))
        blob = g.binary_blob()
        self.gltf = g
        self.names = [n.name for n in g.nodes]
        self.parent = {c: i for i, n in enumerate(g.nodes) for c in (n.children or [])}
        self.skin = g.skins[0]
        self.joints = list(self.skin.joints)
        self.rest_t = np.array([n.translation or [0, 0, 0] for n in g.nodes], np.float64)
        self.rest_q = np.array([n.rotation or [0, 0, 0, 1] for n in g.nodes], np.float64)
        self.ibm = _accessor(g, blob, self.skin.inverseBindMatrices).reshape(-1, 4, 4).transpose(0, 2, 1)
        anim = g.animations[0]
        self.times = None
        self.rot, self.trans = {}, {}
        for ch in anim.channels:
            s = anim.samplers[ch.sampler]
            times = _accessor(g, blob, s.input)
            assert self.times is None or np.array_equal(times, self.times)
            self.times = times
            (self.rot if ch.target.path == "rotation" else self.trans)[ch.target.node] = _accessor(g, blob, s.output)
        self.mesh = None
        if g.meshes:
            prim = g.meshes[0].primitives[0]
            a = prim.attributes
            self.mesh = {"positions": _accessor(g, blob, a.POSITION).astype(np.float64),
                         "joints": _accessor(g, blob, a.JOINTS_0).astype(np.int64),
                         "weights": _accessor(g, blob, a.WEIGHTS_0).astype(np.float64),
                         "faces": _accessor(g, blob, prim.indices).reshape(-1, 3)}

    def world(self, animated: bool = True) -> np.ndarray:
        """(T, N, 4, 4) world matrices of every node at each key (``animated=False``: the rest pose, T=1)."""
        T = len(self.times) if animated else 1
        N = len(self.names)
        local = np.tile(np.eye(4), (T, N, 1, 1))
        for i in range(N):
            q = self.rot.get(i, self.rest_q[i][None]) if animated else self.rest_q[i][None]
            t = self.trans.get(i, self.rest_t[i][None]) if animated else self.rest_t[i][None]
            local[:, i, :3, :3] = Rotation.from_quat(np.asarray(q, np.float64)).as_matrix()
            local[:, i, :3, 3] = t
        world = np.empty_like(local)
        done = set()
        while len(done) < N:  # parents first, whatever the node order
            for i in range(N):
                p = self.parent.get(i)
                if i not in done and (p is None or p in done):
                    world[:, i] = local[:, i] if p is None else world[:, p] @ local[:, i]
                    done.add(i)
        return world

    def skinned(self) -> np.ndarray:
        """(T, V, 3) the mesh posed per key by glTF's skinning: sum_k w_k * world(joint_k) @ IBM_k @ v."""
        W = self.world()[:, self.joints] @ self.ibm  # (T, J, 4, 4) joint matrices
        v = np.concatenate([self.mesh["positions"], np.ones((len(self.mesh["positions"]), 1))], 1)
        out = np.zeros((len(W), len(v), 3))
        for k in range(self.mesh["joints"].shape[1]):
            M = W[:, self.mesh["joints"][:, k]]  # (T, V, 4, 4)
            out += self.mesh["weights"][None, :, k, None] * np.einsum("tvij,vj->tvi", M, v)[..., :3]
        return out


# -- the .glb on its own ---------------------------------------------------------------------------


def test_glb_animation_reproduces_our_kinematics(tmp_path):
    m = _motion(T=20, fps=25)
    glb = Glb(write_glb(m, tmp_path / "m.glb"))
    assert glb.names[:55] == list(JOINT_NAMES) and glb.joints == list(range(55))
    assert [glb.parent.get(j, -1) for j in range(55)] == list(PARENTS)
    np.testing.assert_allclose(glb.times, np.arange(20) / 25, atol=1e-7)  # the motion's frame rate
    world = glb.world()[:, :55, :3, 3]
    assert np.abs(world - joint_positions(m)).max() < 1e-5  # every joint, every frame
    # the jaw (and every joint) turns exactly as the motion says, fingers with SMPL-X's mean hand added
    rotvec = Rotation.from_quat(glb.rot[22].astype(np.float64)).as_rotvec()
    np.testing.assert_allclose(rotvec, m.poses[:, 22], atol=1e-5)
    fingers = Rotation.from_quat(glb.rot[30].astype(np.float64)).as_matrix()
    expected = Rotation.from_rotvec(smplx_skeleton.with_mean_hands(m.poses)[:, 30].astype(np.float64)).as_matrix()
    np.testing.assert_allclose(fingers, expected, atol=1e-5)


def test_glb_rest_pose_stands_on_the_floor_and_matches_the_skin(tmp_path):
    m = _motion(T=4)
    m.trans[:, 1] += 0.9  # a BEAT2-style clip (translated): its floor is floor_height(betas)
    glb = Glb(write_glb(m, tmp_path / "m.glb"))
    rest = glb.world(animated=False)[0]
    lift = smplx_skeleton.floor_height(m.betas) - smplx_skeleton.rest_floor(m.betas)
    np.testing.assert_allclose(rest[:55, :3, 3], rest_skeleton(m.betas)[0] + [0, lift, 0], atol=1e-5)
    np.testing.assert_allclose(glb.ibm @ rest[:55], np.tile(np.eye(4), (55, 1, 1)), atol=1e-5)  # bind = rest pose
    soles = glb.mesh["positions"][:, 1].min()
    assert abs(soles - smplx_skeleton.floor_height(m.betas)) < 0.005  # the T-pose stands on the clip's floor


def test_glb_mesh_is_the_anny_body_and_its_skin_follows_ours(tmp_path, beat2_npz):
    """The file's own skin, posed by glTF's rule, against our renderer's body (Body.vertices)."""
    body = Body.load(BODY_ASSET)
    clip = read_beat2(beat2_npz).slice(0, 600).resample(3)  # 60 poses over 20 s of real motion
    glb = Glb(write_glb(clip, tmp_path / "clip.glb"))
    mesh = glb.mesh
    assert len(mesh["positions"]) == body.n_vertices and np.array_equal(mesh["faces"], body.faces)
    assert mesh["joints"].shape[1] == 4 and np.allclose(mesh["weights"].sum(1), 1, atol=1e-6)
    assert (mesh["weights"] >= 0).all() and mesh["joints"].max() < 55
    ours = body.vertices(clip.poses, clip.trans, betas=clip.betas)
    err = np.linalg.norm(glb.skinned() - ours, axis=-1)
    mean, p99, worst = err.mean(), np.percentile(err, 99), err.max()
    assert mean < 0.002 and p99 < 0.02 and worst < 0.05, f"mean {mean * 1e3:.1f} p99 {p99 * 1e3:.1f} " \
                                                         f"max {worst * 1e3:.1f} mm"
    # in the T-pose (flat hands: the mean hand undone) the skin is our body's rest mesh, lifted onto the floor
    still = Motion.zeros(2)
    still.betas[:] = clip.betas
    still.poses[:, 25:] = -smplx_skeleton.hand_mean()
    rest = Glb(write_glb(still, tmp_path / "rest.glb"))
    err = np.abs(rest.skinned() - body.vertices(still.poses, still.trans, betas=still.betas)).max()
    assert err < 1e-4, f"{err * 1e3:.2f} mm"


def test_skeleton_only_has_bones_and_animation_but_no_mesh(tmp_path):
    m = _motion(T=6)
    full, bare = write_glb(m, tmp_path / "full.glb"), write_glb(m, tmp_path / "bare.glb", skeleton_only=True)
    glb = Glb(bare)
    assert glb.mesh is None and not glb.gltf.meshes and len(glb.names) == 55
    assert len(glb.rot) == 55 and list(glb.trans) == [0]
    assert np.abs(glb.world()[:, :, :3, 3] - joint_positions(m)).max() < 1e-5
    assert bare.stat().st_size < full.stat().st_size / 5


MIXAMO_CHAINS = [  # child -> ... -> Hips, as Mixamo's characters have them
    ["LeftHand", "LeftForeArm", "LeftArm", "LeftShoulder", "Spine2", "Spine1", "Spine", "Hips"],
    ["RightHandIndex3", "RightHandIndex2", "RightHandIndex1", "RightHand", "RightForeArm", "RightArm",
     "RightShoulder", "Spine2"],
    ["LeftHandThumb3", "LeftHandThumb2", "LeftHandThumb1", "LeftHand"],
    ["RightHandPinky3", "RightHandPinky2", "RightHandPinky1", "RightHand"],
    ["Head", "Neck", "Spine2"],
    ["LeftToeBase", "LeftFoot", "LeftLeg", "LeftUpLeg", "Hips"],
    ["RightToeBase", "RightFoot", "RightLeg", "RightUpLeg", "Hips"],
    ["Jaw", "Head"], ["LeftEye", "Head"], ["RightEye", "Head"],
]


def test_mixamo_rig_names_and_hierarchy(tmp_path):
    m = _motion(T=5)
    glb = Glb(write_glb(m, tmp_path / "mixamo.glb", rig="mixamo", skeleton_only=True))
    names = glb.names
    assert all(n.startswith("mixamorig:") for n in names) and len(set(names)) == 55
    parent = {names[c]: names[p] for c, p in glb.parent.items()}
    for chain in MIXAMO_CHAINS:
        for child, up in zip(chain, chain[1:]):
            assert parent[f"mixamorig:{child}"] == f"mixamorig:{up}"
    assert "mixamorig:Hips" not in parent and names[0] == "mixamorig:Hips"
    fingers = {f"mixamorig:{s}Hand{f}{i}" for s in ("Left", "Right") for f in ("Thumb", "Index", "Middle", "Ring",
                                                                               "Pinky") for i in (1, 2, 3)}
    assert fingers <= set(names)
    # the same motion as with SMPL-X names: only the names differ
    assert np.abs(glb.world()[:, :, :3, 3] - joint_positions(m)).max() < 1e-5
    # BVH with the Mixamo rig: same names, same tree
    text = write_bvh(m, tmp_path / "mixamo.bvh", names=bone_names("mixamo")).read_text()
    assert text.splitlines()[1] == "ROOT mixamorig:Hips"
    assert {line.split()[1] for line in text.splitlines() if line.strip().startswith("JOINT")} == set(names[1:])


def test_in_place_root_has_no_horizontal_travel_and_keeps_height(tmp_path):
    m = _motion(T=30)
    assert np.ptp(m.trans[:, 0]) > 0.05 and np.ptp(m.trans[:, 2]) > 0.05
    full = Glb(export_motion(m, tmp_path / "full.glb", skeleton_only=True)).world()[:, 0, :3, 3]
    still = Glb(export_motion(m, tmp_path / "still.glb", root="in-place", skeleton_only=True)).world()[:, 0, :3, 3]
    rest_pelvis = rest_skeleton(m.betas)[0][0]
    np.testing.assert_allclose(still[:, [0, 2]], np.broadcast_to(rest_pelvis[[0, 2]], (30, 2)), atol=1e-6)
    np.testing.assert_allclose(still[:, 1], full[:, 1], atol=1e-6)  # height kept
    assert np.ptp(full[:, 0]) > 0.05  # the full root does travel
    # the BVH's root channels likewise
    lines = export_motion(m, tmp_path / "still.bvh", root="in-place").read_text().splitlines()
    frames = np.array([[float(v) for v in ln.split()[:3]] for ln in lines[lines.index("MOTION") + 3:]]) / BVH_SCALE
    np.testing.assert_allclose(frames[:, [0, 2]], np.broadcast_to(rest_pelvis[[0, 2]], (30, 2)), atol=1e-5)
    np.testing.assert_allclose(frames[:, 1], full[:, 1], atol=1e-5)
    assert root_motion(m, "full") is m and np.array_equal(root_motion(m, "in-place").poses, m.poses)
    with pytest.raises(ValueError, match="root must be one of full, in-place"):
        root_motion(m, "floating")


def test_bad_options_name_the_choices(tmp_path):
    m = _motion(T=2)
    with pytest.raises(ValueError, match="rig must be one of smplx, mixamo"):
        export_motion(m, tmp_path / "m.glb", rig="unreal")
    with pytest.raises(ValueError, match=r"m\.obj: cannot tell the format.*\.bvh, \.glb, \.fbx"):
        export_motion(m, tmp_path / "m.obj")
    with pytest.raises(ValueError, match="55 unique joint names without spaces"):
        write_bvh(m, tmp_path / "m.bvh", names=["a b"] * 55)


# -- the command line ------------------------------------------------------------------------------


def _cli(*argv: str) -> subprocess.CompletedProcess:
    import sys

    return subprocess.run([sys.executable, "-m", "emage_core", "export", *argv], capture_output=True, text=True,
                          timeout=300, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})


def test_cli_export_by_suffix_and_options(tmp_path, monkeypatch):
    m = _motion(T=8)
    src = write_beat2(m, tmp_path / "take.npz")
    r = _cli(str(src), "-o", str(tmp_path / "out.glb"), "--rig", "mixamo", "--root", "in-place")
    assert r.returncode == 0, r.stderr
    glb = Glb(tmp_path / "out.glb")
    assert glb.names[0] == "mixamorig:Hips" and glb.mesh is not None and len(glb.times) == 8
    assert np.ptp(glb.trans[0][:, 0]) == 0 and np.ptp(glb.trans[0][:, 2]) == 0
    r = _cli(str(src), "-o", str(tmp_path / "bones.glb"), "--skeleton-only")
    assert r.returncode == 0 and Glb(tmp_path / "bones.glb").mesh is None
    r = _cli(str(src), "-o", str(tmp_path / "legacy"))  # no known suffix: BVH, as before
    assert r.returncode == 0 and (tmp_path / "legacy.bvh").read_text().startswith("HIERARCHY\nROOT pelvis")
    r = _cli(str(tmp_path / "missing.npz"), "-o", str(tmp_path / "x.glb"))
    assert r.returncode == 2 and "missing.npz" in r.stderr and not (tmp_path / "x.glb").exists()


def test_cli_fbx_without_blender_says_how_to_get_it(tmp_path, monkeypatch):
    src = write_beat2(_motion(T=3), tmp_path / "take.npz")
    monkeypatch.setenv(BLENDER_ENV, str(tmp_path / "no-blender"))
    with pytest.raises(BlenderMissing, match="apt-get install blender python3-numpy"):
        export_motion(_motion(T=3), tmp_path / "m.fbx")
    r = _cli(str(src), "-o", str(tmp_path / "take.fbx"))
    assert r.returncode == 2 and "apt-get install blender" in r.stderr and "blender.org" in r.stderr
    assert not (tmp_path / "take.fbx").exists()


# -- the Khronos glTF validator --------------------------------------------------------------------


@pytest.fixture(scope="module")
def gltf_validator():
    node = shutil.which("node")
    if node is None or not (VALIDATOR / "package.json").is_file():
        pytest.skip(f"{OPTIONAL}the Khronos glTF validator (npm gltf-validator in .tools/, and node) is not "
                    "installed; scripts/install.sh --test installs it")
    return node


@pytest.mark.parametrize("rig", ["smplx", "mixamo"])
@pytest.mark.parametrize("skeleton_only", [False, True], ids=["mesh", "skeleton"])
def test_khronos_validator_reports_no_errors(gltf_validator, tmp_path, rig, skeleton_only):
    path = write_glb(_motion(T=10), tmp_path / "m.glb", rig=rig, skeleton_only=skeleton_only)
    script = tmp_path / "validate.js"
    script.write_text(_VALIDATE_JS)
    r = subprocess.run([gltf_validator, str(script), str(VALIDATOR), str(path)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    issues = json.loads(r.stdout)["issues"]
    assert issues["numErrors"] == 0 and issues["numWarnings"] == 0, issues["messages"]
    if skeleton_only:  # the only remark: a skin no mesh uses (kept so that importers build an armature)
        assert [m["code"] for m in issues["messages"]] == ["UNUSED_OBJECT"]
    else:
        assert issues["messages"] == []


# -- Blender imports what we write -----------------------------------------------------------------


@pytest.fixture(scope="module")
def blender():
    exe = find_blender()
    if exe is None:
        pytest.skip(f"{OPTIONAL}Blender is not installed (Debian: apt-get install blender python3-numpy; "
                    "scripts/install.sh --test installs it)")
    return exe


def _to_blender(p: np.ndarray) -> np.ndarray:
    """Our Y-up positions in Blender's Z-up world, as its glTF, BVH and FBX importers convert them."""
    return np.stack([p[..., 0], -p[..., 2], p[..., 1]], -1)


@pytest.mark.parametrize("suffix,rig,skeleton_only,root", [
    (".glb", "smplx", False, "full"), (".bvh", "smplx", False, "full"), (".fbx", "smplx", False, "full"),
    (".glb", "mixamo", True, "in-place"), (".bvh", "mixamo", False, "in-place"), (".fbx", "mixamo", True, "full"),
])
def test_blender_imports_the_file_as_we_pose_it(blender, tmp_path, suffix, rig, skeleton_only, root):
    m = _motion(T=16, seed=4)
    path = export_motion(m, tmp_path / f"m{suffix}", rig=rig, root=root, skeleton_only=skeleton_only)
    names = bone_names(rig)
    wrists = [names[20], names[21]]
    frames = [0, 7, 15]
    has_mesh = suffix != ".bvh" and not skeleton_only
    vertices = [0, 3000, 7000, 12000]
    out = tmp_path / "probe.json"
    run_blender(PROBE, [path, out, m.fps, ",".join(wrists + [names[0]]), ",".join(map(str, frames)),
                        *([",".join(map(str, vertices))] if has_mesh else [])], timeout=300, blender=blender)
    got = json.loads(out.read_text())
    assert sorted(got["bones"]) == sorted(names)
    assert all(got["parents"][names[j]] == (names[p] if p >= 0 else None) for j, p in enumerate(PARENTS))
    start, end = got["frame_range"]
    assert end - start == m.n_frames - 1 and got["fps"] == pytest.approx(m.fps, rel=1e-6)
    assert got["mesh_vertices"] == (Body.load(BODY_ASSET).n_vertices if has_mesh else 0)
    expected = _to_blender(joint_positions(root_motion(m, root))[frames])
    for k, name in enumerate(wrists + [names[0]]):
        err = np.abs(np.array(got["positions"][name]) - expected[:, [20, 21, 0][k]]).max()
        assert err < 1e-3, f"{name}: {err * 1e3:.3f} mm from our kinematics"
    if has_mesh:  # Blender deforms the mesh as glTF's skinning rule says (the .glb read back here)
        skin = Glb(write_glb(root_motion(m, root), tmp_path / "same.glb", rig=rig)).skinned()[frames][:, vertices]
        err = np.abs(np.array(got["vertices"]) - _to_blender(skin)).max()
        assert err < 1e-3, f"skinned vertices: {err * 1e3:.3f} mm from the file's skin"


def test_a_failing_blender_is_a_clear_error(tmp_path, monkeypatch):
    fake = tmp_path / "blender"
    fake.write_text("#!/bin/sh\necho 'Error: something broke inside Blender'\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setenv(BLENDER_ENV, str(fake))
    glb = write_glb(_motion(T=2), tmp_path / "m.glb", skeleton_only=True)
    with pytest.raises(BlenderError, match=r"exit code 3\):\nError: something broke inside Blender"):
        glb_to_fbx([(glb, tmp_path / "m.fbx")], fps=30)
    with pytest.raises(FileNotFoundError, match="gone.glb: no such .glb"):
        glb_to_fbx([(tmp_path / "gone.glb", tmp_path / "m.fbx")], fps=30)
