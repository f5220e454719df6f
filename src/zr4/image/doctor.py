"""`zr4 doctor`: check the installed stack against the profile and the lock.

The facts come from ComfyUI's own interpreter (``$COMFYUI_PYTHON``, a different venv from zr4's):
``doctor_probe.py`` runs there and prints JSON; ComfyUI itself is started once with
``main.py --cpu --quick-test-for-ci`` (it loads every custom node, prints its "Import times for
custom nodes" block, then exits) to see that ComfyUI and every pinned node pack import.
The comparisons are pure functions of those facts, so they are tested on real interpreters and on
recorded facts alike.

``--build-time`` (the Dockerfile's last stage): versions, compiled ops, providers, imports, flags.
``--gpu`` (on a pod): CUDA, the card's compute capability vs the build's arches, and a matmul, a
flash-attn call and an mmcv CUDA op run on the GPU.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from zr4.core import image_layout
from zr4.core.baked_profile import baked_profile_path
from zr4.errors import Zr4Error
from zr4.paths import data_dir
from zr4.profile.models import Profile

Status = Literal["ok", "FAIL", "skip"]
PROBE = Path(__file__).with_name("doctor_probe.py")
MARKER = "@@zr4-doctor@@"
# ComfyUI's custom-node summary line: "   0.3 seconds (IMPORT FAILED): /opt/ComfyUI/custom_nodes/X"
# (nodes.py, init_external_custom_nodes).
_IMPORT_LINE = re.compile(r"^\s*[\d.]+ seconds(?P<failed> \(IMPORT FAILED\))?: (?P<path>.+?)\s*$")
# Distributions whose version gets its own row (the rest of the lock is one row).
KEY_DISTS = (
    "torch",
    "torchvision",
    "torchaudio",
    "numpy",
    "transformers",
    "huggingface-hub",
    "gguf",
    "onnxruntime-gpu",
    "xformers",
)
# The native pose backend's packages: rows only where the profile runs it (an ONNX image's lock
# leaves them out, so its doctor neither asks for them nor checks them).
MMPOSE_DISTS = ("mmengine", "mmdet", "mmpose")
COMFYUI_TEST_TIMEOUT_S = 900.0


class DoctorError(Zr4Error):
    """The doctor cannot run at all (no ComfyUI interpreter, unreadable profile or lock)."""


@dataclass(frozen=True)
class Row:
    check: str
    expected: str
    found: str
    status: Status


def canonical(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path) -> dict[str, str]:
    """``name==version`` pins of a uv/pip-compile lock (hash lines and comments ignored)."""
    pins: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise DoctorError(f"cannot read the lock {path}: {error.strerror}") from None
    for line in text.splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)", line.strip())
        if match:
            pins[canonical(match.group(1))] = match.group(2)
    return pins


def default_lock(profile: Profile) -> Path:
    return data_dir() / "locks" / f"{profile.lock_name}.txt"


def base_version(version: str) -> str:
    """``2.5.1+cu124`` -> ``2.5.1`` (the local label is checked separately, as the CUDA build)."""
    return version.split("+", 1)[0]


def cuda_of(torch_cuda: str) -> str:
    """``cu124`` -> ``12.4``."""
    digits = torch_cuda.removeprefix("cu")
    return f"{digits[:-1]}.{digits[-1]}"


# --- what to ask the probe ------------------------------------------------------------------


def probe_request(profile: Profile, lock: Mapping[str, str], comfyui_dir: Path, gpu: bool) -> dict[str, Any]:
    imports = ["torch", "gguf", "onnxruntime"]
    features = profile.features
    if features.pose_backend == "mmpose":
        imports += ["mmcv", "mmcv.ops", "mmdet", "mmpose"]
    if features.flash_attn:
        imports.append("flash_attn")
    if features.xformers:
        imports.append("xformers")
    wanted = [*KEY_DISTS, *(MMPOSE_DISTS if features.pose_backend == "mmpose" else ()), "flash-attn"]
    if features.pose_backend == "mmpose":
        wanted.append("mmcv")
    dists = sorted({*lock, *(canonical(d) for d in wanted)})
    return {
        "dists": dists,
        "imports": imports,
        "comfyui_dir": str(comfyui_dir),
        "flag_vectors": planner_flag_vectors(profile.comfyui.version),
        "gpu": gpu,
    }


def planner_flag_vectors(comfyui_version: str) -> list[list[str]]:
    """Every flag the planner may emit, with a valid value where it takes one."""
    from zr4.core.comfy_flags import flag_set

    flags = flag_set(comfyui_version)
    vectors: list[list[str]] = []
    for name in sorted(flags.emittable):
        spec = flags.flags[name]
        if spec.takes in ("one", "many"):
            value = spec.choices[0] if spec.choices else ("1" if spec.value_type == "int" else "1.0")
            vectors.append([name, value])
        else:
            vectors.append([name])
    return vectors


def run_probe(python: str, request: Mapping[str, Any], timeout_s: float = 600.0) -> dict[str, Any]:
    try:
        result = subprocess.run(
            [python, str(PROBE), json.dumps(request)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except FileNotFoundError:
        raise DoctorError(f"ComfyUI's interpreter {python} ($COMFYUI_PYTHON) does not exist") from None
    except subprocess.TimeoutExpired:
        raise DoctorError(f"the environment probe in {python} did not finish in {timeout_s:.0f} s") from None
    marker = result.stdout.rfind(MARKER)
    if marker < 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise DoctorError(f"the environment probe in {python} failed: {' | '.join(tail) or 'no output'}")
    facts: dict[str, Any] = json.loads(result.stdout[marker + len(MARKER) :])
    return facts


def quick_test_argv(scratch: Path) -> list[str]:
    """ComfyUI's own CI start: load everything on the CPU, then exit.

    Everything ComfyUI would write goes to ``scratch`` or memory, not into the image: the doctor
    runs as root during the build, and root-owned ``user/`` files (its SQLite database, settings)
    would be read-only for the image's user later. ``--input-directory`` too: v0.7.0's Load3D
    node creates ``input/3d`` when it is imported. All five flags are in ComfyUI's
    ``comfy/cli_args.py`` (data/comfyui_flags.yaml).
    """
    return [
        "main.py",
        "--cpu",
        "--quick-test-for-ci",
        "--output-directory",
        str(scratch / "output"),
        "--temp-directory",
        str(scratch / "temp"),
        "--input-directory",
        str(scratch / "input"),
        "--user-directory",
        str(scratch / "user"),
        "--database-url",
        "sqlite:///:memory:",
    ]


def comfyui_quick_test(
    python: str, comfyui_dir: Path, timeout_s: float = COMFYUI_TEST_TIMEOUT_S
) -> tuple[int, str]:
    """Start ComfyUI once on the CPU with --quick-test-for-ci; (exit code, combined output)."""
    with tempfile.TemporaryDirectory(prefix="zr4-doctor-") as scratch:
        # ComfyUI's argparse checks that --user-directory exists (is_valid_directory) and exits 2
        # otherwise; the other folders it creates itself.
        (Path(scratch) / "user").mkdir()
        try:
            result = subprocess.run(
                [python, *quick_test_argv(Path(scratch))],
                cwd=str(comfyui_dir),
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
            )
        except FileNotFoundError:
            return 127, f"{python} or {comfyui_dir}/main.py not found"
        except subprocess.TimeoutExpired:
            return 124, f"ComfyUI did not finish --quick-test-for-ci in {timeout_s:.0f} s"
    return result.returncode, result.stdout + result.stderr


def node_imports(output: str) -> dict[str, bool]:
    """Custom node pack folder name -> imported, from ComfyUI's "Import times" block."""
    packs: dict[str, bool] = {}
    for line in output.splitlines():
        match = _IMPORT_LINE.match(line)
        if match:
            name = Path(match.group("path").rstrip("/\\")).name.removesuffix(".py")
            packs[name] = match.group("failed") is None
    return packs


