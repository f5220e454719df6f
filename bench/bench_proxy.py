"""Benchmark of zr4's auth proxy (zr4.image.auth.proxy): what it adds over direct access to ComfyUI.

Side by side in one run, alternating which goes first:

1. Download of one output through ``/view`` (default 500 MB) with ``curl``, direct from the origin
   vs through the proxy (bearer token), unthrottled on loopback and with the client capped at
   link-like rates (``curl --limit-rate``, default 100 and 1000 MB/s: a fast home link, and ten
   times that). Median wall time of ``--runs`` each.
2. The proxy's memory (VmRSS of its process, sampled every 20 ms) before and while streaming, and
   the CPU time it spends per download (utime + stime from /proc): on a shared, loaded machine the
   wall time through the proxy depends on how much CPU it gets, CPU seconds per byte do not.
3. Websocket message latency: the origin sends ``--messages`` ComfyUI-shaped JSON messages
   (``{"type": "progress", ...}``) stamped with ``time.monotonic_ns()`` (system-wide on Linux),
   one every ``--interval-ms``; the client records arrival minus stamp, direct vs through the proxy.
   A second case sends 64 KiB binary frames (ComfyUI's preview images travel as binary frames).

The origin (``--serve-origin``, run in its own process) serves ``/view`` with aiohttp's
``web.FileResponse`` and sends websocket messages with ``ws.send_json``/``send_bytes``, the calls
ComfyUI v0.7.0's server.py uses for both. With ``ZR4_COMFYUI_SOURCES`` and ``ZR4_COMFYUI_PYTHON``
set, ``--real-comfyui`` also runs case 1 against the real ComfyUI's ``/view``.

    python bench/bench_proxy.py [--size-mb 500] [--runs 5] [--rate-mbps 100 1000] [--messages 500]
                                [--real-comfyui] [--workdir /tmp/zr4-bench-proxy]

Prints a Markdown report; everything it creates under --workdir is deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "tests"))

MB = 1_000_000
TOKEN = "bench-token-0123456789abcdef"


# --- the origin: ComfyUI's two code paths that matter here ---------------------------------------


def serve_origin(port: int, folder: Path) -> None:
    from aiohttp import web

    async def view(request: web.Request) -> web.StreamResponse:
        path = folder / Path(request.query.get("filename", "")).name
        if not path.is_file():
            return web.Response(status=404)
        return web.FileResponse(
            path, headers={"Content-Disposition": f'filename="{path.name}"', "Content-Type": "video/mp4"}
        )

    async def system_stats(_request: web.Request) -> web.Response:
        return web.json_response({"system": {"comfyui_version": "bench-origin"}})

    async def ws(request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        count = int(request.query.get("count", "100"))
        interval = float(request.query.get("interval_ms", "5")) / 1000
        binary = int(request.query.get("binary", "0"))
        payload = os.urandom(binary) if binary else b""
        for value in range(count):
            await asyncio.sleep(interval)
            if binary:
                await socket.send_bytes(time.monotonic_ns().to_bytes(8, "big") + payload)
            else:
                message = {"type": "progress", "data": {"value": value, "max": count, "prompt_id": "bench"}}
                await socket.send_json({**message, "t": time.monotonic_ns()})
        await socket.close()
        return socket

    app = web.Application()
    app.router.add_get("/view", view)
    app.router.add_get("/system_stats", system_stats)
    app.router.add_get("/ws", ws)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


# --- helpers -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not answer within {timeout_s} s")


def make_file(path: Path, size: int) -> None:
    block = os.urandom(4 << 20)
    with open(path, "wb") as handle:
        written = 0
        while written < size:
            piece = block[: min(len(block), size - written)]
            handle.write(piece)
            written += len(piece)


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far (/proc/PID/stat fields 14 and 15, in clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class RssSampler:
    """VmRSS of ``pid`` every 20 ms while active; ``peak`` in KiB."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            value = rss_kib(self.pid)
            self.samples.append(value)
            self.peak = max(self.peak, value)
            self._stop.wait(0.02)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


def curl_seconds(url: str, bearer: bool, rate_mbps: float | None) -> tuple[float, int]:
    argv = ["curl", "-sS", "-o", "/dev/null", "-w", "%{time_total} %{size_download} %{http_code}", url]
    if bearer:
        argv[1:1] = ["-H", f"Authorization: Bearer {TOKEN}"]
    if rate_mbps:
        argv[1:1] = ["--limit-rate", f"{int(rate_mbps * MB)}"]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.split()
    if out[2] != "200":
        raise SystemExit(f"curl {url} answered HTTP {out[2]}")
    return float(out[0]), int(out[1])


