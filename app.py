"""ActionGen web app: pick an action and a seed and watch a generated 2D or 3D skeleton move.

Runs locally with `python app.py` and as a Hugging Face Space (see the README front matter). The request
logic lives in `actiongen.app_logic` and the browser player in `actiongen/app_player.js`; this file lays out
the page, wires the events and sets the server's limits.

The page has one state (`PageState`: action, seed, frames, mode, action B, share of B, seed B, alpha, strip
size, model). Every control sends all of it, clamped in the browser to what the control shows, to one endpoint
(`/view`) that draws the main clip and the strip; the gallery and the downloads follow from the state it
returns. Events read raw values (`preprocess=False`) so bad values sent through the API are checked by the
same code as the page's and come back as a readable error.
"""
from __future__ import annotations

import functools
import importlib.util
import inspect
import os
import signal
from pathlib import Path
from typing import Any, Callable

import gradio as gr
from gradio.components.plot import PlotData
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from actiongen.app_logic import (FRAMES_MAX, FRAMES_MIN, PLAYER_JS_PATH, SEED_MAX, STRIP_MAX,
                                 STRIP_MIN, ActionGenService, PageState, public_message,
                                 use_one_thread_per_request)
from actiongen.plots import SIDE_NAMES
from actiongen.render import SIDE_COLORS
from actiongen.skeleton import ACTIONS

try:  # ZeroGPU Spaces: the model call gets a GPU for its duration; elsewhere it runs unchanged.
    import spaces
    GPU: Callable[[Callable], Callable] | None = spaces.GPU
except ImportError:
    GPU = None

MODEL_CONCURRENCY = 2  # requests computed at once over ALL endpoints, one CPU thread each
QUEUE_MAX_SIZE = 256  # waiting requests beyond this are refused instead of piling up
MAX_BODY_BYTES = 64 * 1024  # the largest request the page or the API sends is under 2 KB
# Gradio keeps every session's last inputs and outputs (up to 1 MB for a 300-frame gallery); the page keeps
# its state in the browser, so only a few recent sessions need to be remembered.
SESSION_CAPACITY = 64
PLAYER_JS = PLAYER_JS_PATH.read_text()
RANDOM_SEED_MAX = 99_999  # random seeds stay short enough to remember and type
# The 3D view's plotly.js: the copy the Python plotly package ships, served as a static file and loaded by
# the page only when a 3D figure is first shown. Gradio's gr.Plot bundles its own plotly.js but keeps it
# inside a lazily loaded module that the page's own scripts cannot reach.
PLOTLY_JS = Path(importlib.util.find_spec("plotly").origin).parent / "package_data" / "plotly.min.js"
gr.set_static_paths([PLOTLY_JS])

DESCRIPTION = """\
# ActionGen: stochastic human-action generation
2D or 3D skeletons of 10 Human3.6M actions, every frame decoded from a point on a smooth path through a
latent space of poses ([AAAI 2020](https://arxiv.org/abs/1912.10150), re-implemented in PyTorch; both models
draw the whole path with a diffusion model where the paper walks it with a GAN). Every seed is a
different performance of the same action: browse them in the seeds gallery, blend or switch two actions, or
interpolate between two seeds.
"""
LICENCE = """\
Code: MIT licence. The model weights were trained on Human3.6M, whose licence allows non-commercial research
only: the weights and the clips they generate are for non-commercial research only.
"""
MODEL_CHOICES = [("2D (camera view)", "2d"), ("3D (turn it, BVH download)", "3d")]
MODE_CHOICES = [("One action", "one"), ("Blend A + B", "blend"), ("Switch A \u2192 B", "transition"),
                ("Interpolate seed \u2192 seed B", "interpolate")]
EXAMPLE_LABELS = ["Walking, seed 7", "Phoning switching to Walking", "Eating blended with Smoking",
                  "Greeting: seed 5 \u2192 seed 9"]
