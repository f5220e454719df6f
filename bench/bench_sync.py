"""Benchmark: `zr4 sync once` vs `rclone copy` and `aws s3 cp`, and the daemon's complete→visible latency.

Against one local `rclone serve s3` (loopback, data on local disk), in one run:
  (a) one large file (default 2 GB), (b) many small files (default 500 x 1 MB): wall time of
  `zr4 sync once` (a fresh journal and prefix each time), `rclone copy` and `aws s3 cp --recursive`
  (aws-cli, if `aws` is on PATH), each with its defaults to a fresh prefix; median of --reps runs
  each, the order rotated every repetition.
  Beside each wall time: the CPU seconds the tool's process used (user + system, its children
  included) and the CPU seconds the server used meanwhile. On a machine where the server shares the
  CPUs, wall time is bounded by their sum: this says which side a difference comes from.
  (c) `zr4 sync run` with its default settings (stable time 1 s, inotify): for --latency-files files,
  the time from the file's last write (close) to a HEAD on its key succeeding; the median is reported.

Usage: python bench/bench_sync.py [--tls] [--big-mb 2000] [--small-count 500] [--small-mb 1] [--reps 3]
       [--cases big,small,latency]
(--tls: HTTPS with a self-signed certificate, as R2 is HTTPS-only. zr4 signs request bodies over
plain HTTP and sends UNSIGNED-PAYLOAD over HTTPS; aws-cli signs them (SHA-256 of every body) either
way with its defaults, see botocore/auth.py ``_should_sha256_sign_payload``.)
Prints a Markdown report on stdout. Besides the medians it pairs the runs of each repetition (the
tools run back to back, so they share that moment's load): zr4's time minus the fastest other
tool's, as a mean with its standard error and the count of repetitions zr4 won.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support.s3_server import ACCESS_KEY, SECRET_KEY, RcloneS3
from zr4.image.sync.scanner import day_for

MB = 1_000_000


def write_random(path: Path, size: int) -> None:
    """``size`` bytes that do not compress (one random 8 MiB block repeated: fast to write)."""
    chunk = os.urandom(min(size, 8 * 1024 * 1024))
    with open(path, "wb") as handle:
        left = size
        while left > 0:
            handle.write(chunk[: min(left, len(chunk))])
            left -= len(chunk)


def zr4_env(server: RcloneS3, source: Path, state: Path, prefix: str, **extra: str) -> dict[str, str]:
    """`zr4 sync`'s environment for ``server``: no inherited AWS_/R2_ settings, its own state folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "R2_"))}
    env.update(
        {
            "ENABLE_R2_SYNC": "true",
            "R2_ENDPOINT": server.endpoint,
            "R2_ACCESS_KEY_ID": ACCESS_KEY,
            "R2_SECRET_ACCESS_KEY": SECRET_KEY,
            "R2_PREFIX": prefix,
            "R2_SYNC_OUTPUT_DIR": str(source),
            "R2_SYNC_STATE_DIR": str(state),
            "RUNPOD_POD_ID": "bench",
        }
    )
    if server.ca_cert:
        env["AWS_CA_BUNDLE"] = str(server.ca_cert)  # botocore's CA bundle variable
    env.update(extra)
    return env


