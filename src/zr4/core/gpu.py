"""What hardware the container runs on: NVIDIA GPUs and host RAM.

Tried in order: NVML (the ``pynvml`` module of ``nvidia-ml-py``), then ``nvidia-smi``, then CPU-only.
Detection never raises: a broken NVML or a hanging ``nvidia-smi`` becomes a warning and the next
source is tried. The parsing is split into pure functions so it can be tested on recorded output.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

MIB = 1024 * 1024
Source = Literal["nvml", "nvidia-smi", "none"]

# nvidia-smi --query-gpu fields, in this order (nvidia-smi --help-query-gpu).
SMI_FIELDS = ("index", "name", "memory.total", "memory.free", "compute_cap", "driver_version")
SMI_TIMEOUT_S = 20


@dataclass(frozen=True)
class GpuInfo:
    """One NVIDIA GPU as the driver reports it."""

    index: int
    name: str
    total_mib: int
    free_mib: int | None = None
    compute_capability: str | None = None  # "8.9"


@dataclass(frozen=True)
class HostRam:
    """Memory the container may use: MemTotal, capped by a cgroup limit when one is set."""

    total_mib: int
    available_mib: int | None = None
    cgroup_limit_mib: int | None = None


@dataclass(frozen=True)
class Detection:
    """Everything the planner needs to know about the machine."""

    source: Source
    gpus: tuple[GpuInfo, ...] = ()
    gpu_count: int = 0  # RUNPOD_GPU_COUNT when set, else len(gpus)
    driver_version: str | None = None
    cuda_driver_version: str | None = None  # highest CUDA version the driver supports, "12.4"
    host_ram: HostRam | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def primary(self) -> GpuInfo | None:
        """The GPU ComfyUI runs on (device 0)."""
        return self.gpus[0] if self.gpus else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "gpu_count": self.gpu_count,
            "driver_version": self.driver_version,
            "cuda_driver_version": self.cuda_driver_version,
            "gpus": [gpu.__dict__ for gpu in self.gpus],
            "host_ram": None if self.host_ram is None else self.host_ram.__dict__,
            "warnings": list(self.warnings),
        }


# --- pure parsing ------------------------------------------------------------------------------


def cuda_version_from_int(value: int) -> str:
    """NVML's ``nvmlSystemGetCudaDriverVersion`` (e.g. 12040) as ``"12.4"``."""
    return f"{value // 1000}.{(value % 1000) // 10}"


def _text(value: Any) -> str:
    # nvidia-ml-py < 11.515 returned bytes, newer versions str
    return value.decode() if isinstance(value, bytes) else str(value)


def _int_or_none(text: str) -> int | None:
    try:
        return int(float(text))
    except ValueError:
        return None


def parse_smi_query(text: str) -> tuple[list[GpuInfo], str | None, list[str]]:
    """Parse ``nvidia-smi --query-gpu=<SMI_FIELDS> --format=csv,noheader,nounits``.

    Returns the GPUs, the driver version and warnings for lines that could not be read.
    """
    gpus: list[GpuInfo] = []
    driver: str | None = None
    warnings: list[str] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        cells = [cell.strip() for cell in line.split(",")]
        if len(cells) != len(SMI_FIELDS):
            warnings.append(f"nvidia-smi: unexpected line {line.strip()!r}")
            continue
        index, name, total, free, capability, driver_cell = cells
        total_mib = _int_or_none(total)
        if total_mib is None or _int_or_none(index) is None:
            warnings.append(f"nvidia-smi: unexpected line {line.strip()!r}")
            continue
        gpus.append(
            GpuInfo(
                index=int(index),
                name=name,
                total_mib=total_mib,
                free_mib=_int_or_none(free),
                compute_capability=capability if re.fullmatch(r"\d+\.\d+", capability) else None,
            )
        )
        driver = driver or (driver_cell if driver_cell and driver_cell != "[N/A]" else None)
    return gpus, driver, warnings


def parse_smi_cuda_version(text: str) -> str | None:
    """The ``CUDA Version: 12.4`` of ``nvidia-smi``'s banner."""
    match = re.search(r"CUDA Version\s*:\s*([0-9]+\.[0-9]+)", text)
    return match.group(1) if match else None


def parse_meminfo(text: str) -> tuple[int | None, int | None]:
    """(MemTotal, MemAvailable) of ``/proc/meminfo`` in MiB."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        match = re.match(r"(\w+):\s+(\d+)\s*kB", line)
        if match:
            values[match.group(1)] = int(match.group(2)) // 1024
    return values.get("MemTotal"), values.get("MemAvailable")


def parse_cgroup_limit(text: str) -> int | None:
    """A cgroup memory limit (``memory.max`` or ``memory.limit_in_bytes``) in MiB; None if unlimited."""
    value = text.strip()
    if not value or value == "max":
        return None
    try:
        limit = int(value)
    except ValueError:
        return None
    # cgroup v1 reports "no limit" as a huge page-aligned number
    return None if limit >= 1 << 60 else limit // MIB


def gpu_count_from_env(environ: Mapping[str, str], detected: int) -> tuple[int, list[str]]:
    """RunPod's ``RUNPOD_GPU_COUNT`` when it is set and valid, else the detected count."""
    raw = environ.get("RUNPOD_GPU_COUNT", "").strip()
    if not raw:
        return detected, []
    try:
        count = int(raw)
    except ValueError:
        return detected, [f"RUNPOD_GPU_COUNT={raw!r} is not a number; using the {detected} GPU(s) detected"]
    if count < 0:
        return detected, [f"RUNPOD_GPU_COUNT={raw!r} is negative; using the {detected} GPU(s) detected"]
    warnings = []
    if count != detected:
        warnings.append(f"RUNPOD_GPU_COUNT={count} but {detected} GPU(s) detected; using {count}")
    return count, warnings