async def ws_latencies(url: str, bearer: bool, count: int, interval_ms: float, binary: int) -> list[float]:
    """One-way latency (ms) of each message: arrival minus the origin's stamp."""
    import aiohttp

    headers = {"Authorization": f"Bearer {TOKEN}"} if bearer else {}
    latencies = []
    query = f"?count={count}&interval_ms={interval_ms}&binary={binary}"
    async with (
        aiohttp.ClientSession() as client,
        client.ws_connect(url + "/ws" + query, headers=headers, max_msg_size=0) as socket,
    ):
        async for message in socket:
            arrived = time.monotonic_ns()
            if message.type == aiohttp.WSMsgType.TEXT:
                sent = json.loads(message.data)["t"]
            elif message.type == aiohttp.WSMsgType.BINARY:
                sent = int.from_bytes(message.data[:8], "big")
            else:
                break
            latencies.append((arrived - sent) / 1e6)
    if len(latencies) != count:
        raise SystemExit(f"websocket {url}: {len(latencies)} of {count} messages arrived")
    return latencies


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --- the run -------------------------------------------------------------------------------------


def cases(rates: list[float]) -> list[tuple[str, float | None]]:
    return [("unthrottled loopback", None)] + [(f"client capped at {rate:g} MB/s", rate) for rate in rates]


@dataclass
class Download:
    direct_s: float
    proxy_s: float
    direct_mbps: float
    proxy_mbps: float
    overhead_pct: float
    runs: dict[str, list[float]]
    peak_rss_kib: int
    proxy_cpu_s: float


