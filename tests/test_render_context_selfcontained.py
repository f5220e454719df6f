"""The rendered build context stands on its own: zr4's wheel inside it, a lean stage graph, no named contexts.

Covers issue 10's seams: `COPY --from=zr4` (a named context) is gone, zr4's wheel is reproducible and
checked by sha256, the compile stages hold only torch + numpy from the lock, and the flash-attn arch
list names archs its setup.py compiles; the flash-attn release wheel is checked against a pinned sha256.
"""

from __future__ import annotations

import base64
import hashlib
import io
import subprocess
import zipfile
from pathlib import Path

import dockerfile
import pytest
import yaml

from zr4 import lock as locks
from zr4.compat import check_profile, flash_attn_cuda_archs, flash_attn_wheel_sha256, flash_attn_wheel_url
from zr4.paths import data_dir
from zr4.profile import bundled_profile_names, load_profile
from zr4.render import check_rendered, render_files, write_context
from zr4.render.wheel import SHA256_NAME, WHEEL_NAME, build_wheel, package_files


def rendered(name: str, overrides: tuple[str, ...] = ()) -> dict[str, bytes]:
    return {item.path: item.content for item in render_files(load_profile(name, list(overrides)))}


def stages(text: str) -> dict[str, list[dockerfile.Command]]:
    """Stage name -> its instructions (FROM included)."""
    out: dict[str, list[dockerfile.Command]] = {}
    current = ""
    for command in dockerfile.parse_string(text):
        if command.cmd == "FROM":
            current = command.value[-1] if len(command.value) == 3 else command.value[0]
            out[current] = []
        out[current].append(command)
    return out


def ancestry(graph: dict[str, list[dockerfile.Command]], stage: str) -> set[str]:
    """Every stage ``stage`` builds on or copies from, itself included."""
    seen: set[str] = set()
    todo = [stage]
    while todo:
        name = todo.pop()
        if name in seen or name not in graph:
            continue
        seen.add(name)
        for command in graph[name]:
            if command.cmd == "FROM":
                todo.append(command.value[0])
            for flag in command.flags:
                if flag.startswith("--from="):
                    todo.append(flag.split("=", 1)[1])
    return seen


def copied_files(graph: dict[str, list[dockerfile.Command]], names: set[str]) -> set[str]:
    return {
        source
        for name in names
        for command in graph[name]
        if command.cmd == "COPY" and not any(f.startswith("--from=") for f in command.flags)
        for source in command.value[:-1]
    }


@pytest.mark.parametrize("name", bundled_profile_names())
def test_no_named_build_context_anywhere(name: str) -> None:
    files = rendered(name)
    text = files["Dockerfile"].decode()
    graph = stages(text)
    for command in dockerfile.parse_string(text):
        for flag in command.flags:
            if flag.startswith("--from="):
                assert flag.split("=", 1)[1] in graph, f"{name}: {command.original}"
    compose = yaml.safe_load(files["docker-compose.yml"])
    assert "additional_contexts" not in compose["services"]["comfyui"]["build"]
    assert WHEEL_NAME in files and SHA256_NAME in files


def test_zr4_wheel_is_reproducible_and_checked_by_sha256() -> None:
    files = rendered("4080super")
    wheel = files[WHEEL_NAME]
    assert wheel == build_wheel(locks.requirement_lines(locks.runtime_requirements_text()))
    assert files[SHA256_NAME].decode() == f"{hashlib.sha256(wheel).hexdigest()}  {WHEEL_NAME}\n"
    archive = zipfile.ZipFile(io.BytesIO(wheel))
    names = archive.namelist()
    code = [name for name in names if not name.startswith("zr4-")]
    assert code == sorted(code) and names[-1].endswith(".dist-info/RECORD")  # a fixed order
    assert {info.date_time for info in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    for required in (
        "zr4/cli/main.py",
        "zr4/image/start.py",
        "zr4/_data/templates/Dockerfile.j2",
        "zr4/_data/profiles/4080super.yaml",
        "zr4/_data/data/models.yaml",
        "zr4/_data/hadolint.yaml",
    ):
        assert required in names, required
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]
    dist_info = f"zr4-{WHEEL_NAME.split('-')[1]}.dist-info"
    assert archive.read(f"{dist_info}/entry_points.txt") == b"[console_scripts]\nzr4 = zr4.cli.main:run\n"
    metadata = archive.read(f"{dist_info}/METADATA").decode()
    assert "Requires-Dist: typer>=0.29,<0.30" in metadata and "jinja2" not in metadata
    # RECORD lists every other file with its real hash, as installers expect.
    for line in archive.read(f"{dist_info}/RECORD").decode().splitlines()[:-1]:
        name, digest, size = line.split(",")
        content = archive.read(name)
        expected = base64.urlsafe_b64encode(hashlib.sha256(content).digest()).rstrip(b"=").decode()
        assert (digest, int(size)) == (f"sha256={expected}", len(content)), name
    assert {name for name, _ in package_files()} <= set(names)


