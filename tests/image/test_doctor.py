"""`zr4 doctor --build-time` against REAL virtual environments built in the test.

Each test makes a venv (uv) and installs a few tiny wheels built here (the names, versions and the
module attributes the doctor reads: ``torch.__version__``, ``torch.version.cuda``,
``onnxruntime.get_available_providers()``, an ``mmcv.ops`` that fails to import ...), puts the
stand-in ComfyUI (tests/support/fake_comfyui.py) next to a ``comfy/cli_args.py`` holding its argparse
parser and one folder per pinned custom node, then runs the doctor. The GPU rows are checked on
recorded probe facts here; the real GPU run is in bench/results/doctor.md.

onnxruntime's CUDA provider is a real shared object compiled here (gcc) that needs a library of a
soname found on no linker path, shipped where torch's nvidia-* wheels put theirs; the stand-in torch
loads it at import as the real one does, so the dynamic loader itself decides the provider's row.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from zr4.cli.start import doctor
from zr4.image.doctor import Row, format_table, gpu_rows, node_imports, read_lock, run_doctor
from zr4.profile import Profile, load_profile

SUPPORT = Path(__file__).resolve().parents[1] / "support"
UV = shutil.which("uv")
pytestmark = pytest.mark.skipif(UV is None, reason="uv is needed to make the test venvs")

# The ONNX pose backend's lock: no mmengine, mmdet or mmpose (data/locks/cu124-torch2.5.1.txt).
LOCK = """\
# a small lock in uv's format
gguf==0.17.1 \\
    --hash=sha256:0000000000000000000000000000000000000000000000000000000000000000
onnxruntime-gpu==1.23.2
    # via -r requirements.in
torch==2.5.1
"""
MMPOSE_LOCK = LOCK + "mmdet==3.3.0\nmmengine==0.10.7\nmmpose==1.3.2\n"

# The soname of the stand-in CUDA library the provider needs: found on no machine's linker path.
CUDA_LIB_SONAME = "libzr4probe_cublasLt.so.12"
CUDA_LIB_PATH = "nvidia/cublas/lib/" + CUDA_LIB_SONAME
TORCH_CUDA = {"torch/version.py": "cuda = '12.4'\n"} | {
    "torch/cuda.py": (
        "def is_available():\n    return False\n\n"
        "def get_arch_list():\n    return ['sm_80', 'sm_86', 'sm_89', 'sm_90']\n"
    )
}
# As PyPI's torch does (its libraries' RPATH names site-packages/nvidia/*/lib), load the CUDA library
# from the nvidia wheel's folder at import.
TORCH = TORCH_CUDA | {
    "torch/__init__.py": (
        "import ctypes, os\n"
        f"ctypes.CDLL(os.path.join(os.path.dirname(os.path.dirname(__file__)), {CUDA_LIB_PATH!r}))\n"
        "from torch import cuda, version\n__version__ = '2.5.1+cu124'\n"
    )
}
# A torch that loads no CUDA library of its own (a build that expects them from the base image).
TORCH_WITHOUT_WHEEL_LIBS = TORCH_CUDA | {
    "torch/__init__.py": "from torch import cuda, version\n__version__ = '2.5.1+cu124'\n"
}
ORT_INIT = (
    "__version__ = '1.23.2'\n\n"
    "def get_available_providers():\n"
    "    return ['TensorrtExecutionProvider', 'CUDAExecutionProvider', 'CPUExecutionProvider']\n"
)
ORT_CPU = {"onnxruntime/__init__.py": "def get_available_providers():\n    return ['CPUExecutionProvider']\n"}


def compile_library(folder: Path, name: str, soname: str, needs: Path | None = None) -> bytes:
    """A real ELF shared object (gcc), optionally NEEDing ``needs`` by its soname, with no RPATH."""
    source = folder / f"{name}.c"
    source.write_text(f"int {name.replace('.', '_').replace('-', '_')}_probe(void) {{ return 1; }}\n")
    out = folder / name
    command = ["gcc", "-shared", "-fPIC", f"-Wl,-soname,{soname}", "-o", str(out), str(source)]
    if needs is not None:
        command += ["-Wl,--no-as-needed", f"-L{needs.parent}", f"-l:{needs.name}"]
    subprocess.run(command, check=True)
    return out.read_bytes()


@pytest.fixture(scope="module")
def cuda_wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str | bytes]]:
    """The nvidia-* wheel's library and onnxruntime's CUDA provider that needs it."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the stand-in CUDA provider library")
    folder = tmp_path_factory.mktemp("elf")
    cublas = compile_library(folder, CUDA_LIB_SONAME, CUDA_LIB_SONAME)
    provider = compile_library(
        folder,
        "libonnxruntime_providers_cuda.so",
        "libonnxruntime_providers_cuda.so",
        folder / CUDA_LIB_SONAME,
    )
    return {
        "nvidia": {CUDA_LIB_PATH: cublas},
        "ort": {
            "onnxruntime/__init__.py": ORT_INIT,
            "onnxruntime/capi/libonnxruntime_providers_cuda.so": provider,
        },
    }


