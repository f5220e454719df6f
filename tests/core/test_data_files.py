"""The bundled data files are typed: a malformed one fails when it is loaded, in one line naming the
file and the field, and the card facts the planner applies come from compatibility.yaml's rows."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from zr4.core import arch
from zr4.core.compat_data import CompatibilityDataError, compatibility_file, load_matrix


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
    assert refusal(path) == f"{path}: flash_attn[0].compile_archs: Field required"


def test_a_misspelt_key_is_refused_not_ignored(tmp_path: Path) -> None:
    def misspell(document: dict) -> None:
        document["arch_features"][0]["bf_16"] = document["arch_features"][0].pop("bf16")

    path = edited_matrix(tmp_path, misspell)
    message = refusal(path)
    assert f"{path}: arch_features[0].bf16: Field required" in message
    assert f"{path}: arch_features[0].bf_16: unknown key" in message


def test_a_version_read_as_a_number_is_refused(tmp_path: Path) -> None:
    path = edited_matrix(tmp_path, lambda d: d["cuda_min_for_arch"][0].update(cuda=9.0))
    message = refusal(path)
    assert message == f"{path}: cuda_min_for_arch[0].cuda: Input should be a valid string"


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