# --- edges ---------------------------------------------------------------------------------------


def detect_nvml(nvml: Any) -> tuple[list[GpuInfo], str | None, str | None]:
    """Query every GPU through an NVML binding (the ``pynvml`` module). Raises on NVML errors."""
    nvml.nvmlInit()
    try:
        gpus = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            try:
                major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
                capability: str | None = f"{major}.{minor}"
            except Exception:
                capability = None
            gpus.append(
                GpuInfo(
                    index=index,
                    name=_text(nvml.nvmlDeviceGetName(handle)),
                    total_mib=int(memory.total) // MIB,
                    free_mib=int(memory.free) // MIB,
                    compute_capability=capability,
                )
            )
        driver = _text(nvml.nvmlSystemGetDriverVersion())
        try:
            cuda: str | None = cuda_version_from_int(int(nvml.nvmlSystemGetCudaDriverVersion()))
        except Exception:
            cuda = None
        return gpus, driver, cuda
    finally:
        with contextlib.suppress(Exception):
            nvml.nvmlShutdown()


Runner = Callable[[Sequence[str]], str]


def run_command(argv: Sequence[str]) -> str:
    """Run ``argv`` with a timeout; its stdout, or raise OSError/SubprocessError."""
    completed = subprocess.run(list(argv), capture_output=True, text=True, timeout=SMI_TIMEOUT_S, check=True)
    return completed.stdout


def detect_smi(runner: Runner, smi: str) -> tuple[list[GpuInfo], str | None, str | None, list[str]]:
    """Query every GPU through ``nvidia-smi``."""
    query = runner([smi, f"--query-gpu={','.join(SMI_FIELDS)}", "--format=csv,noheader,nounits"])
    gpus, driver, warnings = parse_smi_query(query)
    try:
        cuda = parse_smi_cuda_version(runner([smi]))
    except (OSError, subprocess.SubprocessError):
        cuda = None
    return gpus, driver, cuda, warnings


def read_host_ram(root: Path = Path("/")) -> HostRam | None:
    """Host RAM from ``/proc/meminfo``, capped by the container's cgroup memory limit."""
    try:
        total, available = parse_meminfo((root / "proc/meminfo").read_text())
    except OSError:
        return None
    if total is None:
        return None
    limit = None
    for name in ("sys/fs/cgroup/memory.max", "sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            limit = parse_cgroup_limit((root / name).read_text())
        except OSError:
            continue
        break
    if limit is not None and limit < total:
        return HostRam(
            total_mib=limit,
            available_mib=None if available is None else min(available, limit),
            cgroup_limit_mib=limit,
        )
    return HostRam(total_mib=total, available_mib=available, cgroup_limit_mib=limit)


def _import_pynvml() -> Any:
    import pynvml

    return pynvml


def detect(
    environ: Mapping[str, str] | None = None,
    nvml: Any = None,
    runner: Runner | None = None,
    smi_path: str | None = None,
    root: Path = Path("/"),
) -> Detection:
    """Detect GPUs and host RAM. Never raises.

    ``nvml`` (an NVML binding, default ``pynvml``), ``runner`` (runs ``nvidia-smi``) and ``root``
    (where ``/proc`` and ``/sys`` are) can be replaced, for tests and for machines without a GPU.
    """
    env = os.environ if environ is None else environ
    warnings: list[str] = []
    gpus: list[GpuInfo] = []
    driver = cuda = None
    source: Source = "none"

    try:
        binding = nvml if nvml is not None else _import_pynvml()
        gpus, driver, cuda = detect_nvml(binding)
        source = "nvml"
    except Exception as error:  # ImportError, NVMLError_LibraryNotFound, NVMLError_DriverNotLoaded, ...
        warnings.append(f"NVML unavailable ({type(error).__name__}: {error}); trying nvidia-smi")

    if source == "none":
        smi = smi_path or shutil.which("nvidia-smi", path=env.get("PATH"))
        if smi is None:
            warnings.append("nvidia-smi not found; running CPU-only")
        else:
            try:
                gpus, driver, cuda, smi_warnings = detect_smi(runner or run_command, smi)
                warnings.extend(smi_warnings)
                source = "nvidia-smi" if gpus else "none"
                if not gpus:
                    warnings.append("nvidia-smi listed no GPU; running CPU-only")
            except (OSError, subprocess.SubprocessError) as error:
                warnings.append(f"nvidia-smi failed ({type(error).__name__}: {error}); running CPU-only")

    count, count_warnings = gpu_count_from_env(env, len(gpus))
    warnings.extend(count_warnings)
    try:
        host_ram = read_host_ram(root)
    except Exception as error:  # never let a strange /proc stop the start
        host_ram = None
        warnings.append(f"host RAM unreadable ({error})")
    if host_ram is None:
        warnings.append("host RAM unknown (no /proc/meminfo)")
    return Detection(
        source=source,
        gpus=tuple(gpus),
        gpu_count=count,
        driver_version=driver,
        cuda_driver_version=cuda,
        host_ram=host_ram,
        warnings=tuple(warnings),
    )