# --- pure comparisons -----------------------------------------------------------------------


def _row(check: str, expected: str, found: str | None, ok: bool) -> Row:
    return Row(check, expected, found if found is not None else "not installed", "ok" if ok else "FAIL")


def version_row(check: str, expected: str | None, found: str | None) -> Row:
    if expected is None:
        return Row(check, "(not pinned)", found or "not installed", "skip")
    return _row(check, expected, found, found is not None and base_version(found) == base_version(expected))


def build_time_rows(profile: Profile, lock: Mapping[str, str], facts: Mapping[str, Any]) -> list[Row]:
    stack, features = profile.stack, profile.features
    dists: Mapping[str, str | None] = {canonical(k): v for k, v in facts.get("dists", {}).items()}
    imports: Mapping[str, Mapping[str, Any]] = facts.get("imports", {})
    rows: list[Row] = []

    python = str(facts.get("python", ""))
    rows.append(
        _row("python", stack.python, python, python == stack.python or python.startswith(stack.python + "."))
    )

    torch = facts.get("torch", {})
    torch_version = torch.get("version")
    rows.append(version_row("torch", lock.get("torch", stack.torch), torch_version))
    expected_cuda = cuda_of(stack.torch_cuda)
    found_cuda = torch.get("cuda") if "error" not in torch else None
    rows.append(
        _row(
            "torch CUDA build",
            expected_cuda,
            found_cuda or ("CPU-only build" if torch_version else None),
            found_cuda == expected_cuda,
        )
    )

    for name in (*KEY_DISTS, *(MMPOSE_DISTS if features.pose_backend == "mmpose" else ())):
        key = canonical(name)
        if key == "torch":
            continue
        expected = lock.get(key)
        if expected is None and dists.get(key) is None:
            continue  # neither pinned nor installed: not part of this stack
        rows.append(version_row(key, expected, dists.get(key)))

    wrong = sorted(
        f"{name} {dists.get(name) or 'missing'} (lock {version})"
        for name, version in lock.items()
        if dists.get(name) is None or base_version(str(dists.get(name))) != base_version(version)
    )
    found_text = (
        "all match"
        if not wrong
        else f"{len(wrong)} differ: " + ", ".join(wrong[:6]) + (" ..." if len(wrong) > 6 else "")
    )
    rows.append(
        Row(f"lock ({len(lock)} pins)", "installed as locked", found_text, "ok" if not wrong else "FAIL")
    )

    def import_row(module: str, check: str, expected: str = "imports") -> Row:
        result = imports.get(module)
        if result is None:
            return Row(check, expected, "not checked", "skip")
        if result.get("ok"):
            return Row(check, expected, f"imports {result.get('version') or ''}".strip(), "ok")
        return Row(check, expected, str(result.get("error", "import failed")), "FAIL")

    if features.pose_backend == "mmpose":
        rows.append(version_row("mmcv", stack.mmcv, dists.get("mmcv")))
        rows.append(import_row("mmcv.ops", "mmcv.ops (compiled CUDA ops)"))
        rows.append(import_row("mmdet", "mmdet imports"))
        rows.append(import_row("mmpose", "mmpose imports"))
    else:
        rows.append(Row("mmcv.ops", "not needed (pose backend onnx)", "not checked", "skip"))
    if features.flash_attn:
        rows.append(version_row("flash-attn", stack.flash_attn, dists.get("flash-attn")))
        rows.append(import_row("flash_attn", "flash_attn imports"))
    else:
        rows.append(Row("flash_attn", "not enabled", dists.get("flash-attn") or "not installed", "skip"))
    if features.xformers:
        rows.append(import_row("xformers", "xformers imports"))
    rows.append(import_row("gguf", "gguf imports"))

    ort = facts.get("onnxruntime", {})
    providers = ort.get("providers")
    if providers is None:
        rows.append(
            Row(
                "onnxruntime providers",
                "CUDAExecutionProvider",
                f"not importable: {ort.get('error', '?')}",
                "FAIL",
            )
        )
    else:
        rows.append(
            _row(
                "onnxruntime providers",
                "CUDAExecutionProvider",
                ", ".join(providers) or "none",
                "CUDAExecutionProvider" in providers,
            )
        )

    rows += onnxruntime_cuda_rows(facts)

    flag_results = facts.get("comfy_flags", {})
    if "error" in flag_results:
        rows.append(
            Row(
                "planner flags vs comfy/cli_args.py",
                "accepted",
                f"parser not importable: {flag_results['error']}",
                "FAIL",
            )
        )
    elif "results" in flag_results:
        rejected = {vector: why for vector, why in flag_results["results"].items() if why}
        count = len(flag_results["results"])
        found = (
            f"all {count} accepted" if not rejected else "; ".join(f"{v}: {w}" for v, w in rejected.items())
        )
        rows.append(
            Row(
                "planner flags vs comfy/cli_args.py",
                f"{count} flags accepted",
                found,
                "FAIL" if rejected else "ok",
            )
        )
    return rows