def make_wheel(folder: Path, dist: str, version: str, files: dict[str, str | bytes]) -> Path:
    """A minimal, valid py3-none-any wheel (METADATA, WHEEL, RECORD with hashes)."""
    stem = dist.replace("-", "_")
    info = f"{stem}-{version}.dist-info"
    entries = dict(files)
    entries[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n"
    entries[f"{info}/WHEEL"] = (
        "Wheel-Version: 1.0\nGenerator: zr4-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = []
    for path, text in entries.items():
        data = text if isinstance(text, bytes) else text.encode()
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    entries[f"{info}/RECORD"] = "\n".join(record) + "\n"
    wheel = folder / f"{stem}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in entries.items():
            archive.writestr(path, text)
    return wheel


def make_venv(root: Path, packages: list[tuple[str, str, dict[str, str | bytes]]]) -> str:
    assert UV is not None
    venv = root / "venv"
    env = {**os.environ, "UV_CACHE_DIR": str(root / "uv-cache"), "UV_NO_CONFIG": "1"}
    subprocess.run([UV, "venv", "-q", "--python", sys.executable, str(venv)], check=True, env=env)
    wheels = root / "wheels"
    wheels.mkdir()
    built = [str(make_wheel(wheels, dist, version, files)) for dist, version, files in packages]
    python = str(venv / "bin" / "python")
    subprocess.run(
        [UV, "pip", "install", "-q", "--python", python, "--offline", "--no-index", "--no-deps", *built],
        check=True,
        env=env,
    )
    return python


def make_comfyui(
    root: Path, profile: Profile, broken_node: str | None = None, drop_flag: str | None = None
) -> Path:
    comfy = root / "ComfyUI"
    (comfy / "comfy").mkdir(parents=True)
    shutil.copy(SUPPORT / "fake_comfyui.py", comfy / "main.py")
    (comfy / "comfy" / "__init__.py").write_text("")
    # ComfyUI's comfy/cli_args.py defines `parser` and parses [] at import unless main.py enabled parsing.
    exclude = f"frozenset({{{drop_flag!r}}})" if drop_flag else "frozenset()"
    (comfy / "comfy" / "cli_args.py").write_text(
        f"from main import build_parser\nparser = build_parser({exclude})\nargs = parser.parse_args([])\n"
    )
    for node in profile.comfyui.custom_nodes:
        pack = comfy / "custom_nodes" / node.name
        pack.mkdir(parents=True)
        body = "raise ImportError('No module named sageattention')\n" if node.name == broken_node else ""
        (pack / "__init__.py").write_text(body + "NODE_CLASS_MAPPINGS = {}\n")
    return comfy


def by_check(rows: list[Row]) -> dict[str, Row]:
    return {row.check: row for row in rows}


ONNX_PROFILE = ["features.pose_backend=onnx", "features.flash_attn=false", "features.xformers=false"]


def test_a_stack_installed_as_locked_passes(tmp_path: Path, cuda_wheels: dict) -> None:
    profile = load_profile("4080super", ONNX_PROFILE)
    python = make_venv(
        tmp_path,
        [("torch", "2.5.1+cu124", TORCH), ("nvidia-cublas-cu12", "12.4.5.8", cuda_wheels["nvidia"]),
         ("gguf", "0.17.1", {"gguf/__init__.py": ""}), ("onnxruntime-gpu", "1.23.2", cuda_wheels["ort"])],
    )  # fmt: skip
    (tmp_path / "lock.txt").write_text(LOCK)
    comfy = make_comfyui(tmp_path, profile)
    rows = run_doctor(profile, python=python, comfyui_dir=comfy, lock_path=tmp_path / "lock.txt")
    table = "\n".join(format_table(rows))
    assert all(row.status != "FAIL" for row in rows), table
    checks = by_check(rows)
    assert checks["python"].expected == "3.11" and checks["python"].found.startswith("3.11")
    assert (checks["torch"].expected, checks["torch"].found) == ("2.5.1", "2.5.1+cu124")
    assert (checks["torch CUDA build"].expected, checks["torch CUDA build"].found) == ("12.4", "12.4")
    assert checks["lock (3 pins)"].found == "all match"
    assert "CUDAExecutionProvider" in checks["onnxruntime providers"].found
    assert checks["onnxruntime CUDA provider loads"].found == "loaded"
    assert checks["planner flags vs comfy/cli_args.py"].status == "ok"
    assert checks["ComfyUI v0.7.0 starts (--cpu --quick-test-for-ci)"].found == "exit 0"
    for node in profile.comfyui.custom_nodes:
        assert (
            checks[f"custom node {node.name}" + (" (optional)" if node.optional else "")].found == "imported"
        )
    assert checks["mmcv.ops"].status == "skip" and checks["flash_attn"].status == "skip"
    # The ONNX image's doctor checks no OpenMMLab package: its lock has none.
    assert not {"mmengine", "mmdet", "mmpose", "mmdet imports"} & checks.keys()


def test_an_onnx_image_is_not_checked_for_mm_packages_even_where_installed(
    tmp_path: Path, cuda_wheels: dict
) -> None:
    profile = load_profile("4080super", ONNX_PROFILE)
    python = make_venv(
        tmp_path,
        [("torch", "2.5.1+cu124", TORCH), ("nvidia-cublas-cu12", "12.4.5.8", cuda_wheels["nvidia"]),
         ("gguf", "0.17.1", {"gguf/__init__.py": ""}), ("onnxruntime-gpu", "1.23.2", cuda_wheels["ort"]),
         ("mmdet", "3.2.0", {"mmdet/__init__.py": ""})],
    )  # fmt: skip
    (tmp_path / "lock.txt").write_text(LOCK)
    rows = run_doctor(
        profile, python=python, comfyui_dir=make_comfyui(tmp_path, profile), lock_path=tmp_path / "lock.txt"
    )
    assert all(row.status != "FAIL" for row in rows), "\n".join(format_table(rows))
    assert not any(row.check.startswith("mm") and row.check != "mmcv.ops" for row in rows)


def test_the_cuda_provider_fails_where_torch_brings_no_cuda_libraries(
    tmp_path: Path, cuda_wheels: dict
) -> None:
    """The nvidia-* wheel is installed, but nothing loads its library before onnxruntime's provider:
    on a base image without CUDA libraries the provider cannot load, and the build must say so."""
    profile = load_profile("4080super", ONNX_PROFILE)
    python = make_venv(
        tmp_path,
        [("torch", "2.5.1+cu124", TORCH_WITHOUT_WHEEL_LIBS),
         ("nvidia-cublas-cu12", "12.4.5.8", cuda_wheels["nvidia"]),
         ("gguf", "0.17.1", {"gguf/__init__.py": ""}), ("onnxruntime-gpu", "1.23.2", cuda_wheels["ort"])],
    )  # fmt: skip
    (tmp_path / "lock.txt").write_text(LOCK)
    rows = run_doctor(
        profile, python=python, comfyui_dir=make_comfyui(tmp_path, profile), lock_path=tmp_path / "lock.txt"
    )
    assert [row.check for row in rows if row.status == "FAIL"] == ["onnxruntime CUDA provider loads"]
    assert (
        f"{CUDA_LIB_SONAME}: cannot open shared object file"
        in by_check(rows)["onnxruntime CUDA provider loads"].found
    )


def test_wrong_and_missing_packages_fail_their_rows(tmp_path: Path) -> None:
    profile = load_profile(
        "4080super", ["features.pose_backend=onnx", "features.flash_attn=false"]
    )  # xformers on
    python = make_venv(
        tmp_path,
        [("torch", "2.5.1+cu124", TORCH_WITHOUT_WHEEL_LIBS), ("gguf", "0.16.0", {"gguf/__init__.py": ""}),
         ("onnxruntime-gpu", "1.23.2", ORT_CPU)],
    )  # fmt: skip
    (tmp_path / "lock.txt").write_text(LOCK)
    comfy = make_comfyui(
        tmp_path, profile, broken_node="ComfyUI-WanVideoWrapper", drop_flag="--disable-smart-memory"
    )
    rows = run_doctor(profile, python=python, comfyui_dir=comfy, lock_path=tmp_path / "lock.txt")
    checks = by_check(rows)
    failed = {row.check for row in rows if row.status == "FAIL"}
    assert failed == {
        "gguf",
        "lock (3 pins)",
        "xformers imports",
        "onnxruntime providers",
        "onnxruntime CUDA provider loads",
        "planner flags vs comfy/cli_args.py",
        "custom node ComfyUI-WanVideoWrapper",
    }, "\n".join(format_table(rows))
    assert (checks["gguf"].expected, checks["gguf"].found) == ("0.17.1", "0.16.0")
    assert "gguf 0.16.0 (lock 0.17.1)" in checks["lock (3 pins)"].found
    assert (
        checks["onnxruntime CUDA provider loads"].found
        == "no libonnxruntime_providers_cuda.so (a CPU-only build)"
    )
    assert "ModuleNotFoundError" in checks["xformers imports"].found
    assert checks["onnxruntime providers"].found == "CPUExecutionProvider"
    assert "--disable-smart-memory: " in checks["planner flags vs comfy/cli_args.py"].found
    assert checks["custom node ComfyUI-WanVideoWrapper"].found == "IMPORT FAILED"
    assert checks["torch"].status == "ok"


def test_mmcv_without_compiled_ops_fails_the_mmcv_ops_row(tmp_path: Path, cuda_wheels: dict) -> None:
    profile = load_profile(
        "4080super", ["features.pose_backend=mmpose", "features.flash_attn=false", "features.xformers=false"]
    )
    assert profile.features.pose_backend == "mmpose"
    mmcv_lite = {
        "mmcv/__init__.py": "__version__ = '2.1.0'\n",
        "mmcv/ops/__init__.py": "from mmcv import _ext  # noqa\n",
    }
    python = make_venv(
        tmp_path,
        [("torch", "2.5.1+cu124", TORCH), ("nvidia-cublas-cu12", "12.4.5.8", cuda_wheels["nvidia"]),
         ("gguf", "0.17.1", {"gguf/__init__.py": ""}), ("onnxruntime-gpu", "1.23.2", cuda_wheels["ort"]),
         ("mmcv", "2.1.0", mmcv_lite), ("mmdet", "3.3.0", {"mmdet/__init__.py": ""}),
         ("mmengine", "0.10.7", {"mmengine/__init__.py": ""}), ("mmpose", "1.3.2", {"mmpose/__init__.py": ""})],
    )  # fmt: skip
    (tmp_path / "lock.txt").write_text(MMPOSE_LOCK)
    comfy = make_comfyui(tmp_path, profile)
    rows = run_doctor(profile, python=python, comfyui_dir=comfy, lock_path=tmp_path / "lock.txt")
    checks = by_check(rows)
    assert [row.check for row in rows if row.status == "FAIL"] == ["mmcv.ops (compiled CUDA ops)"]
    assert "ImportError" in checks["mmcv.ops (compiled CUDA ops)"].found
    assert (checks["mmcv"].expected, checks["mmcv"].found, checks["mmcv"].status) == ("2.1.0", "2.1.0", "ok")
    assert checks["mmdet imports"].status == "ok"
    # The mmpose image's doctor checks each OpenMMLab package against its lock.
    assert [(checks[n].found, checks[n].status) for n in ("mmengine", "mmdet", "mmpose")] == [
        ("0.10.7", "ok"),
        ("3.3.0", "ok"),
        ("1.3.2", "ok"),
    ]


def test_doctor_command_prints_the_table_and_exits_1_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    profile = load_profile("4080super", ONNX_PROFILE)
    python = make_venv(tmp_path, [("torch", "2.5.1+cu124", TORCH_WITHOUT_WHEEL_LIBS)])
    (tmp_path / "lock.txt").write_text(LOCK)
    (tmp_path / "profile.json").write_text(profile.model_dump_json())
    comfy = make_comfyui(tmp_path, profile)
    monkeypatch.setenv("ZR4_PROFILE", str(tmp_path / "profile.json"))
    monkeypatch.setenv("COMFYUI_PYTHON", python)
    monkeypatch.setenv("COMFYUI_DIR", str(comfy))
    app = typer.Typer()
    app.command()(doctor)
    app.command("noop")(lambda: None)
    result = CliRunner().invoke(app, ["doctor", "--build-time", "--lock", str(tmp_path / "lock.txt")])
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["check", "expected", "found"]
    gguf = next(line for line in lines if line.startswith("gguf  "))
    assert gguf.split()[1:] == ["0.17.1", "not", "installed", "FAIL"]
    assert lines[-1].endswith("failed") and "checks:" in lines[-1]


def test_read_lock_and_node_import_lines() -> None:
    assert (
        read_lock(Path(__file__).parents[2] / "data" / "locks" / "cu124-torch2.5.1.txt")["torch"] == "2.5.1"
    )
    output = (
        "Import times for custom nodes:\n"
        "   0.0 seconds: /opt/ComfyUI/custom_nodes/websocket_image_save.py\n"
        "   0.4 seconds: /opt/ComfyUI/custom_nodes/ComfyUI-KJNodes\n"
        "   1.2 seconds (IMPORT FAILED): /opt/ComfyUI/custom_nodes/ComfyUI-WanVideoWrapper\n"
    )
    assert node_imports(output) == {
        "websocket_image_save": True,
        "ComfyUI-KJNodes": True,
        "ComfyUI-WanVideoWrapper": False,
    }


def test_gpu_rows_from_probe_facts() -> None:
    profile = load_profile("h100")
    facts = {
        "torch": {"arch_list": ["sm_80", "sm_86", "sm_89", "sm_90"]},
        "gpu": {
            "available": True,
            "device": "NVIDIA H100 80GB HBM3",
            "capability": "9.0",
            "matmul": {"max_abs_error": 0.0012, "ms": 0.3},
            "flash_attn": {"missing": "ModuleNotFoundError: No module named 'flash_attn'"},
            "mmcv_nms": {"missing": "ModuleNotFoundError: No module named 'mmcv'"},
        },
    }
    rows = by_check(gpu_rows(profile, facts))
    assert rows["CUDA available"].found == "yes: NVIDIA H100 80GB HBM3"
    assert rows["compute capability vs torch's arch list"].status == "ok"
    assert rows["matmul 1024x1024 fp32 on the GPU"].status == "ok"
    flash = rows["flash_attn_func fp16 on the GPU"]
    assert flash.found == "not installed"
    assert flash.status == ("FAIL" if profile.features.flash_attn else "skip")
    assert rows["mmcv.ops.nms on the GPU"].found == "not installed"
    assert gpu_rows(profile, {"gpu": {"available": False}})[0].status == "FAIL"


def test_the_quick_test_writes_nothing_into_the_image_and_uses_only_known_flags(tmp_path: Path) -> None:
    from zr4.core.comfy_flags import flag_set, split_args
    from zr4.image.doctor import quick_test_argv

    argv = quick_test_argv(tmp_path)
    assert argv[0] == "main.py"
    for flag in ("--output-directory", "--temp-directory", "--input-directory", "--user-directory"):
        assert argv[argv.index(flag) + 1].startswith(str(tmp_path))
    assert argv[argv.index("--database-url") + 1] == "sqlite:///:memory:"
    # Known to ComfyUI v0.7.0 (the --quick-test-for-ci refusal is for users' COMFYUI_ARGS only).
    split = split_args(argv[1:], flag_set("v0.7.0"))
    assert [r.tokens[0] for r in split.rejected] == ["--quick-test-for-ci"]