EXAMPLES = [["Walking", 7, 50, "one", "Phoning", 0.5, 42, 0.5, 5],
            ["Phoning", 3, 120, "transition", "Walking", 0.5, 42, 0.5, 5],
            ["Eating", 11, 80, "blend", "Smoking", 0.4, 42, 0.5, 5],
            ["Greeting", 5, 50, "interpolate", "Phoning", 0.5, 9, 0.5, 7]]
CSS = """
.ag-view { width: 100%; }
.ag-svg { display: block; width: 100%; height: 100%; background: #fff; }
.ag-line { fill: none; stroke-width: 4px; stroke-linecap: round; stroke-linejoin: round;
           vector-effect: non-scaling-stroke; }
.ag-dots { fill: none; stroke-width: 8px; stroke-linecap: round; vector-effect: non-scaling-stroke; }
.ag-caption { text-anchor: middle; fill: #333; font-family: sans-serif; }
.ag-selected { fill: none; stroke: #ff7f0e; stroke-width: 3px; vector-effect: non-scaling-stroke; rx: 6; }
#skeleton .ag-view { height: min(460px, 55vh); }
#strip .ag-view { height: 220px; }
#gallery .ag-view { height: min(620px, 90vw); cursor: pointer; }
.ag-empty .ag-view { display: none; }
.ag-plot3d { width: 100%; height: 100%; }
body:not([data-model="3d"]) #download-bvh, body:not([data-model="3d"]) #missing-checkpoint-3d { display: none; }
.ag-transport { display: flex; flex-wrap: wrap; align-items: center; gap: 4px 10px; padding: 4px 8px; }
.ag-transport input { flex: 1; min-width: 80px; }
.ag-time { font-variant-numeric: tabular-nums; min-width: 12em; font-size: 0.9em; color: #444; }
.ag-play { min-width: 6.5em; padding: 4px 10px; border: 1px solid #bbb; border-radius: 6px; background: #f6f6f6; }
.ag-legend { display: flex; gap: 14px; justify-content: center; font-size: 0.85em; color: #444; }
.ag-legend span::before { content: ""; display: inline-block; width: 16px; height: 4px; margin: 0 5px 3px 0;
                          background: var(--c); }
#downloads.ag-stale { opacity: 0.45; pointer-events: none; }
#downloads.ag-stale::before { content: "Preparing the files of the new clip\u2026"; font-size: 0.9em; }
@media (max-width: 720px) {
  #skeleton .html-container { padding: 0 !important; }
  #intro p { display: none; }
  #intro h1 { font-size: 1.3em; margin: 0; }
  #examples, #licence { order: 4; }
  #layout, #views, #controls { display: contents; }
  #controls > * { order: 2; }
  #views > * { order: 3; }
  #views > #main-view { order: 1; }
  #skeleton .ag-view { height: 52vh; }
  .ag-time { flex-basis: 100%; text-align: center; }
}
"""


def html_view(elem_id: str, template: str = '<div class="ag-view"></div>') -> gr.HTML:
    """A skeleton view drawn by the page's player (app_player.js) from a figure JSON value."""
    # Relative, so it also resolves under a proxy's path prefix.
    plotly_url = f"gradio_api/file={PLOTLY_JS}"
    return gr.HTML(value="", html_template=template, elem_id=elem_id, padding=False,
                   js_on_load=f"window.actiongenPlotlyUrl = {plotly_url!r};\n{PLAYER_JS}\n"
                              f"window.actiongenPlayer.mount({elem_id!r}, element, props, watch, trigger);")


MAIN_VIEW_TEMPLATE = """\
<div class="ag-view"></div>
<div class="ag-transport"><button class="ag-play" aria-pressed="false">\u275a\u275a Pause</button>
<input class="ag-seek" type="range" min="0" max="49" value="0" aria-label="frame"><span class="ag-time"></span></div>
<div class="ag-legend">LEGEND</div>""".replace("LEGEND", "".join(
    f'<span style="--c:{SIDE_COLORS[side]}">{SIDE_NAMES[side]}</span>' for side in ("right", "left", "center")))


