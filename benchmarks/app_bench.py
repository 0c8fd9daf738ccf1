"""The app's speed under load, against a trivial Gradio app measured in the same run.

    python benchmarks/app_bench.py [--model pretrained] [--concurrency 1 2 4]

For each queue concurrency, starts `app.py` and a trivial app with the same
kinds of components and the same queue (File in; a Label, four PNG Images,
Markdown and JSON out; its callback returns small fresh images at once) on
127.0.0.1, and times /predict on both through gradio_client: one client, 8
clients × 4 requests, 32 clients × 4 requests, each twice, in the order
trivial, app, app, trivial. The ratio app/trivial is what
counts on a shared machine. It also reads app.py's RSS before and after 500
requests. Every load is bounded in requests and in time.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SLICE = ROOT / "examples" / "tumour_glioma_figshare_2199.jpg"
SCENARIOS = ((1, 20), (8, 4), (32, 4))  # (clients, requests each)
# Each scenario runs in this order: the shared CPU's speed drifts, and the
# mirrored order gives both apps the same drift on average.
ORDER = ("trivial", "app", "app", "trivial")
RUNS = ORDER.count("app")  # each app's runs of each scenario
RSS_REQUESTS = 500
WARM_UP_REQUESTS = 3
START_TIMEOUT_S = 180
REQUEST_TIMEOUT_S = 120
LOAD_TIMEOUT_S = 600  # a whole load gives up after this; the requests left count as errors


# ------------------------------------------------------------------ servers
@dataclass
class Server:
    url: str
    process: subprocess.Popen

    @property
    def pid(self) -> int:
        return self.process.pid


def app_command(model, concurrency: int | None = None) -> list[str]:
    """`python app.py` serving `model`, at app.py's own concurrency unless one is given."""
    command = [sys.executable, str(ROOT / "app.py"), "--model", str(model)]
    return command + (["--concurrency", str(concurrency)] if concurrency else [])


def trivial_command(concurrency: int) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--serve-trivial",
            "--concurrency", str(concurrency)]  # fmt: skip


@contextlib.contextmanager
def serving(command: list[str], log_path: Path | None = None):
    """Run `command` as a Gradio server on a free loopback port until the block ends."""
    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port)}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with open(log_path or os.devnull, "wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}/", process)
    try:
        wait_until_serving(server)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_serving(server: Server, timeout_s: float = START_TIMEOUT_S) -> float:
    """Seconds until the server answered its page; raises if it died or took too long."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.process.args} exited with {server.process.returncode}")
        with (
            contextlib.suppress(OSError),  # not listening yet
            urllib.request.urlopen(server.url, timeout=2) as response,
        ):
            if response.status == 200:
                return time.monotonic() - started
        time.sleep(0.2)
    raise RuntimeError(f"{server.process.args} did not serve within {timeout_s} s")


def rss_mb(pid: int) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


# --------------------------------------------------------------------- load
@dataclass
class Load:
    """The answers to `clients` clients sending `requests_each` requests one after another."""

    clients: int
    requests_each: int
    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def answered(self) -> int:
        return len(self.latencies_ms)

    @property
    def p50(self) -> float:
        return float(np.percentile(self.latencies_ms, 50)) if self.latencies_ms else float("nan")

    @property
    def p95(self) -> float:
        return float(np.percentile(self.latencies_ms, 95)) if self.latencies_ms else float("nan")


def load(
    url: str, path, clients: int, requests_each: int, timeout_s: float = LOAD_TIMEOUT_S
) -> Load:
    """Each client connects, then sends its requests one at a time; timed from submit to result."""
    from gradio_client import Client

    deadline = time.monotonic() + timeout_s
    with ThreadPoolExecutor(max_workers=clients) as pool:
        connected = list(pool.map(lambda _: Client(url, verbose=False), range(clients)))
        runs = list(pool.map(lambda c: _requests(c, path, requests_each, deadline), connected))
    result = Load(clients, requests_each)
    for latencies, errors in runs:
        result.latencies_ms += latencies
        result.errors += errors
    return result


def _requests(client, path, count: int, deadline: float) -> tuple[list[float], list[str]]:
    from gradio_client import handle_file

    latencies, errors = [], []
    for i in range(count):
        if time.monotonic() > deadline:
            errors += [f"not sent: the load ran past {LOAD_TIMEOUT_S} s"] * (count - i)
            break
        started = time.perf_counter()
        try:
            client.submit(handle_file(str(path)), api_name="/predict").result(
                timeout=REQUEST_TIMEOUT_S
            )
        except Exception as exc:  # noqa: BLE001 (any failure is a finding to report, not a crash)
            errors.append(f"{type(exc).__name__}: {exc}")
        else:
            latencies.append((time.perf_counter() - started) * 1000)
    return latencies, errors


# -------------------------------------------------------------------- runs
def compare(app: Server, trivial: Server, path, scenarios=SCENARIOS) -> list[dict]:
    """Each scenario run on both apps in ORDER, each app's loads pooled."""
    servers = {"app": app, "trivial": trivial}
    rows = []
    for clients, requests_each in scenarios:
        row = {"clients": clients, "requests_each": requests_each}
        for name in ORDER:
            answers = load(servers[name].url, path, clients, requests_each)
            pooled = row.setdefault(name, Load(clients, requests_each))
            pooled.latencies_ms += answers.latencies_ms
            pooled.errors += answers.errors
        rows.append(row)
    return rows


