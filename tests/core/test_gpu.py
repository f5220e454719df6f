"""GPU and host-RAM detection: recorded driver output, a real nvidia-smi stand-in, the real GPU."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest

from zr4.core.gpu import (
    GpuInfo,
    cuda_version_from_int,
    detect,
    gpu_count_from_env,
    parse_cgroup_limit,
    parse_meminfo,
    parse_smi_cuda_version,
    parse_smi_query,
    read_host_ram,
)

# What `nvidia-smi --query-gpu=index,name,memory.total,memory.free,compute_cap,driver_version
# --format=csv,noheader,nounits` printed on the H200 used for bench/results/planner.md, plus a
# consumer card line in the same format.
SMI_QUERY = """\
0, NVIDIA H200, 143771, 143156, 9.0, 580.159.04
1, NVIDIA GeForce RTX 4080 SUPER, 16376, 15890, 8.9, 580.159.04
"""
SMI_BANNER = "| NVIDIA-SMI 580.159.04             Driver Version: 580.159.04     CUDA Version: 13.0     |"
MEMINFO = "MemTotal:       131980288 kB\nMemFree:        129648000 kB\nMemAvailable:   131458048 kB\n"


class BrokenNvml:
    """An NVML binding whose library is missing, as on a machine without the NVIDIA driver."""

    class NVMLError_LibraryNotFound(Exception):
        pass

    def nvmlInit(self) -> None:
        raise self.NVMLError_LibraryNotFound("NVML Shared Library Not Found")


def fake_root(tmp_path: Path, meminfo: str = MEMINFO, cgroup_max: str | None = None) -> Path:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "meminfo").write_text(meminfo)
    if cgroup_max is not None:
        (tmp_path / "sys" / "fs" / "cgroup").mkdir(parents=True)
        (tmp_path / "sys" / "fs" / "cgroup" / "memory.max").write_text(cgroup_max)
    return tmp_path


def smi_script(tmp_path: Path, query_output: str, exit_code: int = 0) -> Path:
    """A real executable named nvidia-smi that prints recorded output."""
    folder = tmp_path / "bin"
    folder.mkdir()
    script = folder / "nvidia-smi"
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        f"if any(a.startswith('--query-gpu') for a in sys.argv[1:]):\n"
        f"    sys.stdout.write({query_output!r})\n"
        f"else:\n"
        f"    print({SMI_BANNER!r})\n"
        f"sys.exit({exit_code})\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return folder


def test_parse_smi_query_reads_every_gpu() -> None:
    gpus, driver, warnings = parse_smi_query(SMI_QUERY)
    assert gpus == [
        GpuInfo(0, "NVIDIA H200", 143771, 143156, "9.0"),
        GpuInfo(1, "NVIDIA GeForce RTX 4080 SUPER", 16376, 15890, "8.9"),
    ]
    assert driver == "580.159.04"
    assert warnings == []


def test_parse_smi_query_reports_unreadable_lines_and_missing_fields() -> None:
    gpus, _, warnings = parse_smi_query("garbage line\n0, Tesla T4, 15360, [N/A], [N/A], [N/A]\n")
    assert gpus == [GpuInfo(0, "Tesla T4", 15360, None, None)]
    assert len(warnings) == 1 and "garbage line" in warnings[0]


def test_cuda_versions() -> None:
    assert parse_smi_cuda_version(SMI_BANNER) == "13.0"
    assert parse_smi_cuda_version("no banner") is None
    assert cuda_version_from_int(12040) == "12.4"
    assert cuda_version_from_int(13000) == "13.0"


def test_meminfo_and_cgroup_limits() -> None:
    assert parse_meminfo(MEMINFO) == (128887, 128377)
    assert parse_cgroup_limit("max\n") is None
    assert parse_cgroup_limit("34359738368\n") == 32768
    assert parse_cgroup_limit("9223372036854771712") is None  # cgroup v1 "unlimited"


def test_host_ram_is_capped_by_the_container_limit(tmp_path: Path) -> None:
    ram = read_host_ram(fake_root(tmp_path, cgroup_max="34359738368"))
    assert ram is not None
    assert ram.total_mib == 32768 and ram.cgroup_limit_mib == 32768
    assert ram.available_mib == 32768  # MemAvailable capped by the limit too


def test_runpod_gpu_count_wins_and_is_reported() -> None:
    assert gpu_count_from_env({}, 1) == (1, [])
    assert gpu_count_from_env({"RUNPOD_GPU_COUNT": "1"}, 1) == (1, [])
    count, warnings = gpu_count_from_env({"RUNPOD_GPU_COUNT": "2"}, 1)
    assert count == 2 and "RUNPOD_GPU_COUNT=2" in warnings[0]
    count, warnings = gpu_count_from_env({"RUNPOD_GPU_COUNT": "two"}, 1)
    assert count == 1 and "not a number" in warnings[0]


def test_broken_nvml_falls_back_to_nvidia_smi(tmp_path: Path) -> None:
    folder = smi_script(tmp_path, SMI_QUERY)
    detection = detect(environ={"PATH": str(folder)}, nvml=BrokenNvml(), root=fake_root(tmp_path))
    assert detection.source == "nvidia-smi"
    assert [gpu.name for gpu in detection.gpus] == ["NVIDIA H200", "NVIDIA GeForce RTX 4080 SUPER"]
    assert detection.gpu_count == 2
    assert detection.driver_version == "580.159.04"
    assert detection.cuda_driver_version == "13.0"
    assert detection.host_ram is not None and detection.host_ram.total_mib == 128887
    assert any("NVML unavailable" in warning for warning in detection.warnings)


def test_failing_nvidia_smi_means_cpu_only_not_a_crash(tmp_path: Path) -> None:
    folder = smi_script(tmp_path, "", exit_code=9)
    detection = detect(
        environ={"PATH": str(folder), "RUNPOD_GPU_COUNT": "1"}, nvml=BrokenNvml(), root=fake_root(tmp_path)
    )
    assert detection.source == "none"
    assert detection.gpus == ()
    assert detection.primary is None
    assert detection.gpu_count == 1  # what RunPod says, with a warning that none was seen
    assert any("nvidia-smi failed" in warning for warning in detection.warnings)


def test_no_driver_at_all_is_cpu_only(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    detection = detect(environ={"PATH": str(empty)}, nvml=BrokenNvml(), root=tmp_path)
    assert detection.source == "none"
    assert detection.gpu_count == 0
    assert detection.host_ram is None
    assert any("CPU-only" in warning for warning in detection.warnings)
    assert detection.to_dict()["gpus"] == []


@pytest.mark.gpu
def test_real_gpu_through_nvml_matches_nvidia_smi() -> None:
    nvml = detect()
    assert nvml.source == "nvml", nvml.warnings
    assert nvml.gpus and nvml.gpus[0].total_mib > 1024
    assert nvml.gpus[0].compute_capability is not None
    assert nvml.cuda_driver_version is not None
    smi = detect(nvml=BrokenNvml())
    assert smi.source == "nvidia-smi"
    assert [gpu.name for gpu in smi.gpus] == [gpu.name for gpu in nvml.gpus]
    assert [gpu.total_mib for gpu in smi.gpus] == [gpu.total_mib for gpu in nvml.gpus]
    assert smi.gpus[0].compute_capability == nvml.gpus[0].compute_capability
    assert smi.driver_version == nvml.driver_version
    assert smi.cuda_driver_version == nvml.cuda_driver_version