def plot_value(figure_json: str | None) -> PlotData | None:
    """A figure that is already JSON, handed to gr.Plot without building a plotly Figure object."""
    return None if figure_json is None else PlotData(type="plotly", plot=figure_json)


def user_errors(handler: Callable) -> Callable:
    """Bad input (ValueError, including a missing or broken checkpoint) becomes a gr.Error the user can read,
    without server paths."""
    @functools.wraps(handler)
    def wrapped(*values):
        try:
            return handler(*values)
        except ValueError as err:
            raise gr.Error(public_message(str(err)), print_exception=False) from None
    return wrapped


class ActionGenBlocks(gr.Blocks):
    """gr.Blocks that answers an API call with the wrong number of values with a readable one-line error
    (gradio's own says nothing to the caller)."""

    def validate_inputs(self, block_fn: Any, inputs: list[Any]) -> None:
        if block_fn.fn is not None and len(inputs) != len(block_fn.inputs):
            names = ", ".join(inspect.signature(block_fn.fn).parameters)
            raise gr.Error(f"{block_fn.name} takes {len(block_fn.inputs)} values ({names}); got {len(inputs)}",
                           print_exception=False)
        super().validate_inputs(block_fn, inputs)


def build_demo(service: ActionGenService) -> gr.Blocks:
    @user_errors
    def view(action, seed, frames, mode, action_b, share_b, seed_b, alpha, steps, model):
        """The main clip of a page state: (skeleton figure JSON, 2D or 3D, summary, latent path,
        probabilities, the checked state, interpolation strip figure JSON or "" outside "interpolate" mode)."""
        state = PageState.parse(action, seed, frames, mode, action_b, share_b, seed_b, alpha, steps, model)
        result = service.view(state)
        return (result.skeleton, result.summary, plot_value(result.latent_path),
                plot_value(result.probabilities), state.to_dict(), result.strip or "")

    @user_errors
    def gallery(state: Any):
        """Figure JSON of nine clips of a state's action (and mix), one per seed of the block of nine seeds
        that holds its seed; layout.meta.seeds lists them."""
        return service.gallery(PageState.from_dict(state))

    @user_errors
    def export(state: Any):
        """GIF (preview and download), MP4, NPZ, JSON and (3D only, else None) BVH files of a state's main
        clip."""
        files = service.export(PageState.from_dict(state))
        return files[".gif"], files[".gif"], files[".mp4"], files[".npz"], files[".json"], files.get(".bvh")

    missing = service.status("2d")
    missing_3d = service.status("3d")
    defaults = PageState()
    with ActionGenBlocks(title="ActionGen", delete_cache=(3600, 3600)) as demo:
        gr.Markdown(DESCRIPTION, elem_id="intro")
        if missing:
            gr.Markdown(f"**\u26a0\ufe0f {missing}**", elem_id="missing-checkpoint")
        if missing_3d:  # shown while 3D is picked
            gr.Markdown(f"**\u26a0\ufe0f {missing_3d}**", elem_id="missing-checkpoint-3d")
        with gr.Row(elem_id="layout"):
            with gr.Column(scale=2, min_width=300, elem_id="controls"):
                model = gr.Radio(MODEL_CHOICES, value=defaults.model, label="Model", elem_id="model",
                                 info="3D: world-frame joints in mm; drag the view to turn it."
                                      + (" Not available yet: no 3D model is loaded." if missing_3d else ""))
                action = gr.Dropdown(list(ACTIONS), value=defaults.action, label="Action (A)", elem_id="action")
                with gr.Row():
                    seed = gr.Number(value=defaults.seed, precision=0, minimum=0, maximum=SEED_MAX, scale=3,
                                     label="Seed (Enter or click away to apply)", elem_id="seed")
                    random_button = gr.Button("Random seed", variant="primary", scale=2,
                                              elem_id="random-seed")
                frames = gr.Slider(FRAMES_MIN, FRAMES_MAX, value=defaults.frames, step=1,
                                   label="Frames (16.7 per second)", elem_id="frames")
                mode = gr.Radio(MODE_CHOICES, value=defaults.mode, label="Main clip", elem_id="mode")
                with gr.Group():
                    action_b = gr.Dropdown(list(ACTIONS), value=defaults.action_b, elem_id="action-b",
                                           label="Second action (B), for blend and switch")
                    share_b = gr.Slider(0.0, 1.0, value=defaults.share_b, step=0.05, label="Share of B",
                                        elem_id="share-b",
                                        info="Blend: B's weight in every frame. Switch: the part of the clip "
                                             "after the switch to B (the switch takes a quarter of the clip).")
                with gr.Group():
                    seed_b = gr.Number(value=defaults.seed_b, precision=0, minimum=0, maximum=SEED_MAX,
                                       label="Seed B, for interpolation", elem_id="seed-b")
                    alpha = gr.Slider(0.0, 1.0, value=defaults.alpha, step=0.05, elem_id="alpha",
                                      label="\u03b1: 0 = seed, 1 = seed B",
                                      info="The main clip's point on the latent line from seed to seed B.")
                    steps = gr.Slider(STRIP_MIN, STRIP_MAX, value=defaults.steps, step=1, elem_id="steps",
                                      label="Clips in the interpolation strip")
            with gr.Column(scale=5, elem_id="views"):
                with gr.Group(elem_id="main-view"):
                    skeleton = html_view("skeleton", MAIN_VIEW_TEMPLATE)
                    summary = gr.Markdown(elem_id="summary", padding=True)
                strip = html_view("strip")
                with gr.Accordion("Seeds gallery: nine seeds of this action, click one to open it", open=True):
                    gallery_view = html_view("gallery")
                with gr.Row():
                    latent_path = gr.Plot(label="Latent path", elem_id="latent-path")
                    probabilities = gr.Plot(label="Action probabilities", elem_id="probabilities")
                with gr.Row(elem_id="downloads"):
                    gif_preview = gr.Image(label="GIF (the same clip)", type="filepath", height=220,
                                           elem_id="gif-preview", interactive=False)
                    with gr.Column():
                        gif_file = gr.DownloadButton("Download GIF", elem_id="download-gif")
                        mp4_file = gr.DownloadButton("Download MP4", elem_id="download-mp4")
                        npz_file = gr.DownloadButton("Download NPZ", elem_id="download-npz")
                        json_file = gr.DownloadButton("Download JSON", elem_id="download-json")
                        bvh_file = gr.DownloadButton("Download BVH (Blender, Maya)", elem_id="download-bvh")
                with gr.Accordion("Page state (what /view returns and /gallery and /export take)", open=False):
                    state = gr.JSON(label="State", elem_id="state")
        controls = [action, seed, frames, mode, action_b, share_b, seed_b, alpha, steps, model]
        # Examples leave the model as it is: each one shows in 2D or 3D, whichever is picked.
        examples = gr.Examples(EXAMPLES, inputs=controls[:-1], label="Examples (click one)", elem_id="examples",
                               example_labels=EXAMPLE_LABELS)
        gr.Markdown(LICENCE, elem_id="licence")

        model_event = dict(preprocess=False, trigger_mode="always_last", show_progress="hidden",
                           concurrency_id="model")

        def show_views(start: Callable, public: bool) -> None:
            """After `start` (triggers, or a dependency that set the seed), draw every view from the
            controls and then build the downloads; `public` names the endpoints (once)."""
            def names(api_name: str) -> dict:
                return {"api_name": api_name} if public else {"api_visibility": "private"}
            (start(view, controls, [skeleton, summary, latent_path, probabilities, state, strip],
                   js="(...values) => window.actiongenPlayer.commit(values)", **names("view"), **model_event)
             .then(gallery, state, gallery_view, **names("gallery"), **model_event)
             .then(export, state, [gif_preview, gif_file, mp4_file, npz_file, json_file, bvh_file],
                   **names("export"),
                   **model_event)
             .then(None, [json_file, state], None,
                   js="(file, state) => window.actiongenPlayer.downloadsReady(file, state)"))

        show_views(functools.partial(gr.on, [demo.load, model.input, action.input, frames.input, mode.input,
                                             action_b.input, share_b.input, alpha.input, steps.input]), public=True)
        # These first put the value that will be used into the seed box: clamped (an empty box keeps the
        # last seed), random, or the seed clicked in the gallery.
        for trigger, set_seed in (
                ([seed.submit, seed.blur], "(s) => window.actiongenPlayer.shown(s, 'seed')"),
                ([random_button.click], f"() => Math.floor(Math.random() * {RANDOM_SEED_MAX + 1})"),
                ([gallery_view.select], "() => window.actiongenPlayer.picked")):
            show_views(gr.on(trigger, None, seed, seed, js=set_seed).then, public=False)
        show_views(gr.on([seed_b.submit, seed_b.blur], None, seed_b, seed_b,
                         js="(s) => window.actiongenPlayer.shown(s, 'seed_b')").then, public=False)
        show_views(examples.load_input_event.then, public=False)
        # A slider's number box takes any text: it shows the clamped value that the views use.
        for slider, field in ((frames, "frames"), (share_b, "share_b"), (alpha, "alpha"), (steps, "steps")):
            slider.input(None, slider, slider, js=f"(v) => window.actiongenPlayer.shown(v, {field!r})")
    demo.queue(default_concurrency_limit=MODEL_CONCURRENCY, max_size=QUEUE_MAX_SIZE)
    return demo


