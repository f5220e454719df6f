"""Where the time of one large upload goes: `zr4 sync once` and `aws s3 cp`, phase by phase.

Why: bench_sync.py gives each tool's wall time; when two tools are within a few per cent of each other
that does not say whether the difference is start-up, the transfer or the tail. Each tool runs in a
Python process that records botocore's ``before-call``/``after-call`` events of its S3 client (the
same hooks a user could register) and the moment the interpreter exits, all against the time the
process was started. Both tools are botocore clients, so one wrapper serves both.

Against one local `rclone serve s3` over HTTPS, the order alternating, each run to a fresh prefix
whose data is removed afterwards (the server's disk must not fill between runs):

    python bench/sync_timeline.py [--mb 1000] [--reps 4] [--aws-python PYTHON]

(--aws-python: the interpreter aws-cli is installed in, when not this one.) Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_sync import MB, aws_env, write_random, zr4_env

from support.s3_server import RcloneS3  # bench_sync put tests/ on sys.path

# Runs as the tool's main program: argv[1] is "zr4" or "aws", the rest its arguments; ZR4_T0 is the
# time.time() just before the process was started. Prints one JSON line of phase times to stderr.
WRAPPER = r"""
import atexit, json, os, sys, time
T0 = float(os.environ["ZR4_T0"])
events = []
import botocore.session
create_client = botocore.session.Session.create_client
def recording_client(self, *args, **kwargs):
    client = create_client(self, *args, **kwargs)
    def note(kind):
        return lambda event_name=None, **_: events.append((time.time() - T0, kind, event_name.rsplit(".", 1)[-1]))
    client.meta.events.register("before-call.s3", note("send"))
    client.meta.events.register("after-call.s3", note("done"))
    return client
botocore.session.Session.create_client = recording_client
def report():
    def at(kind, op, pick=min):
        times = [t for t, k, o in events if k == kind and o == op]
        return pick(times) if times else None
    sys.stderr.write("ZR4-TIMELINE " + json.dumps({
        "first_request": events[0][0] if events else None,
        "first_part_sent": at("send", "UploadPart"),
        "last_part_done": at("done", "UploadPart", max),
        "complete_done": at("done", "CompleteMultipartUpload"),
        "last_request_done": events[-1][0] if events else None,
        "exit": time.time() - T0,
    }) + "\n")
atexit.register(report)
tool, sys.argv = sys.argv[1], sys.argv[1:]
if tool == "zr4":
    from zr4.cli.main import run
    run()
else:
    from awscli.clidriver import main
    sys.exit(main())
"""

PHASES = (
    ("start → first request", "first_request", None),
    ("→ first part sent", "first_part_sent", "first_request"),
    ("transfer: first part sent → last part done", "last_part_done", "first_part_sent"),
    ("→ CompleteMultipartUpload done", "complete_done", "last_part_done"),
    ("→ last request done", "last_request_done", "complete_done"),
    ("→ interpreter exit", "exit", "last_request_done"),
)


def timed(command: list[str], env: dict[str, str]) -> dict[str, float]:
    """Run ``command`` and return its phase times plus ``wall`` (seconds since the process start)."""
    started = time.time()
    done = subprocess.run(command, env={**env, "ZR4_T0": repr(started)}, capture_output=True, text=True)
    wall = time.time() - started
    lines = [line for line in done.stderr.splitlines() if line.startswith("ZR4-TIMELINE ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(
            f"{command[1:4]} failed ({done.returncode}): {done.stdout[-1500:]} {done.stderr[-1500:]}"
        )
    phases: dict[str, float] = json.loads(lines[-1].removeprefix("ZR4-TIMELINE "))
    phases["wall"] = wall
    return phases


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mb", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=4)
    parser.add_argument("--aws-python", default=sys.executable)
    args = parser.parse_args()
    if args.mb < 32:
        raise SystemExit("--mb must be at least 32: the file must go up in several parts")
    check = subprocess.run([args.aws_python, "-c", "import awscli"], capture_output=True)
    if check.returncode != 0:
        raise SystemExit(f"aws-cli is not importable by {args.aws_python}: pass --aws-python")

    work = Path(tempfile.mkdtemp(prefix="zr4-sync-timeline-"))
    wrapper = work / "timeline.py"
    wrapper.write_text(WRAPPER)
    source = work / "big"
    source.mkdir()
    write_random(source / "video.mp4", args.mb * MB)
    server = RcloneS3(work / "server", tls=True).start()
    runs: dict[str, list[dict[str, float]]] = {"zr4 sync once": [], "aws s3 cp": []}
    try:
        for rep in range(args.reps):
            order = list(runs) if rep % 2 == 0 else list(reversed(runs))
            for tool in order:
                prefix = f"{'zr4' if tool.startswith('zr4') else 'aws'}-{rep}"
                if tool.startswith("zr4"):
                    env = zr4_env(server, source, work / f"state-{rep}", prefix, R2_SYNC_STABLE_SECONDS="0")
                    command = [sys.executable, str(wrapper), "zr4", "sync", "once"]
                else:
                    env = aws_env(server)
                    command = [args.aws_python, str(wrapper), "aws", "s3", "cp", "--recursive"]
                    command += ["--only-show-errors", "--endpoint-url", server.endpoint]
                    command += [str(source), f"s3://{server.bucket}/{prefix}"]
                runs[tool].append(timed(command, env))
                shutil.rmtree(server.data_dir / server.bucket / prefix, ignore_errors=True)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)

    print(f"One {args.mb} MB file over HTTPS, {args.reps} runs each, order alternating; seconds, per run.")
    print()
    print("| phase | zr4 sync once | aws s3 cp |")
    print("|---|---|---|")
    for label, end, begin in [*PHASES, ("wall (measured outside)", "wall", None)]:
        cells = []
        for tool in runs:
            values = [r[end] - (r[begin] if begin else 0.0) for r in runs[tool]]
            cells.append(f"{' / '.join(f'{v:.3f}' for v in values)} (median {statistics.median(values):.3f})")
        print(f"| {label} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
