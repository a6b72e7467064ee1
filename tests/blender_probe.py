"""Runs inside Blender for tests/test_export.py:
``blender -b --python blender_probe.py -- FILE OUT.json FPS BONE[,BONE...] FRAME[,FRAME...] [VERTEX[,VERTEX...]]``.

Imports FILE (.glb, .bvh or .fbx) with Blender's own importers and writes what Blender made of it to
OUT.json: the armature's bones and their parents, the action's frame range and the scene's fps, the
objects by type, and the world position (metres, Blender's Z-up frame) of each BONE's head at each
FRAME, FRAME counted from the action's first frame; with VERTEX indices, also those vertices of the mesh
as the armature deforms it at each FRAME.
"""
import json
import sys

import bpy

path, out, fps, bones, frames, *vertices = sys.argv[sys.argv.index("--") + 1:]
bpy.ops.wm.read_factory_settings(use_empty=True)
scene = bpy.context.scene
fps = float(fps)
scene.render.fps = round(fps)
scene.render.fps_base = round(fps) / fps
if path.endswith(".glb"):
    bpy.ops.import_scene.gltf(filepath=path, import_shading="SMOOTH")  # see emage_core/export/blender_fbx.py
elif path.endswith(".bvh"):
    import builtins

    _open = builtins.open  # Debian's Blender 3.4 runs on Python 3.11, where its BVH reader's mode 'rU' is gone
    builtins.open = lambda file, mode="r", *a, **k: _open(file, mode.replace("U", ""), *a, **k)
    bpy.ops.import_anim.bvh(filepath=path, global_scale=0.01, frame_start=1, rotate_mode="NATIVE",
                            axis_forward="-Z", axis_up="Y", update_scene_fps=True, update_scene_duration=True)
elif path.endswith(".fbx"):
    bpy.ops.import_scene.fbx(filepath=path)
else:
    raise SystemExit(f"unknown file type: {path}")

armatures = [o for o in scene.objects if o.type == "ARMATURE"]
assert len(armatures) == 1, [o.name for o in scene.objects]
arm = armatures[0]
action = arm.animation_data.action
start, end = action.frame_range
result = {
    "bones": [b.name for b in arm.data.bones],
    "parents": {b.name: b.parent.name if b.parent else None for b in arm.data.bones},
    "frame_range": [start, end],
    "fps": scene.render.fps / scene.render.fps_base,
    "objects": {o.name: o.type for o in scene.objects},
    "mesh_vertices": sum(len(o.data.vertices) for o in scene.objects if o.type == "MESH"),
    "positions": {},
}
frames = [int(f) for f in frames.split(",")]
for name in bones.split(","):
    result["positions"][name] = []
    for f in frames:
        scene.frame_set(int(round(start)) + f)
        result["positions"][name].append(list(arm.matrix_world @ arm.pose.bones[name].head))
if vertices:
    mesh = next(o for o in scene.objects if o.type == "MESH")
    indices = [int(i) for i in vertices[0].split(",")]
    result["vertices"] = []
    for f in frames:
        scene.frame_set(int(round(start)) + f)
        evaluated = mesh.evaluated_get(bpy.context.evaluated_depsgraph_get())
        data = evaluated.to_mesh()
        result["vertices"].append([list(mesh.matrix_world @ data.vertices[i].co) for i in indices])
        evaluated.to_mesh_clear()
with open(out, "w") as fh:
    json.dump(result, fh)