class RequestLimits:
    """ASGI middleware: refuses request bodies over MAX_BODY_BYTES before reading them (413) and the upload
    route (403: the app takes no files), so no request can make the server hold a large value."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            length = headers.get(b"content-length", b"0")
            if scope["path"].rstrip("/").endswith("/upload"):
                return await self.refuse(send, 403, "this app takes no uploads")
            if not length.isdigit() or int(length) > MAX_BODY_BYTES:
                return await self.refuse(send, 413, f"request bodies are limited to {MAX_BODY_BYTES} bytes")
            if b"chunked" in headers.get(b"transfer-encoding", b""):
                return await self.refuse(send, 411, "send a Content-Length")
        await self.app(scope, receive, send)

    @staticmethod
    async def refuse(send: Send, status: int, message: str) -> None:
        body = ('{"error": "%s"}' % message).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def launch_options() -> dict:
    """demo.launch keywords for every way the app is served (app.py, the tests, the app bench)."""
    return dict(ssr_mode=False, css=CSS, state_session_capacity=SESSION_CAPACITY, max_file_size="1kb",
                app_kwargs={"middleware": [Middleware(RequestLimits)]}, run_history=False)


def checkpoint_from_env(variable: str = "ACTIONGEN_CHECKPOINT") -> Path | None:
    """The bundle path in `variable` if set (ACTIONGEN_CHECKPOINT: 2D, ACTIONGEN_CHECKPOINT_3D: 3D), else None
    (the shipped bundle)."""
    value = os.environ.get(variable)
    return Path(value) if value else None


SERVICE = ActionGenService(checkpoint_from_env(), device="auto", gpu=GPU,
                           checkpoint_3d=checkpoint_from_env("ACTIONGEN_CHECKPOINT_3D"))
# Gradio serves files from its cache folder and copies any other file there; export files written inside
# it are served in place, so the service's bounded export cache is all the disk the downloads take.
os.environ["GRADIO_TEMP_DIR"] = str(SERVICE.work_dir)
demo = build_demo(SERVICE)

if __name__ == "__main__":
    # SIGTERM (a Space or container stopping) shuts down like Ctrl-C, so the temp folder is removed.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    use_one_thread_per_request()
    demo.launch(server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"), **launch_options())