def test_render_check_ignores_the_wheel_but_render_writes_it(tmp_path: Path) -> None:
    files = render_files(load_profile("4090"))
    write_context(files, tmp_path / "ctx")
    assert (tmp_path / "ctx" / WHEEL_NAME).is_file()
    (tmp_path / "ctx" / WHEEL_NAME).write_bytes(b"an older zr4")
    (tmp_path / "ctx" / SHA256_NAME).unlink()
    assert check_rendered(files, tmp_path / "ctx") == []


def test_dockerfile_installs_the_wheel_only_after_checking_its_hash() -> None:
    graph = stages(rendered("4080super")["Dockerfile"].decode())
    runs = [" ".join(c.value) for c in graph["zr4-venv"] if c.cmd == "RUN"]
    assert len(runs) == 1
    check = runs[0].index(f"sha256sum --check --strict {SHA256_NAME}")
    assert check < runs[0].index(f"uv pip install --no-deps /tmp/zr4/{WHEEL_NAME}")


MMPOSE = ("features.pose_backend=mmpose",)  # the pose backend that compiles mmcv


def test_stage_graph_keeps_compiles_and_zr4_off_the_full_lock() -> None:
    graph = stages(rendered("4080super", MMPOSE)["Dockerfile"].decode())
    for stage in ("mmcv-wheel", "zr4-venv", "comfyui-src", "builder"):
        assert "requirements.lock" not in copied_files(graph, ancestry(graph, stage)), stage
        assert "venv" not in ancestry(graph, stage), stage
    assert copied_files(graph, ancestry(graph, "mmcv-wheel")) == {"compile.lock"}
    assert "requirements.lock" in copied_files(graph, {"venv"})
    # MAX_JOBS is a real build ARG of the compile stage.
    assert [c.value for c in graph["compile"] if c.cmd == "ARG"] == [("MAX_JOBS=4",)]


def test_compile_lock_is_torch_and_numpy_and_survives_an_unrelated_bump() -> None:
    lock_text = (data_dir() / "locks" / "cu124-torch2.5.1.txt").read_text(encoding="utf-8")
    compile_lock = rendered("4080super", MMPOSE)["compile.lock"].decode()
    packages = locks.parse_lock(compile_lock)
    full = locks.parse_lock(lock_text)
    assert {"torch", "numpy", "sympy", "mpmath", "nvidia-cudnn-cu12", "triton"} <= packages.keys()
    assert "transformers" not in packages and "opencv-python" not in packages
    for name, package in packages.items():
        assert package == full[name], name  # the same pins and hashes as the stack's lock
    bumped = lock_text.replace("\ntransformers==", "\ntransformers==99.0.0.dev0+was-")
    assert bumped != lock_text
    assert locks.lock_subset(bumped, ("torch", "numpy")) == locks.lock_subset(lock_text, ("torch", "numpy"))


def test_a_profile_without_compiles_has_no_compile_lock() -> None:
    files = rendered("4090")  # onnx pose backend, flash-attn from the release wheel
    assert "compile.lock" not in files
    assert "compile.lock" not in files[".dockerignore"].decode()


