"""What the boot's status says when the models fail: one reason and the one thing to do, worded once
for the status page, `zr4 health` and the jobs (zr4.image.boot_report)."""

from __future__ import annotations

import errno
import json
import time
from pathlib import Path

import pytest

from zr4.core import boot_status
from zr4.core.model_files.errors import DiskSpaceError
from zr4.image.boot_report import BootReport, FileProgress, failure_of
from zr4.image.models.download import storage_error
from zr4.image.models.preflight import DEFAULT_MARGIN_BYTES, check_disk

GB = 1_000_000_000


def test_a_full_volume_mid_download_says_how_much_more_is_needed(tmp_path: Path) -> None:
    report = BootReport(tmp_path / "status.json", process_started=time.time())
    report.models_planned(
        "/workspace/models",
        "gguf",
        [FileProgress("text_encoders/t5.safetensors", 11 * GB), FileProgress("vae/v.safetensors", GB)],
    )
    report.file_started("text_encoders/t5.safetensors", 11 * GB, 0)
    report.file_bytes("text_encoders/t5.safetensors", 4 * GB)
    # What the downloader raises when a write hits ENOSPC (download.py, _Run._write).
    full = storage_error(OSError(errno.ENOSPC, "No space left on device"), tmp_path / "t5.partial", "write")
    reason, fix = report.models_failed(full)
    assert reason.startswith(f"cannot write {tmp_path / 't5.partial'}: No space left on device")
    needed = 7 * GB + GB + DEFAULT_MARGIN_BYTES  # the rest of the encoder, the VAE, the margin
    assert fix.startswith(
        f"the volume is full: about {needed / GB:.1f} GB more is needed (8.0 GB still to download"
    )
    report.write()
    status = boot_status.read_status(report.path)
    assert status is not None and boot_status.models_failure(status) == f"{reason}; fix: {fix}"
    assert status["phase"] == "failed" and status["models"]["files"][0]["state"] == "stopped"


def test_too_little_space_before_the_download_names_the_shortfall() -> None:
    with pytest.raises(DiskSpaceError) as caught:
        check_disk(20 * GB, 5 * GB, Path("/workspace/models"))
    _reason, fix = failure_of(caught.value)
    shortfall = 20 * GB + DEFAULT_MARGIN_BYTES - 5 * GB
    assert fix.startswith(f"free {shortfall / GB:.1f} GB in MODELS_DIR or use a larger volume: ")


def test_the_status_file_is_replaced_whole_and_read_back(tmp_path: Path) -> None:
    report = BootReport(tmp_path / "boot" / "status.json", process_started=time.time() - 3)
    report.set_ports([8188])
    report.start()
    report.models_settled_without_download(
        boot_status.SKIPPED, "SKIP_MODEL_DOWNLOAD=true: not checked or downloaded"
    )
    report.comfyui_launched()
    report.comfyui_answers(8188)
    report.close()
    document = json.loads(report.path.read_text())
    assert [p.name for p in report.path.parent.iterdir()] == ["status.json"]  # no temporary left behind
    assert document["phase"] == "ready" and document["comfyui"]["text"] == "answers on port 8188"
    assert boot_status.comfyui_ready(document, 8188) and not boot_status.comfyui_ready(document, 8189)
    assert document["timings"]["comfyui_ready_s"] >= 3
    assert boot_status.read_status(tmp_path / "missing.json") is None
    (tmp_path / "other.json").write_text('{"version": 99, "models": {}, "comfyui": {}}')
    assert boot_status.read_status(tmp_path / "other.json") is None
