"""Plotly figures as plain dicts: the animated 2D and 3D skeletons, the latent path z_t and the class
probabilities.

Figures are built as dicts and serialised with `json` instead of through `plotly.graph_objects`: validating
a `go.Figure` with a few hundred animation frames costs more than the whole model call. Coordinates are
rounded to 0.1 px (3D: 1 mm), which is invisible on screen and keeps the JSON small.
"""
from __future__ import annotations

import json

import numpy as np

from .render import SIDE_COLORS
from .skeleton import BONES, JOINT_NAMES
from .views import OBLIQUE_AZIMUTH_DEG, OBLIQUE_ELEVATION_DEG

FEET = [JOINT_NAMES.index("LFoot"), JOINT_NAMES.index("RFoot")]
FLOOR_STEP_MM = 250.0  # floor grid spacing: a quarter metre, so step lengths can be read off the floor
FLOOR_COLOR = "#c8c8c8"

SIDE_NAMES: dict[str, str] = {"left": "left side", "right": "right side", "center": "spine / head"}


def side_chains(bones: tuple[tuple[int, int, str], ...] = BONES) -> dict[str, list[int]]:
    """Joint indices that draw each side as polylines, -1 separating the polylines.

    Consecutive bones that continue each other (child of one is parent of the next) become one polyline,
    so the left side is two strokes (leg, arm) instead of six two-point segments.
    """
    chains: dict[str, list[list[int]]] = {}
    for parent, child, side in bones:
        lines = chains.setdefault(side, [])
        if lines and lines[-1][-1] == parent:
            lines[-1].append(child)
        else:
            lines.append([parent, child])
    return {side: [j for k, line in enumerate(lines) for j in ([-1] if k else []) + line]
            for side, lines in chains.items()}


CHAINS = side_chains()


def polyline_coords(clips: np.ndarray, chain: list[int], decimals: int = 1) -> tuple[np.ndarray, ...]:
    """Coordinates of one side for every time step of clips (T, K, 16, D), the K skeletons one after another.

    Returns D object arrays (T, n) of coordinates rounded to `decimals` (whole numbers as ints) with None
    between strokes and between skeletons, so that row t is the trace's data at frame t.
    """
    index = np.asarray(chain + [-1])  # the trailing -1 separates a skeleton from the next one
    points = np.round(clips[:, :, np.maximum(index, 0)].astype(np.float64), decimals)  # (T, K, len(chain)+1, D)
    if decimals <= 0:
        points = points.astype(np.int64)  # "812" rather than "812.0" in the JSON
    points = points.reshape(points.shape[0], -1, points.shape[-1])[:, :-1]  # no separator after the last one
    gap = np.tile(index < 0, clips.shape[1])[:-1]
    coords = tuple(points[..., k].astype(object) for k in range(points.shape[-1]))
    for values in coords:
        values[:, gap] = None
    return coords


def view_bounds(joints: np.ndarray, pad: float = 0.06) -> tuple[float, float, float, float]:
    """(x_min, x_max, y_min, y_max): the smallest window that holds every pose of the clip(s), with a margin
    of `pad` of the larger side. Fixed for the whole clip, so the axes never move while it plays, and tight,
    so the skeleton fills the plot instead of the exports' fixed window."""
    flat = joints.reshape(-1, 2)
    lo, hi = flat.min(axis=0), flat.max(axis=0)
    margin = pad * float(max(hi - lo))
    return float(lo[0] - margin), float(hi[0] + margin), float(lo[1] - margin), float(hi[1] + margin)


