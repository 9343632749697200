"""Run inside Blender: import a BVH with Blender's own importer (default options, as a user would) and
write every joint's world position per frame, in Blender's axes and metres, to a JSON file.

    blender -b --factory-startup --python tests/blender_bvh_positions.py -- clip.bvh positions.json END_SITES

Joints that the BVH writes as End Sites (feet, head, wrists) are the tails of the bones that end there:
END_SITES is a JSON object {bone name: joint name} (tests/test_bvh.py's END_SITE_JOINTS).
"""
import builtins
import json
import sys

import bpy

# Debian's Blender 3.4 runs on Python 3.11, where open() no longer takes mode "rU", and its BVH importer
# still asks for it; read the file the way the importer meant to.
_open = builtins.open
builtins.open = lambda file, mode="r", *args, **kwargs: _open(file, mode.replace("U", ""), *args, **kwargs)

bvh_path, out_path, end_sites = sys.argv[sys.argv.index("--") + 1:]
bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.ops.import_anim.bvh(filepath=bvh_path, update_scene_fps=True, update_scene_duration=True)
scene = bpy.context.scene
armature = next(o for o in scene.objects if o.type == "ARMATURE")
first, last = (int(round(f)) for f in armature.animation_data.action.frame_range)
frames = []
for frame in range(first, last + 1):
    scene.frame_set(frame)
    positions = {}
    for bone in armature.pose.bones:
        positions[bone.name] = list(armature.matrix_world @ bone.head)
    for bone, joint in json.loads(end_sites).items():
        positions[joint] = list(armature.matrix_world @ armature.pose.bones[bone].tail)
    frames.append(positions)
with open(out_path, "w") as f:
    json.dump({"fps": scene.render.fps / scene.render.fps_base, "frames": frames}, f)