def onnxruntime_cuda_rows(facts: Mapping[str, Any]) -> list[Row]:
    """onnxruntime's CUDA provider library, loaded after ``import torch`` as ComfyUI loads it.

    The runtime base (``nvidia/cuda:*-base-*``) carries no cuBLAS, cuFFT, cuRAND or cuDNN: the provider
    finds them only because torch has already loaded them from its nvidia-* wheels. Loading it needs no
    GPU, so the build proves the base is enough.
    """
    result = facts.get("onnxruntime_cuda")
    check = "onnxruntime CUDA provider loads"
    expected = "CUDA/cuDNN libs resolve after import torch"
    if result is None:
        return []
    if result.get("loads"):
        return [Row(check, expected, "loaded", "ok")]
    if "missing" in result:
        return [Row(check, expected, f"no {Path(result['missing']).name} (a CPU-only build)", "FAIL")]
    return [Row(check, expected, str(result.get("error", "not loadable")), "FAIL")]


def comfyui_rows(profile: Profile, code: int, output: str) -> list[Row]:
    version = profile.comfyui.version
    tail = " | ".join(line for line in output.strip().splitlines()[-2:])
    rows = [
        _row(
            f"ComfyUI {version} starts (--cpu --quick-test-for-ci)",
            "exit 0",
            "exit 0" if code == 0 else f"exit {code}: {tail}",
            code == 0,
        )
    ]
    packs = node_imports(output)
    for node in profile.comfyui.custom_nodes:
        imported = packs.get(node.name)
        check = f"custom node {node.name}" + (" (optional)" if node.optional else "")
        found = "imported" if imported else "IMPORT FAILED" if imported is False else "not loaded"
        status: Status = "ok" if imported else "skip" if node.optional else "FAIL"
        rows.append(Row(check, f"imports @ {node.commit[:10]}", found, status))
    return rows