def download_case(
    direct: str, proxied: str, runs: int, rate: float | None, proxy_pid: int, size: int
) -> Download:
    times: dict[str, list[float]] = {"direct": [], "proxy": []}
    peaks = []
    cpu = []
    for run in range(runs):
        order = [("direct", direct, False), ("proxy", proxied, True)]
        if run % 2:
            order.reverse()
        for name, url, bearer in order:
            if name == "proxy":
                before = cpu_s(proxy_pid)
                with RssSampler(proxy_pid) as sampler:
                    seconds, got = curl_seconds(url, bearer, rate)
                cpu.append(cpu_s(proxy_pid) - before)
                peaks.append(sampler.peak)
            else:
                seconds, got = curl_seconds(url, bearer, rate)
            if got != size:
                raise SystemExit(f"{name}: got {got} of {size} bytes")
            times[name].append(seconds)
    direct_s = statistics.median(times["direct"])
    proxy_s = statistics.median(times["proxy"])
    return Download(
        direct_s=direct_s,
        proxy_s=proxy_s,
        direct_mbps=size / MB / direct_s,
        proxy_mbps=size / MB / proxy_s,
        overhead_pct=(proxy_s / direct_s - 1) * 100,
        runs=times,
        peak_rss_kib=max(peaks),
        proxy_cpu_s=statistics.median(cpu),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve-origin", nargs=2, metavar=("PORT", "DIR"), help=argparse.SUPPRESS)
    parser.add_argument("--size-mb", type=int, default=500)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rate-mbps", type=float, nargs="+", default=[100.0, 1000.0])
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--interval-ms", type=float, default=5.0)
    parser.add_argument("--real-comfyui", action="store_true")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    if args.serve_origin:
        serve_origin(int(args.serve_origin[0]), Path(args.serve_origin[1]))
        return 0

    workdir = Path(tempfile.mkdtemp(prefix="zr4-bench-proxy-", dir=args.workdir))
    processes: list[subprocess.Popen[bytes]] = []
    try:
        return run(args, workdir, processes)
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
        shutil.rmtree(workdir, ignore_errors=True)


def start_proxy(workdir: Path, backend: int, processes: list[subprocess.Popen[bytes]]) -> tuple[str, int]:
    public = free_port()
    env = {
        **os.environ,
        "ZR4_AUTH_TOKEN": TOKEN,
        "ZR4_PROXY_ROUTES": f"{public}={backend}",
        "ZR4_PROXY_LISTEN": "127.0.0.1",
    }
    proxy = subprocess.Popen(
        [sys.executable, "-m", "zr4.image.auth.proxy"],
        env=env,
        stdout=(workdir / f"proxy-{public}.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    processes.append(proxy)
    wait_http(f"http://127.0.0.1:{public}/zr4/login")
    return f"http://127.0.0.1:{public}", proxy.pid


def run(args: argparse.Namespace, workdir: Path, processes: list[subprocess.Popen[bytes]]) -> int:
    size = args.size_mb * MB
    outputs = workdir / "output"
    outputs.mkdir()
    make_file(outputs / "dance.mp4", size)
    origin_port = free_port()
    origin = subprocess.Popen(
        [sys.executable, __file__, "--serve-origin", str(origin_port), str(outputs)],
        stdout=(workdir / "origin.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    processes.append(origin)
    direct = f"http://127.0.0.1:{origin_port}"
    wait_http(direct + "/system_stats")
    proxied, proxy_pid = start_proxy(workdir, origin_port, processes)
    idle_rss = rss_kib(proxy_pid)
    view = "/view?filename=dance.mp4&type=output"

    print(f"## Auth proxy overhead ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n")
    print(
        f"Machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the start; "
        f"curl {subprocess.run(['curl', '--version'], capture_output=True, text=True).stdout.split()[1]}.\n"
    )
    rows = []
    for label, rate in cases(args.rate_mbps):
        result = download_case(direct + view, proxied + view, args.runs, rate, proxy_pid, size)
        rows.append((f"`/view` {args.size_mb} MB, {label} (aiohttp FileResponse origin)", result))
    if args.real_comfyui:
        rows += real_comfyui_rows(args, workdir, processes, outputs, size)

    print(
        "| case | direct | through the proxy | slower by (goal ≤ 5 %) | proxy peak RSS | proxy CPU per download |"
    )
    print("|---|---|---|---|---|---|")
    for label, r in rows:
        print(
            f"| {label} | {r.direct_s:.2f} s ({r.direct_mbps:.0f} MB/s) | {r.proxy_s:.2f} s "
            f"({r.proxy_mbps:.0f} MB/s) | **{r.overhead_pct:+.1f} %** | {r.peak_rss_kib / 1024:.0f} MiB | "
            f"{r.proxy_cpu_s:.2f} s ({size / MB / max(r.proxy_cpu_s, 1e-9):.0f} MB per CPU-second) |"
        )
    print()
    for label, r in rows:
        print(
            f"- {label}: direct {' / '.join(f'{s:.2f}' for s in r.runs['direct'])} s; "
            f"proxy {' / '.join(f'{s:.2f}' for s in r.runs['proxy'])} s"
        )
    print(
        f"\nProxy memory: {idle_rss / 1024:.0f} MiB RSS idle after start, peak while streaming "
        f"{max(r.peak_rss_kib for _, r in rows) / 1024:.0f} MiB (goal: flat, < 100 MB), "
        f"{rss_kib(proxy_pid) / 1024:.0f} MiB after all downloads.\n"
    )

    print(
        "| websocket messages | direct median / p99 | through the proxy median / p99 | added per message (goal < 2 ms) |"
    )
    print("|---|---|---|---|")
    for label, binary in (("JSON progress", 0), ("64 KiB binary (preview-sized)", 65536)):
        lat: dict[str, list[float]] = {"direct": [], "proxy": []}
        for round_ in range(4):
            order = [("direct", direct, False), ("proxy", proxied, True)]
            if round_ % 2:
                order.reverse()
            for name, url, bearer in order:
                lat[name] += asyncio.run(
                    ws_latencies(url, bearer, args.messages // 4, args.interval_ms, binary)
                )
        d_med, p_med = statistics.median(lat["direct"]), statistics.median(lat["proxy"])
        print(
            f"| {label}, {args.messages} × every {args.interval_ms:g} ms | {d_med:.3f} / {pct(lat['direct'], 0.99):.3f} ms | "
            f"{p_med:.3f} / {pct(lat['proxy'], 0.99):.3f} ms | **{p_med - d_med:+.3f} ms** median, "
            f"{pct(lat['proxy'], 0.99) - pct(lat['direct'], 0.99):+.3f} ms p99 |"
        )
    print(f"\nLoad average at the end: {os.getloadavg()[0]:.1f}.")
    return 0


def real_comfyui_rows(
    args: argparse.Namespace,
    workdir: Path,
    processes: list[subprocess.Popen[bytes]],
    outputs: Path,
    size: int,
) -> list[tuple[str, Download]]:
    from support.real_comfyui import copy_comfyui, find_sources

    sources = find_sources()
    comfy = copy_comfyui(sources, workdir / "tree")
    port = free_port()
    comfyui = subprocess.Popen(
        [
            str(sources.python),
            "main.py",
            "--cpu",
            "--listen",
            "127.0.0.1",
            "--port",
            str(port),
            "--output-directory",
            str(outputs),
        ],
        cwd=comfy,
        stdout=(workdir / "comfyui.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    processes.append(comfyui)
    wait_http(f"http://127.0.0.1:{port}/system_stats", 600)
    proxied, proxy_pid = start_proxy(workdir, port, processes)
    view = "/view?filename=dance.mp4&type=output"
    direct = f"http://127.0.0.1:{port}"
    rows = []
    for label, rate in cases(args.rate_mbps):
        result = download_case(direct + view, proxied + view, args.runs, rate, proxy_pid, size)
        rows.append((f"`/view` {args.size_mb} MB, {label} (real ComfyUI v0.7.0)", result))
    return rows


if __name__ == "__main__":
    sys.exit(main())
