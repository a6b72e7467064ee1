"""Runs inside Blender (``blender -b --python blender_fbx.py -- FPS IN.glb OUT.fbx [IN.glb OUT.fbx ...]``):
import each .glb and export it as .fbx with its animation baked at every frame. Started by
`emage_core.export.blender.glb_to_fbx`; never imported by EMAGE Studio itself (it needs ``bpy``).
"""
import sys

import bpy


def convert(glb: str, fbx: str, fps: float) -> None:
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    # the glTF importer keys at time * scene.render.fps; fps_base keeps the playback rate exact
    scene.render.fps = max(1, round(fps))
    scene.render.fps_base = scene.render.fps / fps
    # SMOOTH: the default shading guess fails in Debian's Blender 3.4 with NumPy >= 1.24 (np.bool)
    bpy.ops.import_scene.gltf(filepath=glb, import_shading="SMOOTH")
    armatures = [o for o in scene.objects if o.type == "ARMATURE"]
    if len(armatures) != 1:
        raise RuntimeError(f"{glb}: expected one armature, found {len(armatures)}")
    action = armatures[0].animation_data.action if armatures[0].animation_data else None
    if action is None:
        raise RuntimeError(f"{glb}: the armature has no animation")
    start, end = action.frame_range
    scene.frame_start, scene.frame_end = int(round(start)), int(round(end))
    # the skin goes into the file as weights either way; not deforming the mesh at every baked frame
    # halves the time (the FBX exporter takes the mesh without its armature modifier anyway)
    for ob in scene.objects:
        for mod in getattr(ob, "modifiers", []):
            if mod.type == "ARMATURE":
                mod.show_viewport = mod.show_render = False
    bpy.ops.export_scene.fbx(
        filepath=fbx, use_selection=False, object_types={"ARMATURE", "MESH"},
        axis_forward="-Z", axis_up="Y", apply_unit_scale=True, apply_scale_options="FBX_SCALE_NONE",
        add_leaf_bones=False, primary_bone_axis="Y", secondary_bone_axis="X", armature_nodetype="NULL",
        bake_anim=True, bake_anim_use_all_bones=True, bake_anim_use_nla_strips=False,
        bake_anim_use_all_actions=False, bake_anim_force_startend_keying=True, bake_anim_step=1.0,
        bake_anim_simplify_factor=0.0, path_mode="AUTO")


def main(argv: list[str]) -> None:
    fps, files = float(argv[0]), argv[1:]
    if not files or len(files) % 2:
        raise SystemExit("usage: blender -b --python blender_fbx.py -- FPS IN.glb OUT.fbx [IN.glb OUT.fbx ...]")
    for glb, fbx in zip(files[::2], files[1::2]):
        convert(glb, fbx, fps)
        print(f"emage: wrote {fbx}")


main(sys.argv[sys.argv.index("--") + 1:])
