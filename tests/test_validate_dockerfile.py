"""Checks 1-3: the Dockerfile parses, its stage graph is sound, and every COPY source arrives.

Each broken context is the rendered 4080super context with one common mistake put
back in (unpatched CUDA tags, a venv copied from an empty stage, a .dockerignore that drops COPY sources); the check must fail and say where and why.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from support.validate_context import REPO, context_of, messages
from zr4.profile import load_profile
from zr4.render import render_files, write_context
from zr4.validate import BuildContext
from zr4.validate.check_context import check_context
from zr4.validate.check_dockerfile import check_parse, check_stages


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path.name}"
    path.write_text(text.replace(old, new, 1))


def line_of(path: Path, needle: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), start=1) if needle in line)


# ---- check 1: parse -----------------------------------------------------------------------------


def test_rendered_dockerfile_parses(ctx: Path) -> None:
    assert check_parse(context_of(ctx)).status == "pass"


def test_syntax_error_is_reported_with_its_line(ctx: Path) -> None:
    dockerfile = ctx / "Dockerfile"
    edit(dockerfile, "ENV DEBIAN_FRONTEND=noninteractive\nRUN", "ENV DEBIAN_FRONTEND\nRUN")
    result = check_parse(context_of(ctx))
    assert result.status == "fail"
    (finding,) = result.findings
    assert "ENV must have two arguments" in finding.message
    assert finding.line == dockerfile.read_text().splitlines().index("ENV DEBIAN_FRONTEND") + 1


def test_instruction_errors_buildkit_would_raise(ctx: Path) -> None:
    dockerfile = ctx / "Dockerfile"
    text = dockerfile.read_text()
    text = text.replace("COPY requirements.lock /tmp/requirements.lock", "COPY requirements.lock", 1)
    text = text.replace("FROM scratch AS context-files", "FROM scratch AS Context_Files!", 1)
    text = text.replace("EXPOSE 8188", "EXPOSE 8188\nSTOPSIGNL SIGTERM\nCOPY --chwon=1000 start.sh /x", 1)
    dockerfile.write_text(text)
    report = messages(check_parse(context_of(ctx)))
    assert (
        f"Dockerfile:{line_of(dockerfile, 'COPY requirements.lock')}: COPY requires at least two arguments"
        in report
    )
    assert "invalid stage name 'Context_Files!'" in report
    assert "unknown instruction STOPSIGNL" in report
    assert "COPY has no flag --chwon" in report


# ---- check 2: stages ----------------------------------------------------------------------------


def test_rendered_stage_graph_passes(ctx: Path) -> None:
    result = check_stages(context_of(ctx))
    assert result.status == "pass", messages(result)


SEED_STAGES = """\
FROM nvidia/cuda:12.4-devel-ubuntu22.04 AS base
ENV CUDA_VERSION=12.4

FROM base AS python-env
RUN python3 -m venv /opt/venv
ENV PATH="/opt/venv/bin:$PATH"

FROM python-env AS pytorch-core
RUN pip install --no-cache-dir torch==2.5.1 torchvision==0.20.1 torchaudio==2.5.1

FROM pytorch-core AS flash-attn
RUN pip install --no-cache-dir flash_attn==2.7.4.post1 --no-build-isolation

FROM steadydancer-deps AS model-management
RUN mkdir -p /workspace/ComfyUI/models/gguf

