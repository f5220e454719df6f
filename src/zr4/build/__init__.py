"""`zr4 build`: render, validate, and build the image with docker buildx, podman or buildah."""

from zr4.build.command import BuildOptions, build_command, check_options, describe, push_command, size_command
from zr4.build.engine import ENGINES, Engine, EngineError, detect_engine
from zr4.build.progress import BuildKitProgress, Failure, PodmanProgress, Timings
from zr4.build.run import BuildFailed, BuildResult, run_build, summary_lines

__all__ = [
    "ENGINES",
    "BuildFailed",
    "BuildKitProgress",
    "BuildOptions",
    "BuildResult",
    "Engine",
    "EngineError",
    "Failure",
    "PodmanProgress",
    "Timings",
    "build_command",
    "check_options",
    "describe",
    "detect_engine",
    "push_command",
    "run_build",
    "size_command",
    "summary_lines",
]
