"""Motion files for animation tools: BVH, animated glTF (.glb) and FBX, chosen by the file's suffix.

- ``.bvh``: the 55-joint SMPL-X skeleton and its motion (`emage_core.motion.bvh`);
- ``.glb``: the skinned Anny body, its skeleton and one animation (`gltf`); ``skeleton_only`` leaves
  the mesh out;
- ``.fbx``: the .glb converted by Blender (`blender`; needs a ``blender`` executable).

Options shared by all: ``rig`` names the bones (`rigs`: ``smplx`` or ``mixamo``), ``root`` keeps the root's
travel (``full``) or removes its horizontal part (``in-place``: x and z of ``trans`` set to 0, height kept).
Importing this package is light; the writers load on use.
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

from ..motion.clip import Motion
from .rigs import RIGS, bone_names

__all__ = ["FORMATS", "RIGS", "ROOT_MODES", "export_motion", "root_motion", "bone_names"]

FORMATS = (".bvh", ".glb", ".fbx")
ROOT_MODES = ("full", "in-place")


def root_motion(motion: Motion, root: str = "full") -> Motion:
    """``motion`` as it is (``full``), or ``in-place``: a copy whose translation keeps only its height
    (``trans[:, 0]`` and ``trans[:, 2]`` set to 0), so the root never travels horizontally."""
    if root not in ROOT_MODES:
        raise ValueError(f"root must be one of {', '.join(ROOT_MODES)}, got {root!r}")
    if root == "full":
        return motion
    trans = motion.trans.copy()
    trans[:, [0, 2]] = 0.0
    return dataclasses.replace(motion, trans=trans)


def export_motion(motion: Motion, path: str | os.PathLike, *, rig: str = "smplx", root: str = "full",
                  skeleton_only: bool = False) -> Path:
    """Write ``motion`` to ``path`` in the format its suffix names (`FORMATS`); returns the path.

    ``skeleton_only`` applies to .glb and .fbx (a BVH has no mesh anyway). An .fbx needs Blender
    (`blender.BlenderMissing` says how to get it).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"{path.name}: cannot tell the format; use a file name ending in {', '.join(FORMATS)}")
    bone_names(rig)  # checks the rig before any work
    motion = root_motion(motion, root)
    if suffix == ".bvh":
        from ..motion.bvh import write_bvh

        return write_bvh(motion, path, names=bone_names(rig))
    from .gltf import write_glb

    if suffix == ".glb":
        return write_glb(motion, path, rig=rig, skeleton_only=skeleton_only)
    from .blender import glb_to_fbx, require_blender

    require_blender()
    with tempfile.TemporaryDirectory(prefix="emage-fbx-") as tmp:
        glb = write_glb(motion, Path(tmp) / f"{path.stem}.glb", rig=rig, skeleton_only=skeleton_only)
        glb_to_fbx([(glb, path)], fps=motion.fps)
    return path