def measure(model, concurrency: int, path, log_dir: Path | None = None) -> dict:
    """Timings and RSS of app.py at one queue concurrency, beside the trivial app's."""
    logs = {
        name: log_dir / f"{name}-c{concurrency}.log" if log_dir else None
        for name in ("app", "trivial")
    }
    with (
        serving(app_command(model, concurrency), logs["app"]) as app,
        serving(trivial_command(concurrency), logs["trivial"]) as trivial,
    ):
        for server in (app, trivial):  # first calls trace graphs and fill caches
            load(server.url, path, 1, WARM_UP_REQUESTS)
        rss_before = rss_mb(app.pid)
        rows = compare(app, trivial, path)
        sent = sum(row["app"].clients * row["app"].requests_each * RUNS for row in rows)
        rest = load(app.url, path, 8, -(-(RSS_REQUESTS - sent) // 8))  # ceil: at least 500 in all
        rss_after = rss_mb(app.pid)
    return {
        "concurrency": concurrency,
        "rows": rows,
        "rss_requests": sent + rest.clients * rest.requests_each,
        "rss_errors": len(rest.errors),
        "rss_before_mb": rss_before,
        "rss_after_mb": rss_after,
    }


def ratio(row: dict) -> float:
    """The target's measure: p50 for one client, p95 for a crowd."""
    stat = "p50" if row["clients"] == 1 else "p95"
    return getattr(row["app"], stat) / getattr(row["trivial"], stat)


def table(results: list[dict]) -> str:
    lines = [
        (
            "| concurrency | clients × requests | trivial p50 / p95 (ms) | app.py p50 / p95 (ms) "
            "| ratio app/trivial | answered (app) | errors (app) |"
        ),
        "|---|---|---|---|---|---|---|",
    ]
    for result in results:
        for row in result["rows"]:
            base, ours = row["trivial"], row["app"]
            stat = "p50" if row["clients"] == 1 else "p95"
            lines.append(
                f"| {result['concurrency']} | {row['clients']} × {row['requests_each']}, {RUNS} times "
                f"| {base.p50:.0f} / {base.p95:.0f} | {ours.p50:.0f} / {ours.p95:.0f} "
                f"| {ratio(row):.2f} ({stat}) | {ours.answered} / {row['clients'] * row['requests_each'] * RUNS} "
                f"| {len(ours.errors)} |"
            )
    lines += [
        "",
        "| concurrency | requests | app.py RSS before → after (MB) | growth (MB) |",
        "|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['concurrency']} | {r['rss_requests']} ({r['rss_errors']} errors) "
            f"| {r['rss_before_mb']:.0f} → {r['rss_after_mb']:.0f} "
            f"| {r['rss_after_mb'] - r['rss_before_mb']:+.0f} |"
        )
    return "\n".join(lines)


# ------------------------------------------------------------- trivial app
def serve_trivial(concurrency: int) -> None:
    """Gradio alone: the components app.py's /predict has, and nothing to compute."""
    import gradio as gr

    rng = np.random.default_rng()

    def predict(path, slice_index=None):
        images = [rng.integers(0, 256, (32, 32), np.uint8) for _ in range(4)]  # fresh: new PNGs
        types = {"glioma": 0.2, "meningioma": 0.5, "pituitary": 0.3}
        return (
            {"tumour": 0.5, "normal": 0.5},
            types,
            *images,
            "**Trivial**",
            {"tumor_probability": 0.5},
        )

    with gr.Blocks(analytics_enabled=False) as demo:
        upload = gr.File()
        state = gr.State(None)
        outputs = [
            gr.Label(),
            gr.Label(),  # the tumour type
            *(gr.Image(format="png") for _ in range(4)),
            gr.Markdown(),
            gr.JSON(),
        ]
        gr.Button().click(predict, [upload, state], outputs, api_name="predict")
    demo.queue(default_concurrency_limit=concurrency, max_size=64)
    demo.launch()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "pretrained"))
    parser.add_argument("--concurrency", type=int, nargs="+", default=[2])
    parser.add_argument("--slice", default=str(SLICE), help="the file every request uploads")
    parser.add_argument("--logs", type=Path, help="folder for the servers' logs")
    parser.add_argument("--serve-trivial", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_trivial:
        return serve_trivial(args.concurrency[0])
    if args.logs:
        args.logs.mkdir(parents=True, exist_ok=True)
    results = []
    for concurrency in args.concurrency:
        results.append(measure(args.model, concurrency, args.slice, args.logs))
        print(table(results[-1:]), "\n", flush=True)  # progress: one table per concurrency
    print(f"{os.cpu_count()} CPUs; both apps served and loaded in the same run.\n")
    print(table(results))


if __name__ == "__main__":
    main()
