"""The bundled data files are typed: a malformed one fails when it is loaded, in one line naming the
file and the field; the card facts the planner applies come from compatibility.yaml's rows, and the
model file sizes it budgets from the model manifest."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from zr4.core import arch
from zr4.core.compat_data import CompatibilityDataError, compatibility_file, load_matrix
from zr4.core.model_files.manifest import default_manifest_path
from zr4.core.planner import GpuFacts, PlannerDataError, PlanRequest, load_facts, plan, planner_file


def refusal(path: Path) -> str:
    with pytest.raises(CompatibilityDataError) as caught:
        load_matrix(path)
    return str(caught.value)


def edited_matrix(tmp_path: Path, edit: Callable[[dict[str, Any]], object]) -> Path:
    document = yaml.safe_load(compatibility_file().read_text(encoding="utf-8"))
    edit(document)
    path = tmp_path / "compatibility.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def test_the_bundled_matrix_loads_typed() -> None:
    matrix = load_matrix()
    release = matrix.flash_attn_release("2.7.4.post1")
    assert release is not None and release.compile_archs["120"] == "12.8"
    assert matrix.onnxruntime_gpu[0].from_ == "1.19"  # `from` in the file


def test_a_missing_field_names_the_file_and_the_row(tmp_path: Path) -> None:
    path = edited_matrix(tmp_path, lambda d: d["flash_attn"][0].pop("compile_archs"))
    assert refusal(path) == f"{path}: flash_attn[0].compile_archs: required, but missing"


def test_a_misspelt_key_is_refused_not_ignored(tmp_path: Path) -> None:
    def misspell(document: dict) -> None:
        document["arch_features"][0]["bf_16"] = document["arch_features"][0].pop("bf16")

    path = edited_matrix(tmp_path, misspell)
    assert refusal(path) == f"{path}: arch_features[0].bf_16: unknown key"


def test_a_version_read_as_a_number_is_refused(tmp_path: Path) -> None:
    path = edited_matrix(tmp_path, lambda d: d["cuda_min_for_arch"][0].update(cuda=9.0))
    message = refusal(path)
    assert message == f"{path}: cuda_min_for_arch[0].cuda: expected a string, got 9.0"


def test_an_unreadable_matrix_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "compatibility.yaml"
    path.write_text("torch_builds: [unclosed\n", encoding="utf-8")
    assert refusal(path).startswith(f"{path} is not valid YAML: ")
    missing = tmp_path / "absent.yaml"
    assert refusal(missing) == (f"cannot read {missing}: No such file or directory")


@pytest.mark.parametrize(
    ("cc", "bf16", "fp8"),
    [
        ("6.1", False, False),
        ("7.5", False, False),
        ("8.0", True, False),
        ("8.7", True, False),
        ("8.9", True, True),
        ("11.0", True, True),
        ("12.1", True, True),
    ],
)
def test_a_card_between_rows_has_the_features_of_the_row_below(cc: str, bf16: bool, fp8: bool) -> None:
    assert (arch.has_bf16(cc), arch.has_fp8_compute(cc)) == (bf16, fp8)


def test_flash_attn_kernels_are_the_release_rows_arches_or_what_setup_py_compiles() -> None:
    assert arch.flash_attn_kernel_majors(None) == {8, 9}  # the release wheel: sm_80..sm_90
    assert arch.flash_attn_kernel_majors("12.8.1", ["8.9", "12.0"]) == {8, 12}
    assert arch.flash_attn_kernel_majors("12.4.1", ["8.9", "12.0"]) == {8}  # 120 needs nvcc 12.8
    assert arch.flash_attn_build_archs(["8.9", "12.0"], "12.4.1", "2.7.4.post1") == "80"
    assert arch.flash_attn_build_archs(["8.9"], "12.8", "0.0.1") == ""  # a release the matrix lacks


# --- planner.yaml, sized by the model manifest -----------------------------------------------------


def edited(tmp_path: Path, source: Path, edit: Callable[[dict[str, Any]], object]) -> Path:
    document = yaml.safe_load(source.read_text(encoding="utf-8"))
    edit(document)
    path = tmp_path / source.name
    path.write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def entry(document: dict[str, Any], entry_id: str) -> dict[str, Any]:
    found: dict[str, Any] = next(item for item in document["files"] if item["id"] == entry_id)
    return found


def test_the_planner_budgets_the_manifests_file_sizes(tmp_path: Path) -> None:
    """The fp8 text encoder's size is the manifest's: a changed manifest changes the budget, the
    source it cites and the advice that names it."""
    manifest = edited(
        tmp_path, default_manifest_path(), lambda d: entry(d, "text-encoder-fp8").update(size=5_000_000_000)
    )
    facts = load_facts(manifest_path=manifest)
    assert load_facts().encoders.text["fp8"].bytes == 6_740_000_000
    fp8 = facts.encoders.text["fp8"]
    assert fp8.bytes == 5_000_000_000
    assert fp8.source == (
        "umt5_xxl_fp8_e4m3fn_scaled.safetensors, 5 GB (Comfy-Org/Wan_2.1_ComfyUI_repackaged file listing)"
    )
    card = GpuFacts("12 GiB card", 12 * 1024)
    on_cpu = plan(PlanRequest(gpu=card, text_encoder="bf16"), facts=facts)
    assert "the bf16 text encoder does not fit on the GPU; the fp8 one (5 GB) might" in on_cpu.warnings
    fp8_plan = plan(PlanRequest(gpu=GpuFacts("80 GiB card", 80 * 1024), text_encoder="fp8"), facts=facts)
    assert {item.key: item.mib for item in fp8_plan.items}["text_encoder"] == -(-5_000_000_000 // 2**20)


def test_the_cpu_plans_default_level_is_the_manifests(tmp_path: Path) -> None:
    manifest = edited(tmp_path, default_manifest_path(), lambda d: d["gguf"].update(default_level="Q6_K"))
    result = plan(PlanRequest(gpu=None, gguf_level="auto"), facts=load_facts(manifest_path=manifest))
    assert result.gguf_level == "Q6_K"


def planner_refusal(path: Path) -> str:
    with pytest.raises(PlannerDataError) as caught:
        load_facts(path)
    return str(caught.value)


def test_a_planner_file_naming_no_manifest_entry_is_refused(tmp_path: Path) -> None:
    path = edited(tmp_path, planner_file(), lambda d: d["vae"].update(files=["vae-fp32"]))
    assert planner_refusal(path) == f"{path}: vae: the model manifest has no entry 'vae-fp32'"
    path = edited(tmp_path, planner_file(), lambda d: d["vae"].update(bytes=1))
    assert planner_refusal(path) == (
        f"{path}: vae: give `files` (sized by the model manifest) or `bytes`, not both"
    )


def test_a_malformed_planner_file_names_the_field(tmp_path: Path) -> None:
    path = edited(tmp_path, planner_file(), lambda d: d["runtime"].pop("cuda_context_mib"))
    assert planner_refusal(path) == f"{path}: runtime.cuda_context_mib: required, but missing"
    path = edited(tmp_path, planner_file(), lambda d: d["decode"].update(tile_px="272 px"))
    assert planner_refusal(path) == f"{path}: decode.tile_px: expected an integer, got '272 px'"
    path = edited(
        tmp_path, planner_file(), lambda d: d["diffusion"]["gguf"].update(auto_candidates=["Q5_K_M"])
    )
    assert planner_refusal(path) == (
        f"{path}: diffusion.gguf: auto candidate Q5_K_M is not a level with a known size"
    )