@pytest.mark.parametrize(
    ("own", "extra", "cuda", "expected"),
    [
        ("8.9", [], "12.4.1", "80"),  # sm_80 code runs on every 8.x card; "89" adds no -gencode
        ("8.9", ["8.6"], "12.4.1", "80"),
        ("8.0", ["9.0"], "12.4.1", "80;90"),
        ("9.0", ["9.0+PTX"], "12.4.1", "90"),
        ("12.0", [], "12.4.1", ""),  # sm_120 needs nvcc 12.8 in setup.py
        ("12.0", [], "12.8.1", "120"),
        ("7.5", [], "12.4.1", ""),
    ],
)
def test_flash_attn_arch_list_names_what_its_setup_py_compiles(
    own: str, extra: list[str], cuda: str, expected: str
) -> None:
    profile = load_profile("4080super")
    gpu = profile.gpu.model_copy(update={"compute_capability": own, "extra_cuda_arches": extra})
    stack = profile.stack.model_copy(update={"cuda": cuda})
    assert flash_attn_cuda_archs(profile.model_copy(update={"gpu": gpu, "stack": stack})) == expected


def test_source_flash_attn_renders_sm80_for_the_4080_super() -> None:
    text = rendered("4080super", ("features.flash_attn_source=source",))["Dockerfile"].decode()
    assert 'FLASH_ATTN_CUDA_ARCHS="80"' in text
    graph = stages(text)
    assert copied_files(graph, ancestry(graph, "flash-attn-wheel")) == {"compile.lock"}


def test_an_arch_list_flash_attn_cannot_compile_is_refused() -> None:
    profile = load_profile("4080super", ["features.flash_attn_source=source"])
    profile = profile.model_copy(update={"gpu": profile.gpu.model_copy(update={"extra_cuda_arches": []})})
    assert [v.rule for v in check_profile(profile)] == []
    gpu = profile.gpu.model_copy(update={"compute_capability": "7.5"})
    profile = profile.model_copy(update={"gpu": gpu})
    rules = [violation.rule for violation in check_profile(profile)]
    assert "flash_attn_archs" in rules


def test_compose_builds_from_the_rendered_folder_wherever_it_is(tmp_path: Path) -> None:
    out = tmp_path / "anywhere" / "my-4080"
    write_context(render_files(load_profile("4080super")), out)
    compose = yaml.safe_load((out / "docker-compose.yml").read_text())
    service = compose["services"]["comfyui"]
    assert service["build"] == {"context": ".", "dockerfile": "Dockerfile"}
    assert service["stop_grace_period"] == "360s"
    assert service["healthcheck"]["start_period"] == "90m"
    result = subprocess.run(
        ["bash", "-n", str(out / "start.sh")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_the_flash_attn_release_wheel_is_installed_against_its_pinned_sha256() -> None:
    files = rendered("4090")
    lock = files["flash-attn.lock"].decode()
    url = flash_attn_wheel_url(load_profile("4090"))
    digest = flash_attn_wheel_sha256(load_profile("4090"))
    assert url and digest and len(digest) == 64 and set(digest) <= set("0123456789abcdef")
    assert f"flash-attn @ {url} \\\n    --hash=sha256:{digest}\n" in lock
    venv = stages(files["Dockerfile"].decode())["venv"]
    runs = [" ".join(c.value) for c in venv if c.cmd == "RUN"]
    assert any("uv pip install --require-hashes --no-deps -r /tmp/flash-attn.lock" in run for run in runs)
    assert not any(url in run for run in runs)  # never the bare URL, which nothing checks
    assert "!flash-attn.lock" in files[".dockerignore"].decode()
    assert "flash-attn.lock" not in rendered("5090")  # no flash-attn there


def test_a_release_wheel_without_a_pinned_sha256_is_refused() -> None:
    # Python 3.12 has a v2.7.4.post1 release wheel, but the matrix pins no sha256 for it.
    profile = load_profile("4080super", ["stack.python='3.12'"])
    assert flash_attn_wheel_url(profile) is not None and flash_attn_wheel_sha256(profile) is None
    problems = {v.rule: v.message for v in check_profile(profile)}
    assert "cp312" in problems["flash_attn_wheel_hash"]
    assert "features.flash_attn_source: source" in problems["flash_attn_wheel_hash"]
    compiled = load_profile("4080super", ["stack.python='3.12'", "features.flash_attn_source=source"])
    assert "flash_attn_wheel_hash" not in {v.rule for v in check_profile(compiled)}