def _time(command: list[str], env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{command[:4]} failed: {done.stdout[-2000:]} {done.stderr[-2000:]}")
    return elapsed


def run_zr4_once(server: RcloneS3, source: Path, work: Path, tag: str) -> float:
    state = work / f"state-{tag}"
    shutil.rmtree(state, ignore_errors=True)
    env = zr4_env(server, source, state, f"zr4-{tag}", R2_SYNC_STABLE_SECONDS="0")
    return _time([sys.executable, "-m", "zr4.cli.main", "sync", "once"], env)


def run_rclone_copy(server: RcloneS3, source: Path, tag: str) -> float:
    config = source.parent / "bench-rclone.conf"
    config.touch()
    command = [
        server.rclone,
        "copy",
        str(source),
        f":s3:{server.bucket}/rclone-{tag}",
        "--config",
        str(config),
        "--s3-provider",
        "Other",
        "--s3-endpoint",
        server.endpoint,
        "--s3-access-key-id",
        ACCESS_KEY,
        "--s3-secret-access-key",
        SECRET_KEY,
        "--s3-force-path-style=true",
    ]
    if server.ca_cert:
        command += ["--ca-cert", str(server.ca_cert)]
    return _time(command)


def aws_env(server: RcloneS3) -> dict[str, str]:
    """aws-cli's environment for ``server``: its key pair, no user config, R2's checksum setting."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env |= {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        # botocore >= 1.36 streams CRC trailers (aws-chunked) that rclone serve s3 refuses, as R2 does.
        "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
    }
    if server.ca_cert:
        env["AWS_CA_BUNDLE"] = str(server.ca_cert)
    return env


def run_aws_cp(server: RcloneS3, source: Path, tag: str) -> float:
    """`aws s3 cp --recursive` with its defaults (s3transfer: 8 MiB parts, 10 requests in flight)."""
    env = aws_env(server)
    aws = shutil.which("aws")
    assert aws is not None
    command = [aws, "s3", "cp", "--recursive", "--only-show-errors", "--endpoint-url", server.endpoint]
    return _time([*command, str(source), f"s3://{server.bucket}/aws-{tag}"], env)


TOOLS = ("zr4 sync once", "rclone copy", "aws s3 cp")


def paired_vs_fastest(times: dict[str, list[float]]) -> tuple[float, float, int]:
    """(mean, standard error) in ms of zr4's time minus the fastest other tool's, per repetition,
    and the number of repetitions zr4 was faster. Pairing removes the load the tools shared."""
    others = [values for tool, values in times.items() if tool != "zr4 sync once"]
    differences = [
        zr4 - min(rep) for zr4, rep in zip(times["zr4 sync once"], zip(*others, strict=True), strict=True)
    ]
    error = statistics.stdev(differences) / len(differences) ** 0.5
    return statistics.mean(differences) * 1000, error * 1000, sum(d < 0 for d in differences)


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _process_cpu_s(pid: int) -> float:
    """utime + stime of a running process (proc(5): fields 14 and 15 of /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def compare(
    server: RcloneS3, source: Path, work: Path, name: str, reps: int
) -> tuple[dict[str, list[float]], dict[str, list[tuple[float, float]]]]:
    """Each tool ``reps`` times, the order rotated every repetition: wall times, and (tool CPU s, server
    CPU s) per run."""
    tools = [t for t in TOOLS if t != "aws s3 cp" or shutil.which("aws")]
    times: dict[str, list[float]] = {tool: [] for tool in tools}
    cpu: dict[str, list[tuple[float, float]]] = {tool: [] for tool in tools}
    assert server.process is not None
    for rep in range(reps):
        order = tools[rep % len(tools) :] + tools[: rep % len(tools)]
        for tool in order:
            tag = f"{name}-{rep}"
            tool_before, server_before = _children_cpu_s(), _process_cpu_s(server.process.pid)
            if tool == "zr4 sync once":
                times[tool].append(run_zr4_once(server, source, work, tag))
            elif tool == "rclone copy":
                times[tool].append(run_rclone_copy(server, source, tag))
            else:
                times[tool].append(run_aws_cp(server, source, tag))
            cpu[tool].append(
                (_children_cpu_s() - tool_before, _process_cpu_s(server.process.pid) - server_before)
            )
        # Free the server's disk before the next repetition.
        for folder in (server.data_dir / server.bucket).glob(f"*-{name}-{rep}"):
            shutil.rmtree(folder, ignore_errors=True)
    return times, cpu


def latency(server: RcloneS3, work: Path, files: int, size: int) -> list[float]:
    source = work / "latency-src"
    source.mkdir()
    env = zr4_env(server, source, work / "state-latency", "latency")
    log = open(work / "latency-daemon.log", "wb")  # noqa: SIM115
    daemon = subprocess.Popen(
        [sys.executable, "-m", "zr4.cli.main", "sync", "run"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    client = server.client()
    results: list[float] = []
    try:
        time.sleep(2.0)  # daemon up and watching
        for i in range(files):
            path = source / f"clip_{i:03d}.mp4"
            write_random(path, size)
            complete = time.time()  # the last write just closed
            key = f"latency/{day_for(path.stat().st_mtime_ns)}/{path.name}"
            deadline = complete + 30
            while time.time() < deadline:
                try:
                    client.head_object(Bucket=server.bucket, Key=key)
                    break
                except client.exceptions.ClientError:
                    time.sleep(0.01)
            else:
                raise SystemExit(f"{key} never became visible")
            results.append(time.time() - complete)
            time.sleep(0.3)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
        log.close()
    return results


def _load() -> float:
    return os.getloadavg()[0]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--big-mb", type=int, default=2000)
    parser.add_argument("--small-count", type=int, default=500)
    parser.add_argument("--small-mb", type=float, default=1.0)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--latency-files", type=int, default=20)
    parser.add_argument("--latency-mb", type=float, default=5.0)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--tls", action="store_true", help="serve HTTPS (self-signed), as R2 does")
    parser.add_argument(
        "--cases", default="big,small,latency", help="comma-separated subset of big,small,latency"
    )
    args = parser.parse_args()
    cases = set(args.cases.split(","))

    loads = [_load()]
    work = Path(tempfile.mkdtemp(prefix="zr4-bench-sync-", dir=args.workdir))
    server = RcloneS3(work / "server", tls=args.tls).start()
    rows: list[tuple[str, dict[str, list[float]], float]] = []
    cpu_rows: list[tuple[str, dict[str, list[tuple[float, float]]]]] = []
    lat: list[float] = []
    try:
        sets = []
        if "big" in cases:
            big = work / "big"
            big.mkdir()
            write_random(big / "video.mp4", args.big_mb * MB)
            sets.append((f"(a) 1 x {args.big_mb} MB", big, "big", args.big_mb * MB))
        if "small" in cases:
            small = work / "small"
            small.mkdir()
            for i in range(args.small_count):
                write_random(small / f"frame_{i:04d}.png", int(args.small_mb * MB))
            sets.append(
                (
                    f"(b) {args.small_count} x {args.small_mb:g} MB",
                    small,
                    "small",
                    args.small_count * args.small_mb * MB,
                )
            )
        # Files were written long enough ago: every tool reads from the page cache.
        for name, source, tag, total in sets:
            times, cpu = compare(server, source, work, tag, args.reps)
            rows.append((name, times, total))
            cpu_rows.append((name, cpu))
            loads.append(_load())
            print(f"{name}: {times}", file=sys.stderr)
        if "latency" in cases:
            lat = latency(server, work, args.latency_files, int(args.latency_mb * MB))
            loads.append(_load())
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)

    rclone_version = subprocess.run([server.rclone, "version"], capture_output=True, text=True).stdout.split(
        "\n"
    )[0]
    aws = shutil.which("aws")
    aws_version = (
        subprocess.run([aws, "--version"], capture_output=True, text=True).stdout.strip() if aws else "-"
    )
    print(
        f"Machine: {platform.platform()}, {os.cpu_count()} CPUs (shared; load average at start / after each "
        f"case: {' / '.join(f'{x:.1f}' for x in loads)}); server: {rclone_version} `serve s3` on loopback, "
        f"{'HTTPS' if args.tls else 'HTTP'}; {aws_version}"
    )
    print()
    print(
        f"Median of {args.reps} runs each, order rotated per repetition (wall seconds, process start included)."
    )
    print()
    print("| case | zr4 sync once | rclone copy | aws s3 cp | fastest other / zr4 (goal >= 1.0) | zr4 MB/s |")
    print("|---|---|---|---|---|---|")
    for name, times, total in rows:
        medians = {tool: statistics.median(values) for tool, values in times.items()}
        zr4 = medians["zr4 sync once"]
        best = min(v for t, v in medians.items() if t != "zr4 sync once")
        cells = " | ".join(f"{medians[t]:.2f} s" if t in medians else "-" for t in TOOLS)
        print(f"| {name} | {cells} | **{best / zr4:.2f}x** | {total / MB / zr4:.0f} |")
    print()
    print("CPU seconds, median of the same runs: the tool's process (user + system) / the server meanwhile.")
    print()
    print("| case | zr4 sync once | rclone copy | aws s3 cp |")
    print("|---|---|---|---|")
    for name, cpu in cpu_rows:
        cells = " | ".join(
            (
                f"{statistics.median(c for c, _ in cpu[t]):.2f} / {statistics.median(s for _, s in cpu[t]):.2f}"
                if t in cpu
                else "-"
            )
            for t in TOOLS
        )
        print(f"| {name} | {cells} |")
    print()
    for name, times, _ in rows:
        print(
            f"Runs {name}: "
            + "; ".join(f"{t} {', '.join(f'{v:.2f}' for v in vs)}" for t, vs in times.items())
        )
    print()
    for name, times, _ in rows:
        if len(times) > 1 and args.reps > 1:
            mean_ms, error_ms, wins = paired_vs_fastest(times)
            print(
                f"Paired {name}: zr4 minus the fastest other tool of the same repetition, mean {mean_ms:+.0f} ms "
                f"(standard error {error_ms:.0f} ms); zr4 faster in {wins} of {args.reps}."
            )
    if lat:
        print()
        print(
            f"Daemon (`zr4 sync run`, defaults: stable 1 s, inotify), {len(lat)} files of {args.latency_mb:g} MB: "
            f"complete->visible median {statistics.median(lat):.2f} s, min {min(lat):.2f} s, max {max(lat):.2f} s "
            "(goal < 2 s)"
        )


if __name__ == "__main__":
    main()