def gpu_rows(profile: Profile, facts: Mapping[str, Any]) -> list[Row]:
    gpu = facts.get("gpu", {})
    if "error" in gpu:
        return [Row("CUDA available", "yes", f"torch unusable: {gpu['error']}", "FAIL")]
    if not gpu.get("available"):
        return [Row("CUDA available", "yes", "no (torch.cuda.is_available() is False)", "FAIL")]
    rows = [Row("CUDA available", "yes", f"yes: {gpu.get('device', '?')}", "ok")]
    capability = str(gpu.get("capability"))
    arches = [arch.split("+")[0] for arch in profile.gpu.cuda_arch_list.split(";")]
    sm = "sm_" + capability.replace(".", "")
    torch_arches = facts.get("torch", {}).get("arch_list", [])
    rows.append(
        _row(
            "compute capability vs torch's arch list",
            sm,
            f"{sm} in {' '.join(torch_arches)}"
            if sm in torch_arches
            else f"{sm} not in {' '.join(torch_arches) or '?'}",
            sm in torch_arches,
        )
    )
    compiled = profile.features.pose_backend == "mmpose" or profile.features.flash_attn
    if compiled:
        rows.append(
            _row(
                "compute capability vs the build's arches", " ".join(arches), capability, capability in arches
            )
        )
    matmul = gpu.get("matmul", {})
    if "error" in matmul:
        rows.append(Row("matmul 1024x1024 fp32 on the GPU", "runs", matmul["error"], "FAIL"))
    else:
        error = float(matmul.get("max_abs_error", 1e9))
        rows.append(
            _row(
                "matmul 1024x1024 fp32 on the GPU",
                "max error < 0.05 vs CPU fp64",
                f"{error:.2e} in {matmul.get('ms', 0):.1f} ms",
                error < 0.05,
            )
        )

    def kernel_row(key: str, check: str, enabled: bool, ok_of: Any) -> Row:
        result = gpu.get(key, {})
        if "missing" in result:
            return Row(
                check, "runs" if enabled else "not enabled", "not installed", "FAIL" if enabled else "skip"
            )
        if "error" in result:
            return Row(check, "runs", result["error"], "FAIL")
        ok, found = ok_of(result)
        return Row(check, "runs", found, "ok" if ok else "FAIL")

    rows.append(
        kernel_row(
            "flash_attn",
            "flash_attn_func fp16 on the GPU",
            profile.features.flash_attn,
            lambda r: (r["max_abs_error"] < 1e-2, f"max error {r['max_abs_error']:.1e} vs SDPA"),
        )
    )
    rows.append(
        kernel_row(
            "mmcv_nms",
            "mmcv.ops.nms on the GPU",
            profile.features.pose_backend == "mmpose",
            lambda r: (r["kept"] == [0, 2], f"kept boxes {r['kept']} (expected [0, 2])"),
        )
    )
    return rows


