"""2D views of 3D world-frame poses (hip-centred millimetres, z up).

`camera_view` draws a 3D clip as the 2D pipeline sees the data (camera 55011271 with its lens distortion,
hip-centred, depth-normalised), so 3D samples can be scored with the 2D metrics and recogniser. A
generated clip has no position in the room, so it is placed at the mean training hip position of that
camera (`NormStats.mean_hip_camera`), where an average real frame stands: its depth scale is then about 1,
and the perspective and distortion are those of a typical real frame rather than of one particular spot.

`oblique_view` is the fixed orthographic view the renderers (GIF, MP4, training sample sheets) draw 3D
clips with, scaled into the 2D drawing units.
"""
from __future__ import annotations

import numpy as np

from .data import Camera, NormStats, project_points
from .skeleton import HIP

# Oblique view: turned 30 degrees about the vertical and looking 15 degrees down, so depth (forward steps,
# arm swings towards the viewer) stays visible; 0.2 drawing units per mm puts a standing body (hip about
# 0.9 m above the feet, 0.75 m below the head) inside the renderers' +-215 window like a 2D pose.
OBLIQUE_AZIMUTH_DEG = 30.0
OBLIQUE_ELEVATION_DEG = 15.0
OBLIQUE_UNITS_PER_MM = 0.2


def camera_view(joints: np.ndarray, camera: Camera, stats: NormStats) -> np.ndarray:
    """(..., 16, 3) hip-centred world joints in mm -> (..., 16, 2) in the 2D pipeline's units (hip-centred,
    depth-normalised pixels, y down), with the hip placed at `stats.mean_hip_camera` in front of `camera`."""
    if stats.mean_hip_camera is None:
        raise ValueError("camera_view needs the statistics of 3D data (NormStats.mean_hip_camera); these are "
                         f"{stats.dims}D statistics")
    joints = np.asarray(joints, dtype=np.float64)
    if joints.ndim < 2 or joints.shape[-1] != 3:
        raise ValueError(f"camera_view needs joints of shape (..., 16, 3); got {joints.shape}")
    hip_world = camera.R.T @ stats.mean_hip_camera + camera.T  # camera coordinates are R @ (P - T)
    pixels, depth = project_points(joints + hip_world, camera)
    scale = depth[..., HIP] / stats.mean_hip_depth
    return ((pixels - pixels[..., HIP:HIP + 1, :]) * scale[..., None, None]).astype(np.float32)


def oblique_view(joints: np.ndarray, azimuth_deg: float = OBLIQUE_AZIMUTH_DEG,
                 elevation_deg: float = OBLIQUE_ELEVATION_DEG,
                 units_per_mm: float = OBLIQUE_UNITS_PER_MM) -> np.ndarray:
    """(..., 16, 3) world joints in mm (z up) -> (..., 16, 2) orthographic drawing coordinates, y down.

    The viewer stands at -y turned by `azimuth_deg` about z and looks down by `elevation_deg`."""
    joints = np.asarray(joints, dtype=np.float64)
    if joints.shape[-1] != 3:
        raise ValueError(f"oblique_view needs 3D joints (..., 3); got shape {joints.shape}")
    azimuth, elevation = np.radians(azimuth_deg), np.radians(elevation_deg)
    right = np.array([np.cos(azimuth), np.sin(azimuth), 0.0])
    forward = np.array([-np.sin(azimuth), np.cos(azimuth), 0.0])
    up = np.sin(elevation) * forward + np.cos(elevation) * np.array([0.0, 0.0, 1.0])
    screen = np.stack([joints @ right, -(joints @ up)], axis=-1)
    return (screen * units_per_mm).astype(np.float32)


def drawable(joints: np.ndarray) -> np.ndarray:
    """Joints as the 2D renderers draw them: 2D joints unchanged, 3D joints in the oblique view."""
    return oblique_view(joints) if np.shape(joints)[-1] == 3 else np.asarray(joints)