def skeleton_figure(joints: np.ndarray, fps: float, title: str = "", captions: list[str] | None = None,
                    revision: str = "", height: int = 460, columns: int | None = None,
                    selected: int | None = None) -> dict:
    """Animated figure of one clip (T, 16, 2) or K clips (K, T, 16, 2) in a grid of `columns` (default: one
    row), every clip in a cell of the same size so all are drawn at the same scale.

    Joints are in dataset units (depth-normalised pixels), y down; the y axis is reversed so people stand
    upright, and both axes are fixed with equal scale. The figure has no play controls: the page plays every
    figure on one shared clock (`layout.meta` holds fps, the grid and the `selected` cell), and API users can
    call Plotly.animate on the frames. `revision` goes to layout.datarevision so the page can tell which
    figure it holds.
    """
    clips = joints[None] if joints.ndim == 3 else joints
    count, frames = clips.shape[:2]
    columns = min(columns or count, count)
    rows = -(-count // columns)
    x0, x1, y0, y1 = view_bounds(clips)
    if captions:
        y0 -= 0.14 * (y1 - y0)  # room above each clip for its caption
        widen = max(0.0, 0.6 * (y1 - y0) - (x1 - x0)) / 2  # and beside it, so captions do not run together
        x0, x1 = x0 - widen, x1 + widen
    width, tall = x1 - x0, y1 - y0
    cells = np.arange(count)
    offsets = np.stack([cells % columns * width, cells // columns * tall], axis=-1)
    by_time = (clips + offsets[:, None, None, :]).transpose(1, 0, 2, 3)  # (T, K, 16, 2)
    sides = {side: polyline_coords(by_time, chain) for side, chain in CHAINS.items()}
    frame_traces = [[{"x": xs[t].tolist(), "y": ys[t].tolist()} for xs, ys in sides.values()]
                    for t in range(frames)]
    data = [{"type": "scatter", "mode": "lines+markers", "name": SIDE_NAMES[side], "hoverinfo": "skip",
             "line": {"color": SIDE_COLORS[side], "width": 4}, "marker": {"color": SIDE_COLORS[side], "size": 6},
             **coords} for side, coords in zip(sides, frame_traces[0])]
    annotations = [{"x": round(x0 + (k % columns + 0.5) * width, 1), "y": round(y0 + k // columns * tall, 1),
                    "yanchor": "top", "showarrow": False, "text": text, "font": {"size": 12}}
                   for k, text in enumerate(captions or [])]
    layout = {
        "title": {"text": title, "x": 0.5, "font": {"size": 15}},
        "height": height,
        "margin": {"l": 10, "r": 10, "t": 40 if title else 10, "b": 10},
        "xaxis": {"range": [round(x0, 1), round(x0 + columns * width, 1)], "visible": False, "fixedrange": True},
        "yaxis": {"range": [round(y0 + rows * tall, 1), round(y0, 1)], "visible": False, "fixedrange": True,
                  "scaleanchor": "x", "scaleratio": 1},
        "showlegend": True,
        "legend": {"orientation": "h", "x": 0.5, "xanchor": "center", "y": 1.0, "yanchor": "bottom"},
        "plot_bgcolor": "#ffffff", "paper_bgcolor": "#ffffff",
        "annotations": annotations,
        "datarevision": revision,
        "meta": {"fps": fps, "frames": frames, "columns": columns, "rows": rows, "selected": selected},
    }
    frame_list = [{"name": str(t), "data": traces, "traces": list(range(len(traces)))}
                  for t, traces in enumerate(frame_traces)]
    return {"data": data, "layout": layout, "frames": frame_list}


def skeleton_figure_3d(joints: np.ndarray, fps: float, title: str = "", revision: str = "",
                       height: int = 460) -> dict:
    """Animated Plotly 3D figure of one clip (T, 16, 3) of world joints in mm, z up.

    Traces 0-2 are the right side, the left side and the spine (Scatter3d polylines, one per side colour);
    `frames[t]` restyles only those. Trace 3 is a floor grid at the lowest foot height of the whole clip,
    reaching a little beyond where the feet go. The axis ranges hold every pose of the clip (and the floor),
    and the aspect ratio is proportional to the ranges, so one millimetre is as long on every axis and bones
    keep their length however the camera turns. The camera starts where the exports' oblique view looks
    from; `uirevision` is the same for every 3D clip, so a camera the user turned stays turned when the clip
    plays on or changes. As in `skeleton_figure`, the page plays the frames on its own clock (`layout.meta`).
    """
    clip = np.asarray(joints, dtype=np.float64)
    frames = clip.shape[0]
    floor = float(clip[:, FEET, 2].min())
    lo, hi = clip.reshape(-1, 3).min(axis=0), clip.reshape(-1, 3).max(axis=0)
    lo[2] = min(lo[2], floor)
    # The floor reaches half a grid step beyond the feet's footprint, on grid lines at multiples of the step.
    grid_lo = np.floor((lo[:2] - FLOOR_STEP_MM / 2) / FLOOR_STEP_MM) * FLOOR_STEP_MM
    grid_hi = np.ceil((hi[:2] + FLOOR_STEP_MM / 2) / FLOOR_STEP_MM) * FLOOR_STEP_MM
    lo[:2], hi[:2] = np.minimum(lo[:2], grid_lo), np.maximum(hi[:2], grid_hi)
    margin = 0.04 * float((hi - lo).max())
    lo, hi = np.round(lo - margin), np.round(hi + margin)
    lo, hi = lo.astype(int), hi.astype(int)
    span = hi - lo
    sides = {side: polyline_coords(clip[:, None], chain, decimals=0) for side, chain in CHAINS.items()}
    frame_traces = [[{"x": xs[t].tolist(), "y": ys[t].tolist(), "z": zs[t].tolist()} for xs, ys, zs in sides.values()]
                    for t in range(frames)]
    data = [{"type": "scatter3d", "mode": "lines+markers", "name": SIDE_NAMES[side], "hoverinfo": "skip",
             "line": {"color": SIDE_COLORS[side], "width": 7}, "marker": {"color": SIDE_COLORS[side], "size": 3},
             **coords} for side, coords in zip(sides, frame_traces[0])]
    data.append({"type": "scatter3d", "mode": "lines", "name": "floor", "hoverinfo": "skip", "showlegend": False,
                 "line": {"color": FLOOR_COLOR, "width": 2}, **floor_grid(grid_lo, grid_hi, int(round(floor)))})
    azimuth, elevation = np.radians(OBLIQUE_AZIMUTH_DEG), np.radians(OBLIQUE_ELEVATION_DEG)
    distance = 1.5  # in units of the scene box's largest side: close, yet the box stays in view as it turns
    eye = distance * np.array([np.sin(azimuth) * np.cos(elevation), -np.cos(azimuth) * np.cos(elevation),
                               np.sin(elevation)])
    axis = {"showbackground": False, "showgrid": False, "zeroline": False, "showticklabels": False,
            "title": {"text": ""}, "showspikes": False}
    layout = {
        "title": {"text": title, "x": 0.5, "font": {"size": 15}},
        "height": height,
        "margin": {"l": 0, "r": 0, "t": 40 if title else 0, "b": 0},
        "showlegend": False,
        "scene": {
            **{f"{name}axis": {**axis, "range": [int(lo[k]), int(hi[k])]} for k, name in enumerate("xyz")},
            "aspectmode": "manual",
            "aspectratio": dict(zip("xyz", np.round(span / span.max(), 4).tolist())),
            "camera": {"eye": dict(zip("xyz", np.round(eye, 3).tolist())), "up": {"x": 0, "y": 0, "z": 1},
                       "center": {"x": 0, "y": 0, "z": 0}},
            "dragmode": "turntable",
        },
        "uirevision": "skeleton-3d",
        "paper_bgcolor": "#ffffff",
        "datarevision": revision,
        "meta": {"fps": fps, "frames": frames, "columns": 1, "rows": 1, "selected": None, "dims": 3},
    }
    frame_list = [{"name": str(t), "data": traces, "traces": list(range(len(traces)))}
                  for t, traces in enumerate(frame_traces)]
    return {"data": data, "layout": layout, "frames": frame_list}


def floor_grid(lo: np.ndarray, hi: np.ndarray, height: float) -> dict:
    """x, y, z of a grid of lines FLOOR_STEP_MM apart over the rectangle lo..hi (x, y) at z = height, as one
    trace with None between the lines."""
    xs, ys = (np.arange(lo[k], hi[k] + FLOOR_STEP_MM / 2, FLOOR_STEP_MM).round().astype(int).tolist() for k in range(2))
    x, y = [], []
    for value in xs:
        x += [value, value, None]
        y += [ys[0], ys[-1], None]
    for value in ys:
        x += [xs[0], xs[-1], None]
        y += [value, value, None]
    return {"x": x[:-1], "y": y[:-1], "z": [None if v is None else height for v in x[:-1]]}


def pca_2d(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project (T, d) onto its two main principal axes: (T, 2) and the fraction of variance each explains.

    Signs are fixed (largest loading positive) so the same path always looks the same.
    """
    centered = points - points.mean(axis=0)
    _, singular, axes = np.linalg.svd(centered, full_matrices=False)
    axes = axes[:2]
    axes = axes * np.sign(axes[np.arange(len(axes)), np.abs(axes).argmax(axis=1)])[:, None]
    total = float((singular ** 2).sum())
    explained = (singular[:2] ** 2) / total if total > 0 else np.zeros(len(axes))
    projected = centered @ axes.T
    if projected.shape[1] < 2:  # a single latent dimension: draw it on a flat line
        projected = np.pad(projected, ((0, 0), (0, 2 - projected.shape[1])))
        explained = np.pad(explained, (0, 2 - len(explained)))
    return projected, explained


def latent_path_figure(latents: np.ndarray, fps: float, height: int = 320) -> dict:
    """The latent path z_t (T, d) projected by PCA, coloured by time, start and end marked."""
    latents = np.asarray(latents, dtype=np.float64)
    path, explained = pca_2d(latents)
    path = np.round(path, 3)
    x, y = path[:, 0].tolist(), path[:, 1].tolist()
    seconds = np.round(np.arange(len(path)) / fps, 2).tolist()
    data = [
        {"type": "scatter", "mode": "lines", "x": x, "y": y, "line": {"color": "#bbbbbb", "width": 1.5},
         "hoverinfo": "skip", "showlegend": False},
        {"type": "scatter", "mode": "markers", "x": x, "y": y, "name": "z_t", "showlegend": False,
         "customdata": seconds, "hovertemplate": "t = %{customdata} s<extra></extra>",
         "marker": {"color": seconds, "colorscale": "Viridis", "size": 7,
                    "colorbar": {"title": {"text": "time (s)"}, "thickness": 12}}},
        {"type": "scatter", "mode": "markers+text", "x": [x[0]], "y": [y[0]], "name": "start", "text": ["start"],
         "textposition": "top center", "cliponaxis": False,
         "marker": {"symbol": "circle-open", "size": 16, "color": "#2ca02c", "line": {"width": 3}}},
        {"type": "scatter", "mode": "markers+text", "x": [x[-1]], "y": [y[-1]], "name": "end", "text": ["end"],
         "textposition": "top center", "cliponaxis": False,
         "marker": {"symbol": "x", "size": 14, "color": "#d62728"}},
    ]
    layout = {
        "title": {"text": f"Latent path z<sub>t</sub> (PCA of {latents.shape[-1]}-d latents)", "x": 0.5,
                  "font": {"size": 14}},
        "height": height, "margin": {"l": 50, "r": 10, "t": 40, "b": 45}, "showlegend": False,
        "xaxis": {"title": {"text": f"PC1 ({100 * explained[0]:.0f}% var)"}, "zeroline": False},
        "yaxis": {"title": {"text": f"PC2 ({100 * explained[1]:.0f}% var)"}, "zeroline": False},
        "plot_bgcolor": "#ffffff", "paper_bgcolor": "#ffffff",
    }
    return {"data": data, "layout": layout}


def probability_figure(probabilities: np.ndarray, actions: tuple[str, ...], requested: np.ndarray,
                       height: int = 320) -> dict:
    """Horizontal bars of the classifier's probabilities; bars of the requested action(s) highlighted.

    `requested` is the mean class weight (10,) of the clip, so blends highlight both actions.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    colors = ["#ff7f0e" if w > 0 else "#9ecae1" for w in np.asarray(requested)]
    data = [{"type": "bar", "orientation": "h", "x": np.round(probabilities, 4).tolist(), "y": list(actions),
             "marker": {"color": colors}, "text": [f"{100 * p:.0f}%" for p in probabilities],
             "textposition": "outside", "cliponaxis": False,
             "hovertemplate": "%{y}: %{x:.1%}<extra></extra>"}]
    layout = {
        "title": {"text": "Classifier: which action is this?", "x": 0.5, "font": {"size": 14}},
        "height": height, "margin": {"l": 95, "r": 30, "t": 40, "b": 40},
        "xaxis": {"range": [0, 1.15], "tickformat": ".0%", "title": {"text": "probability"}},
        "yaxis": {"autorange": "reversed"},
        "plot_bgcolor": "#ffffff", "paper_bgcolor": "#ffffff",
    }
    return {"data": data, "layout": layout}


def figure_json(figure: dict) -> str:
    """Compact JSON of a figure dict (what the browser receives)."""
    return json.dumps(figure, separators=(",", ":"))
