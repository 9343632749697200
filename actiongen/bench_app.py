"""Web-app benchmark: `python -m actiongen.bench --app` (or `python -m actiongen.bench_app`).

Prints numbers, asserts nothing (the tests assert behaviour):
1. in process: one page request (sample + figures) for 50 and 300 frames, and its model share, for the 2D
   model and (when its bundle is there) the 3D one;
2. in Chromium (/usr/bin/chromium via Playwright), against `python app.py`: control change (a new seed
   committed) -> the new clip drawn, median and p90, and the framework's share (browser time minus the
   in-process request);
3. load: `--clients` gradio_client clients x 10 mixed requests (/view in every mode, /gallery, /export) at
   once: errors, p50/p95, whether every result equals the serial one, server RSS before and after;
4. memory: `--requests` distinct /view calls through the raw HTTP API (each call a new session, the worst
   case), the server's RSS every tenth of the way;
5. exports: `--exports` distinct 300-frame /export calls, the size of the app's temp folder.
Needs gradio (and Playwright for 2). Timings on a shared machine are noisy; the load average is printed.
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .app_logic import MODES, ActionGenService, PageState, use_one_thread_per_request
from .checkpoint import DEFAULT_BUNDLE, DEFAULT_BUNDLES
from .skeleton import ACTIONS

APP = Path(__file__).resolve().parents[1] / "app.py"
CHROMIUM = "/usr/bin/chromium"


def ms(seconds: list[float]) -> str:
    p50, p95 = np.percentile(seconds, [50, 95]) * 1000
    return f"p50 {p50:7.1f} ms  p95 {p95:7.1f} ms  (n={len(seconds)})"


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024


def folder_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20


def in_process(service: ActionGenService, repeats: int, model: str = "2d") -> float:
    """Prints request and model latency of `model`; returns the median 50-frame request in seconds."""
    print(f"\n1. in process, {model.upper()} model (sample + figures), new seed every time")
    service.view(PageState(seed=0, model=model))
    median_50 = 0.0
    for frames in (50, 300):
        total, sampling = [], []
        for seed in range(1, repeats + 1):
            start = time.perf_counter()
            service.sample_clip(PageState(seed=seed, frames=frames, model=model).request())
            sampling.append(time.perf_counter() - start)
            start = time.perf_counter()
            result = service.view(PageState(seed=10_000 + seed, frames=frames, model=model))
            total.append(time.perf_counter() - start)
        size = len(result.skeleton) + len(result.latent_path) + len(result.probabilities)
        print(f"  {frames:3d} frames: request {ms(total)}; model {ms(sampling)}; figure JSON {size / 1024:.0f} KiB "
              f"(skeleton {len(result.skeleton) / 1024:.0f} KiB)")
        median_50 = median_50 or float(np.median(total))
    return median_50


class AppServer:
    """`python app.py` on a free port with its own temp directory (so its folder can be measured)."""

    def __init__(self, checkpoint: Path | None) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self.temp = Path(tempfile.mkdtemp(prefix="actiongen-bench-"))
        env = {**os.environ, "GRADIO_SERVER_PORT": str(self.port), "TMPDIR": str(self.temp),
               "GRADIO_ANALYTICS_ENABLED": "False"}
        if checkpoint:
            env["ACTIONGEN_CHECKPOINT"] = str(checkpoint)
        env.pop("GRADIO_TEMP_DIR", None)
        self.process = subprocess.Popen([sys.executable, str(APP)], cwd=APP.parent, env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import httpx
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(self.url + "gradio_api/info", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline or self.process.poll() is not None:
                raise RuntimeError("app.py did not start")
            time.sleep(0.5)

    def rss(self) -> float:
        return rss_mb(self.process.pid)

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def browser_latency(server: AppServer, changes: int, request_s: float) -> None:
    from playwright.sync_api import sync_playwright
    print(f"\n2. Chromium: a new seed committed (Enter) -> its clip drawn, 50 frames, {changes} changes")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(server.url)
        page.wait_for_function("() => window.actiongenPlayer && window.actiongenPlayer.views.skeleton"
                               " && window.actiongenPlayer.views.skeleton.count === 50", timeout=120_000)
        page.wait_for_selector("#downloads:not(.ag-stale)", timeout=120_000)
        page.evaluate("() => { window.actiongenPlayer.latencies = []; }")
        for k in range(changes):
            page.fill("#seed input", str(50_000 + k))
            page.press("#seed input", "Enter")
            page.wait_for_function("(n) => window.actiongenPlayer.latencies.length >= n", arg=k + 1, timeout=60_000)
            page.wait_for_selector("#downloads:not(.ag-stale)", timeout=60_000)  # idle before the next change
        latencies = page.evaluate("() => window.actiongenPlayer.latencies")
        browser.close()
    median = statistics.median(latencies)
    print(f"  change -> drawn: median {median:.0f} ms, p90 {np.percentile(latencies, 90):.0f} ms; "
          f"in-process request {1000 * request_s:.1f} ms, so the framework (queue, transport, browser) takes "
          f"{median - 1000 * request_s:.0f} ms ({100 * (1 - 1000 * request_s / median):.0f} %)")


def mixed_requests(client_index: int) -> list[tuple[str, PageState]]:
    """Ten requests of one load client: /view in every mode, /gallery and /export, all distinct."""
    modes = ("one", *MODES, "interpolate")
    requests = []
    for k in range(10):
        state = PageState(action=ACTIONS[(client_index + k) % len(ACTIONS)], seed=client_index * 10 + k,
                          mode=modes[k % len(modes)], frames=50)
        requests.append(("/gallery" if k == 4 else "/export" if k == 9 else "/view", state))
    return requests


def load(server: AppServer, service: ActionGenService, clients: int) -> None:
    from gradio_client import Client
    print(f"\n3. load: {clients} clients x 10 mixed requests at once")
    rss_before = server.rss()
    connected = list(ThreadPoolExecutor(16).map(lambda _: Client(server.url, verbose=False), range(clients)))
    times, errors, mismatches = [], [], []
    lock = threading.Lock()

    def run(index: int) -> None:
        for endpoint, state in mixed_requests(index):
            start = time.perf_counter()
            try:
                if endpoint == "/view":
                    answer = connected[index].predict(*state.to_dict().values(), api_name="/view")[0]
                    same = answer == service.view(state).skeleton
                elif endpoint == "/gallery":
                    same = connected[index].predict(state.to_dict(), api_name="/gallery") == service.gallery(state)
                else:
                    npz = connected[index].predict(state.to_dict(), api_name="/export")[3]
                    with np.load(npz) as arrays:
                        same = np.array_equal(arrays["joints"], service.view(state).sample.joints)
            except Exception as err:  # counted and reported: the number of errors is the measurement
                with lock:
                    errors.append(f"{endpoint}: {str(err)[:100]}")
                continue
            with lock:
                times.append(time.perf_counter() - start)
                if not same:
                    mismatches.append(endpoint)

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(run, range(clients)))
    wall = time.perf_counter() - start
    print(f"  {clients * 10} requests in {wall:.1f} s: errors {len(errors)}, results different from serial "
          f"{len(mismatches)}; latency {ms(times)}; server RSS {rss_before:.0f} -> {server.rss():.0f} MB")
    for error in errors[:5]:
        print(f"    {error}")


def raw_call(http, url: str, endpoint: str, data: list) -> str:
    """One call through the raw HTTP API (no client: every call is a new session); returns the SSE text."""
    event = http.post(f"{url}gradio_api/call/{endpoint}", json={"data": data}).json()["event_id"]
    return http.get(f"{url}gradio_api/call/{endpoint}/{event}", timeout=120).text


def memory(server: AppServer, requests: int) -> None:
    import httpx
    print(f"\n4. memory: {requests} distinct /view requests (each a new session), 8 at once")
    checkpoints = {requests * k // 10 for k in range(1, 11)}
    done, failures, lock = 0, 0, threading.Lock()
    print(f"  RSS at start {server.rss():.0f} MB")
    with httpx.Client(timeout=120) as http:
        def one(k: int) -> None:
            nonlocal done, failures
            state = PageState(action=ACTIONS[k % 10], seed=100_000 + k, frames=50 + k % 5 * 50,
                              mode=("one", "blend", "interpolate")[k % 3])
            text = raw_call(http, server.url, "view", list(state.to_dict().values()))
            with lock:
                failures += "event: complete" not in text
                done += 1
                if done in checkpoints:
                    print(f"  after {done:6d}: RSS {server.rss():6.0f} MB  (failures {failures})", flush=True)
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(one, range(requests)))


def exports(server: AppServer, count: int) -> None:
    import httpx
    print(f"\n5. exports: {count} distinct 300-frame /export calls, 4 at once")
    folders = list(server.temp.glob("actiongen-app-*"))
    largest = 0.0
    with httpx.Client(timeout=120) as http:
        def one(k: int) -> None:
            nonlocal largest
            raw_call(http, server.url, "export", [PageState(seed=200_000 + k, frames=300).to_dict()])
            if k % 20 == 0:
                largest = max(largest, folder_mb(folders[0]))
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(one, range(count)))
    print(f"  app temp folder: largest {largest:.0f} MB while exporting, {folder_mb(folders[0]):.0f} MB after")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m actiongen.bench --app", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, help="bundle .json (default: the shipped one)")
    parser.add_argument("--checkpoint-3d", type=Path, help="3D bundle .json (default: the shipped one, if there)")
    parser.add_argument("--repeats", type=int, default=20, help="in-process requests per size")
    parser.add_argument("--changes", type=int, default=30, help="browser changes timed")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--requests", type=int, default=10_000, help="distinct requests for the memory run")
    parser.add_argument("--exports", type=int, default=300)
    parser.add_argument("--skip", nargs="*", default=[], choices=["browser", "load", "memory", "exports"])
    args = parser.parse_args(argv)
    checkpoint = args.checkpoint or DEFAULT_BUNDLE
    checkpoint_3d = args.checkpoint_3d or DEFAULT_BUNDLES["3d"]
    use_one_thread_per_request()  # as app.py does
    print(f"checkpoint {checkpoint.name}; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="actiongen-bench-") as work:
        service = ActionGenService(checkpoint, device="cpu", work_dir=work, checkpoint_3d=checkpoint_3d)
        request_s = in_process(service, args.repeats)
        if service.status("3d") is None:
            in_process(service, args.repeats, model="3d")
        else:
            print(f"\n1. (3D skipped: {service.status('3d')})")
        server = AppServer(args.checkpoint)
        try:
            if "browser" not in args.skip:
                browser_latency(server, args.changes, request_s)
            if "load" not in args.skip:
                load(server, service, args.clients)
            if "memory" not in args.skip:
                memory(server, args.requests)
            if "exports" not in args.skip:
                exports(server, args.exports)
        finally:
            server.close()
            leftovers = list(server.temp.glob("actiongen-app-*"))
            print(f"\napp stopped with SIGTERM; its temp folders left behind: {len(leftovers)}")
            shutil.rmtree(server.temp, ignore_errors=True)


if __name__ == "__main__":
    main()