FROM nvidia/cuda:12.4-runtime-ubuntu22.04 AS production
COPY --from=python-env /opt/venv /opt/venv
COPY --from=model-management /download_models.sh /download_models.sh
"""


def test_stage_mistakes_are_caught(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text(SEED_STAGES)
    result = check_stages(BuildContext(tmp_path))
    report = messages(result)
    assert result.status == "fail"
    # The venv is copied from the stage where it is still empty.
    assert (
        "Dockerfile:18: COPY --from=python-env /opt/venv copies /opt/venv as stage 'python-env' left it, "
        "but the stages built on it change /opt/venv afterwards: pytorch-core (line 9), flash-attn (line 12)"
    ) in report
    # CUDA tags without the patch version, on both bases.
    assert "Dockerfile:1: nvidia/cuda:12.4-devel-ubuntu22.04 has no patch version in its tag" in report
    assert "use nvidia/cuda:12.4.<patch>-devel-ubuntu22.04" in report
    assert "Dockerfile:17: nvidia/cuda:12.4-runtime-ubuntu22.04 has no patch version" in report
    # A base that is neither a stage above nor a tagged image.
    assert (
        "Dockerfile:14: FROM steadydancer-deps names 'steadydancer-deps', which is no stage defined above"
        in report
    )


def test_a_flash_attn_sdist_build_without_its_arch_list_fails(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text(SEED_STAGES)
    report = messages(check_stages(BuildContext(tmp_path)))
    # pip builds flash-attn from the PyPI sdist inside `docker build`, where no GPU is visible.
    assert (
        "Dockerfile:12: stage 'flash-attn' compiles flash_attn==2.7.4.post1 without FLASH_ATTN_CUDA_ARCHS"
    ) in report


def test_flash_attn_arch_list_naming_nothing_its_setup_py_compiles(tmp_path: Path) -> None:
    from support.validate_context import render

    out = render(tmp_path, "features.flash_attn_source=source")
    assert check_stages(context_of(out)).status == "pass"
    # What zr4 rendered before: the card's own "89", which flash-attn 2.7.4.post1's setup.py ignores.
    edit(out / "Dockerfile", 'FLASH_ATTN_CUDA_ARCHS="80"', 'FLASH_ATTN_CUDA_ARCHS="89"')
    report = messages(check_stages(context_of(out)))
    assert (
        "stage 'flash-attn-wheel': FLASH_ATTN_CUDA_ARCHS=89 names no arch flash-attn 2.7.4.post1 compiles "
        "(its setup.py knows 80, 90, 100, 120"
    ) in report


def test_extension_built_on_a_runtime_image_or_without_arches(tmp_path: Path) -> None:
    ctx = tmp_path / "docker"
    write_context(render_files(load_profile("4080super", ["features.pose_backend=mmpose"])), ctx)
    dockerfile = ctx / "Dockerfile"
    edit(dockerfile, ' \\\n    TORCH_CUDA_ARCH_LIST="8.9"', "")
    edit(
        dockerfile,
        "RUN ln -s /opt/zr4/bin/zr4 /usr/local/bin/zr4",
        "RUN pip install --no-build-isolation sageattention==1.0.6",
    )
    report = messages(check_stages(context_of(ctx)))
    assert "stage 'mmcv-wheel' compiles mmcv==2.1.0 without TORCH_CUDA_ARCH_LIST" in report
    assert (
        "stage 'runtime' compiles sageattention==1.0.6 but is based on nvidia/cuda:12.4.1-base-ubuntu22.04, "
        "which has no nvcc"
    ) in report


def test_docker_build_commands_in_the_context_use_real_flags_and_targets(ctx: Path) -> None:
    (ctx / "build.sh").write_text(
        "#!/usr/bin/env bash\n"
        "docker build -e HF_TOKEN=x -t test-pytorch --target=0 .\n"
        "docker buildx build --target runtime -t ok .\n"
    )
    report = messages(check_stages(context_of(ctx)))
    assert "build.sh:2: `docker build` has no -e flag; pass build-time values with --build-arg" in report
    assert "build.sh:2: `docker build --target 0` names no stage of the Dockerfile" in report
    assert "build.sh:3" not in report


def test_final_stage_on_a_devel_image_fails(ctx: Path) -> None:
    dockerfile = ctx / "Dockerfile"
    edit(dockerfile, "FROM nvidia/cuda:12.4.1-base-ubuntu22.04 AS runtime", "FROM builder AS runtime")
    report = messages(check_stages(context_of(ctx)))
    assert (
        "the final stage 'runtime' is based on nvidia/cuda:12.4.1-cudnn-devel-ubuntu22.04, a devel image"
        in report
    )


@pytest.mark.parametrize(
    ("base", "passes"),
    [
        ("nvidia/cuda:12.4.1-base-ubuntu22.04", True),
        ("nvidia/cuda:12.4.1-runtime-ubuntu22.04", True),
        ("nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04", True),
        ("ubuntu:22.04", False),
        ("nvidia/cuda:12.4.1-cudnn-devel-ubuntu22.04", False),
    ],
)
def test_the_final_stage_takes_a_cuda_flavor_without_compilers(ctx: Path, base: str, passes: bool) -> None:
    edit(ctx / "Dockerfile", "FROM nvidia/cuda:12.4.1-base-ubuntu22.04 AS runtime", f"FROM {base} AS runtime")
    report = messages(check_stages(context_of(ctx)))
    assert ("the final stage 'runtime' is based on" in report) is not passes, report


def test_stage_used_before_it_is_defined(ctx: Path) -> None:
    dockerfile = ctx / "Dockerfile"
    edit(dockerfile, "COPY --from=uv /uv /usr/local/bin/uv", "COPY --from=venv /uv /usr/local/bin/uv")
    report = messages(check_stages(context_of(ctx)))
    assert "COPY --from=venv uses stage 'venv' before it is defined" in report


# The rendered Dockerfile needs no named context; a user's edit (or a build switch) may add one.
COPY_FROM_ZR4 = (
    "COPY --from=zr4 pyproject.toml README.md /tmp/zr4-src/\n"
    "COPY --from=zr4 src /tmp/zr4-src/src\n"
    "COPY --from=zr4 profiles /tmp/zr4-src/profiles\n"
)


def add_copy_from_zr4(ctx: Path) -> None:
    edit(ctx / "Dockerfile", "WORKDIR /tmp/zr4\n", "WORKDIR /tmp/zr4\n" + COPY_FROM_ZR4)


def test_named_context_must_be_declared(ctx: Path) -> None:
    add_copy_from_zr4(ctx)
    result = check_stages(BuildContext(ctx, named_contexts={}))
    report = messages(result)
    assert result.status == "fail"
    assert "COPY --from=zr4 names 'zr4', which is no stage defined above, no named build context" in report


def test_copy_from_scratch_stage_of_a_path_it_never_creates(ctx: Path) -> None:
    edit(
        ctx / "Dockerfile",
        "COPY --from=context-files /opt/zr4 /opt/zr4",
        "COPY --from=context-files /opt/zr5 /opt/zr4",
    )
    report = messages(check_stages(context_of(ctx)))
    assert "stage 'context-files' (FROM scratch) never creates /opt/zr5" in report


# ---- check 3: context ---------------------------------------------------------------------------


def test_rendered_copy_sources_all_arrive(ctx: Path) -> None:
    result = check_context(context_of(ctx))
    assert result.status == "pass", messages(result)


def test_a_dockerignore_that_drops_the_lock_and_workflows_fails(ctx: Path) -> None:
    (ctx / "requirements.txt").write_text("torch==2.5.1\n")
    edit(
        ctx / "Dockerfile",
        "COPY requirements.lock /tmp/requirements.lock",
        "COPY requirements.txt /tmp/requirements.lock",
    )
    (ctx / ".dockerignore").write_text("# a .dockerignore that drops COPY sources\n*.txt\n*.md\nworkflows/\n")
    result = check_context(context_of(ctx))
    report = messages(result)
    assert result.status == "fail"
    assert "source requirements.txt is excluded by .dockerignore line 2 `*.txt`" in report
    assert "add `!requirements.txt` after it" in report
    assert "source workflows/ is excluded by .dockerignore line 4 `workflows/`" in report


def test_missing_source_and_a_path_outside_the_context(ctx: Path) -> None:
    (ctx / "start.sh").unlink()
    edit(
        ctx / "Dockerfile",
        "COPY models.yaml /opt/zr4/models.yaml",
        "COPY ../models.yaml /opt/zr4/models.yaml",
    )
    report = messages(check_context(context_of(ctx)))
    assert "source start.sh does not exist in the build context" in report
    assert "source ../models.yaml points outside the build context" in report


def test_every_file_of_a_copied_directory_excluded(ctx: Path) -> None:
    (ctx / ".dockerignore").write_text("workflows/*.json\n")
    report = messages(check_context(context_of(ctx)))
    assert "every file under workflows/ is excluded by .dockerignore line 1 `workflows/*.json`" in report


def test_wildcard_source_matching_only_ignored_files(ctx: Path) -> None:
    (ctx / "extra-a.lock").write_text("")
    (ctx / ".dockerignore").write_text("*.lock\n")
    edit(ctx / "Dockerfile", "COPY requirements.lock /tmp/requirements.lock", "COPY extra-*.lock /tmp/")
    report = messages(check_context(context_of(ctx)))
    assert "source extra-*.lock matches only files that .dockerignore line 1 `*.lock` excludes" in report


def test_named_context_sources_are_checked_against_its_own_dockerignore(ctx: Path, tmp_path: Path) -> None:
    assert REPO is not None
    fake_root = tmp_path / "zr4-root"
    for name in ("pyproject.toml", "README.md"):
        (fake_root).mkdir(exist_ok=True)
        (fake_root / name).write_text("x\n")
    for folder in ("src", "profiles", "templates", "data"):
        (fake_root / folder).mkdir()
        (fake_root / folder / "file").write_text("x\n")
    (fake_root / ".dockerignore").write_text("*\n!pyproject.toml\n!src/\n")
    add_copy_from_zr4(ctx)
    result = check_context(BuildContext(ctx, named_contexts={"zr4": fake_root}))
    report = messages(result)
    assert (
        "source README.md is excluded by .dockerignore line 1 `*` of the named build context 'zr4'" in report
    )
    assert (
        "source profiles/ is excluded by .dockerignore line 1 `*` of the named build context 'zr4'" in report
    )
    assert "source src" not in report