# --- the edges ------------------------------------------------------------------------------


def run_doctor(
    profile: Profile,
    *,
    python: str,
    comfyui_dir: Path,
    lock_path: Path | None = None,
    build_time: bool = True,
    gpu: bool = False,
) -> list[Row]:
    lock = read_lock(lock_path or default_lock(profile))
    facts = run_probe(python, probe_request(profile, lock, comfyui_dir, gpu))
    rows: list[Row] = []
    if build_time:
        rows += build_time_rows(profile, lock, facts)
        code, output = comfyui_quick_test(python, comfyui_dir)
        rows += comfyui_rows(profile, code, output)
    if gpu:
        rows += gpu_rows(profile, facts)
    return rows


def format_table(rows: Sequence[Row]) -> list[str]:
    headers = ("check", "expected", "found", "")
    widths = [max(len(headers[i]), *(len(_cells(row)[i]) for row in rows)) for i in range(3)]
    widths = [min(width, 60) for width in widths]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, [*widths, 4], strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in [*widths, 4]))
    for row in rows:
        cells = _cells(row)
        lines.append("  ".join(c.ljust(w) for c, w in zip(cells, [*widths, 4], strict=True)).rstrip())
    failed = sum(1 for row in rows if row.status == "FAIL")
    lines.append(f"{len(rows)} checks: {len(rows) - failed} ok or skipped, {failed} failed")
    return lines


def _cells(row: Row) -> tuple[str, str, str, str]:
    return (row.check, row.expected, row.found, row.status)


def settings_from_env(environ: Mapping[str, str] | None = None) -> tuple[Path, str, Path]:
    """(profile path, ComfyUI python, ComfyUI folder) from the image's environment."""
    env = os.environ if environ is None else environ
    return (
        baked_profile_path(env),
        env.get("COMFYUI_PYTHON") or image_layout.COMFYUI_PYTHON,
        Path(env.get("COMFYUI_DIR") or image_layout.COMFYUI_DIR),
    )
