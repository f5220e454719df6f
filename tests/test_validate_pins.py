"""Check 8: installs come from the lock or an exact pin, git sources are commits, and no install
failure is swallowed (a `2>/dev/null || echo` after an install)."""

from __future__ import annotations

from pathlib import Path

from support.validate_context import context_of, messages
from zr4.validate.check_pins import check_pins, lock_problems

# Unpinned, failure-swallowing install lines as naive Dockerfiles write them.
SEED_RUNS = """\
RUN pip install --no-cache-dir \\
    torch==2.5.1 torchvision==0.20.1 torchaudio==2.5.1 \\
    --index-url https://download.pytorch.org/whl/cu124 \\
    2>/dev/null || pip install --no-cache-dir \\
    torch torchvision torchaudio || echo "[Warning] PyTorch 2.5.1 cu124 unavailable, using system default"
RUN pip install --no-cache-dir xformers>=0.0.28 || true
RUN git clone --depth 1 https://github.com/comfyanonymous/ComfyUI.git
RUN cd ComfyUI && pip install --no-cache-dir -r requirements.txt
RUN git init -q . && git fetch -q --depth 1 origin master && git checkout -q FETCH_HEAD
ADD https://example.org/tool-1.0.tar.gz /tmp/
"""


def test_rendered_installs_are_all_pinned(ctx: Path) -> None:
    result = check_pins(context_of(ctx))
    assert result.status == "pass", messages(result)


def test_unpinned_swallowing_install_lines_fail(ctx: Path) -> None:
    dockerfile = ctx / "Dockerfile"
    text = dockerfile.read_text()
    marker = "RUN ln -s /opt/zr4/bin/zr4 /usr/local/bin/zr4\n"
    dockerfile.write_text(text.replace(marker, marker + SEED_RUNS, 1))
    first = text[: text.index(marker)].count("\n") + 2  # line of the first inserted RUN
    report = messages(check_pins(context_of(ctx)))
    assert f"Dockerfile:{first}: `pip install --no-cache-dir torch==2.5.1 torchvision==0.20.1" in report
    assert "sends its errors to /dev/null; let a failed install fail the build" in report
    assert f"Dockerfile:{first}: 'torch' is not pinned" in report
    assert "|| ...` turns a failed install into a successful build of a broken image" in report
    assert f"Dockerfile:{first + 5}: 'xformers>=0.0.28' is not pinned" in report
    assert (
        f"Dockerfile:{first + 5}: `pip install --no-cache-dir xformers>=0.0.28 || ...` turns a failed install"
        in report
    )
    assert (
        f"Dockerfile:{first + 6}: `git clone https://github.com/comfyanonymous/ComfyUI.git` takes whatever the default branch holds"
        in report
    )
    assert (
        f"Dockerfile:{first + 7}: -r requirements.txt is not a lock copied from this build context" in report
    )
    assert f"Dockerfile:{first + 8}: `git fetch ... master` fetches a branch or tag" in report
    assert (
        f"Dockerfile:{first + 9}: ADD https://example.org/tool-1.0.tar.gz downloads whatever the URL serves"
        in report
    )


def test_lock_with_a_range_or_without_hashes_fails(ctx: Path) -> None:
    lock = ctx / "requirements.lock"
    lock.write_text(lock.read_text() + "xformers>=0.0.28\nnumpy==1.26.4\n")
    report = messages(check_pins(context_of(ctx)))
    assert "requirements.lock line" in report
    assert "'xformers>=0.0.28' is not an exact pin (name==version)" in report
    assert "'numpy==1.26.4' has no --hash, which --require-hashes needs" in report


def test_git_requirement_needs_a_commit() -> None:
    assert lock_problems("pkg @ git+https://github.com/o/r@main\n", False) == [
        (1, "'pkg @ git+https://github.com/o/r@main' is not an exact pin (name==version)")
    ]
    assert lock_problems(f"pkg @ git+https://github.com/o/r@{'a' * 40}\n", False) == []


def test_install_lines_in_shell_scripts_are_checked_too(ctx: Path) -> None:
    (ctx / "start.sh").write_text(
        "#!/usr/bin/env bash\n# pip install commented-out is fine\npip install -U comfyui-manager 2>/dev/null\n"
    )
    report = messages(check_pins(context_of(ctx)))
    assert "start.sh: 'comfyui-manager' is not pinned" in report
    assert "start.sh: `pip install -U comfyui-manager 2>/dev/null` sends its errors to /dev/null" in report
    assert "commented-out" not in report
