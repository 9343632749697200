"""Run inside Blender: import a BVH with Blender's own importer (default options, as a user would) and
write every joint's world position per frame, in Blender's axes and metres, to a JSON file.

    blender -b --factory-startup --python tests/blender_bvh_positions.py -- clip.bvh positions.json

Joints that the BVH writes as End Sites (feet, head, wrists) are the tails of the bones that end there.
"""
import builtins
import json
import sys

import bpy

# Debian's Blender 3.4 runs on Python 3.11, where open() no longer takes mode "rU", and its BVH importer
# still asks for it; read the file the way the importer meant to.
_open = builtins.open
builtins.open = lambda file, mode="r", *args, **kwargs: _open(file, mode.replace("U", ""), *args, **kwargs)

END_SITE_OF = {"RFoot": "RKnee", "LFoot": "LKnee", "Head": "Neck", "LWrist": "LElbow", "RWrist": "RElbow"}

bvh_path, out_path = sys.argv[sys.argv.index("--") + 1:]
bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.ops.import_anim.bvh(filepath=bvh_path, update_scene_fps=True, update_scene_duration=True)
scene = bpy.context.scene
armature = next(o for o in scene.objects if o.type == "ARMATURE")
names = [b.name for b in armature.pose.bones] + list(END_SITE_OF)
first, last = (int(round(f)) for f in armature.animation_data.action.frame_range)
frames = []
for frame in range(first, last + 1):
    scene.frame_set(frame)
    positions = {}
    for bone in armature.pose.bones:
        positions[bone.name] = list(armature.matrix_world @ bone.head)
    for joint, bone in END_SITE_OF.items():
        positions[joint] = list(armature.matrix_world @ armature.pose.bones[bone].tail)
    frames.append(positions)
with open(out_path, "w") as f:
    json.dump({"fps": scene.render.fps / scene.render.fps_base, "frames": frames}, f)
