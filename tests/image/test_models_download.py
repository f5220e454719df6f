"""The model manager against a real local Hub (resolve protocol + API) with the real huggingface_hub client."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from support.hub_server import FakeHub, deterministic_bytes
from zr4.image.models import (
    DiskSpaceError,
    DownloadOptions,
    GgufLevelError,
    HubAuthError,
    HubNotFoundError,
    IntegrityError,
    Manifest,
    ModelSettings,
    NetworkError,
    Progress,
    describe_plan,
    ensure_models,
    load_manifest,
    plan_models,
)
from zr4.image.models.download import discard_partial, partial_path, sidecar_path

GGUF_REPO = "MCG-NJU/SteadyDancer-GGUF"
# How the repository names its files (test data only; zr4 never guesses them).
GGUF_Q4 = "Wan21_I2V_SteadyDancer_fp16-Q4_K_M_fix_5d_tensor.gguf"
GGUF_Q4_FROM_FP8 = "Wan21_I2V_SteadyDancer_fp16-Q4_K_M_fix_5d_tensor_from_fp8_e4m3fn_scaled_KJ.gguf"
GGUF_Q5 = "Wan21_I2V_SteadyDancer_fp16-Q5_K_M_fix_5d_tensor.gguf"
FAST = DownloadOptions(
    retries=4, backoff_base_s=0.01, backoff_max_s=0.05, stall_timeout_s=1.0, chunk_bytes=256 << 10
)
SMALL = 700_000


def _manifest_without_fixed_sizes() -> Manifest:
    """The bundled manifest, with the two sizes it knows blanked so small test files fit."""
    manifest = load_manifest()
    entries = tuple(replace(e, size=None) if e.size else e for e in manifest.entries)
    return replace(manifest, entries=entries)


MANIFEST = _manifest_without_fixed_sizes()


def serve_manifest(hub: FakeHub, manifest: Manifest, size: int = SMALL) -> dict[str, bytes]:
    """Put a small file at every Hub path of the manifest, plus a GGUF repository with a few levels."""
    contents: dict[str, bytes] = {}
    for entry in manifest.entries:
        if entry.repo and entry.path:
            data = deterministic_bytes(size + len(entry.path), entry.path)
            hub.add_file(entry.repo, entry.path, data)
            contents[f"{entry.folder}/{entry.dest_name}"] = data
    for name in (GGUF_Q4, GGUF_Q4_FROM_FP8, GGUF_Q5):
        data = deterministic_bytes(size * 2 + len(name), name)
        hub.add_file(GGUF_REPO, name, data)
        contents[f"diffusion_models/{name}"] = data
    hub.add_file(GGUF_REPO, "README.md", b"# SteadyDancer GGUF\n", lfs=False)
    return contents


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as server:
        yield server


@pytest.fixture
def contents(hub: FakeHub) -> dict[str, bytes]:
    return serve_manifest(hub, MANIFEST)


def settings_for(hub: FakeHub, root: Path, **overrides: object) -> ModelSettings:
    return replace(ModelSettings(models_dir=root, hf_endpoint=hub.endpoint), **overrides)  # type: ignore[arg-type]


def test_fresh_download_then_warm_start_without_network(
    hub: FakeHub, contents: dict[str, bytes], tmp_path: Path
) -> None:
    settings = settings_for(hub, tmp_path)
    result = ensure_models(settings, manifest=MANIFEST, options=FAST)
    assert result.variant == "gguf" and result.diffusion_model == GGUF_Q4
    assert len(result.fetched) == 8
    for rel in result.fetched:
        assert (tmp_path / rel).read_bytes() == contents[rel]
        assert not partial_path(tmp_path / rel).exists() and not sidecar_path(tmp_path / rel).exists()
    assert hub.served(GGUF_Q4_FROM_FP8) == 0 and hub.served(GGUF_Q5) == 0

    requests_before = len(hub.requests)
    warm = ensure_models(settings, manifest=MANIFEST, options=FAST)
    assert warm.fetched == [] and warm.plan.complete and warm.diffusion_model == GGUF_Q4
    assert len(hub.requests) == requests_before, "a warm start must not touch the network"

    hub.stop()  # the Hub is gone: a warm boot still succeeds
    assert ensure_models(settings, manifest=MANIFEST, options=FAST).plan.complete


def test_a_changed_file_is_verified_again(hub: FakeHub, contents: dict[str, bytes], tmp_path: Path) -> None:
    settings = settings_for(hub, tmp_path)
    ensure_models(settings, manifest=MANIFEST, options=FAST)
    vae = tmp_path / "vae" / "Wan2_1_VAE_bf16.safetensors"
    data = bytearray(vae.read_bytes())
    data[10] ^= 0xFF
    vae.write_bytes(bytes(data))  # same size, new mtime, wrong content
    served_before = hub.served("Wan2_1_VAE_bf16.safetensors")
    result = ensure_models(settings, manifest=MANIFEST, options=FAST)
    assert result.fetched == ["vae/Wan2_1_VAE_bf16.safetensors"]
    assert vae.read_bytes() == contents["vae/Wan2_1_VAE_bf16.safetensors"]
    assert hub.served("Wan2_1_VAE_bf16.safetensors") - served_before == len(data)


def test_a_file_copied_in_by_hand_is_adopted_after_hashing(
    hub: FakeHub, contents: dict[str, bytes], tmp_path: Path
) -> None:
    rel = "clip_vision/clip_vision_h.safetensors"
    (tmp_path / "clip_vision").mkdir()
    (tmp_path / rel).write_bytes(contents[rel])
    result = ensure_models(settings_for(hub, tmp_path), manifest=MANIFEST, options=FAST)
    assert rel in result.adopted and rel not in result.fetched
    assert hub.served("split_files/clip_vision/clip_vision_h.safetensors") == 0


def test_dropped_connections_resume_with_range(
    hub: FakeHub, contents: dict[str, bytes], tmp_path: Path
) -> None:
    hub.drop_after[GGUF_Q4] = [300_000, 500_000]
    hub.fail_status["umt5-xxl-enc-bf16.safetensors"] = [503, 502]
    result = ensure_models(settings_for(hub, tmp_path), manifest=MANIFEST, options=FAST)
    assert (tmp_path / "diffusion_models" / GGUF_Q4).read_bytes() == contents[f"diffusion_models/{GGUF_Q4}"]
    assert hub.served(GGUF_Q4) == len(contents[f"diffusion_models/{GGUF_Q4}"]), "no byte fetched twice"
    ranges = [r for method, path, r in hub.requests if method == "GET" and "/blobs/" in path and r]
    assert "bytes=300000-" in ranges and "bytes=800000-" in ranges
    assert "text_encoders/umt5-xxl-enc-bf16.safetensors" in result.fetched


STALL_S = 60.0  # far longer than the download: only the client's stall detector ends it early


def test_a_stalled_server_is_dropped_and_resumed(
    hub: FakeHub, contents: dict[str, bytes], tmp_path: Path
) -> None:
    rel = "vae/Wan2_1_VAE_bf16.safetensors"
    blob = f"/blobs/{hashlib.sha256(contents[rel]).hexdigest()}"
    hub.stall["Wan2_1_VAE_bf16.safetensors"] = STALL_S
    options = replace(FAST, stall_timeout_s=0.5)
    began = time.monotonic()
    ensure_models(settings_for(hub, tmp_path), manifest=MANIFEST, options=options)
    took = time.monotonic() - began
    assert (tmp_path / rel).read_bytes() == contents[rel]
    [stall] = hub.stalls
    assert stall.client_closed, f"the client waited out the stall ({stall.seconds:.1f} s)"
    # It went on from the byte the stall stopped at, on a new request, not from the start.
    ranges = [r for method, path, r in hub.requests if method == "GET" and path.startswith(blob)]
    assert ranges == [None, f"bytes={stall.at_byte}-"] and 0 < stall.at_byte < len(contents[rel])
    assert hub.served("Wan2_1_VAE_bf16.safetensors") == len(contents[rel]), "no byte fetched twice"
    assert took < STALL_S / 4, f"{took:.1f} s: the download waited for the stall to end"


def test_corrupted_bytes_are_refetched_once(hub: FakeHub, contents: dict[str, bytes], tmp_path: Path) -> None:
    hub.corrupt["Wan2_1_VAE_bf16.safetensors"] = 1
    messages: list[str] = []
    ensure_models(settings_for(hub, tmp_path), manifest=MANIFEST, options=FAST, log=messages.append)
    rel = "vae/Wan2_1_VAE_bf16.safetensors"
    assert (tmp_path / rel).read_bytes() == contents[rel]
    assert hub.served("Wan2_1_VAE_bf16.safetensors") == 2 * len(contents[rel])
    assert any("sha256" in m and "downloading it again" in m for m in messages)


def test_corruption_twice_fails_naming_the_file_and_installs_nothing(
    hub: FakeHub, contents: dict[str, bytes], tmp_path: Path
) -> None:
    hub.corrupt["Wan2_1_VAE_bf16.safetensors"] = 2
    with pytest.raises(IntegrityError, match=r"Wan2_1_VAE_bf16\.safetensors.*sha256"):
        ensure_models(settings_for(hub, tmp_path), manifest=MANIFEST, options=FAST)
    vae = tmp_path / "vae" / "Wan2_1_VAE_bf16.safetensors"
    assert not vae.exists() and not partial_path(vae).exists()
    # the other files were fetched and verified; a rerun only fetches the VAE
    served = hub.total_served
    result = ensure_models(settings_for(hub, tmp_path), manifest=MANIFEST, options=FAST)
    assert result.fetched == ["vae/Wan2_1_VAE_bf16.safetensors"]
    assert hub.total_served - served == len(contents["vae/Wan2_1_VAE_bf16.safetensors"])


def test_private_repository_needs_hf_token(hub: FakeHub, contents: dict[str, bytes], tmp_path: Path) -> None:
    hub.add_repo("Kijai/vitpose_comfy", token="hf_secret")
    with pytest.raises(HubAuthError, match=r"401.*Kijai/vitpose_comfy.*HF_TOKEN"):
        ensure_models(settings_for(hub, tmp_path), manifest=MANIFEST, options=FAST)
    with pytest.raises(HubAuthError, match=r"403.*HF_TOKEN"):
        ensure_models(settings_for(hub, tmp_path, hf_token="hf_wrong"), manifest=MANIFEST, options=FAST)
    result = ensure_models(settings_for(hub, tmp_path, hf_token="hf_secret"), manifest=MANIFEST, options=FAST)
    assert "detection/vitpose_h_wholebody_data.bin" in result.fetched


def test_missing_file_names_repository_revision_and_path(
    hub: FakeHub, contents: dict[str, bytes], tmp_path: Path
) -> None:
    del hub.repos["Kijai/WanVideo_comfy"].files["Wan2_1_VAE_bf16.safetensors"]
    with pytest.raises(HubNotFoundError) as caught:
        ensure_models(settings_for(hub, tmp_path), manifest=MANIFEST, options=FAST)
    message = str(caught.value)
    assert (
        "Wan2_1_VAE_bf16.safetensors" in message and "Kijai/WanVideo_comfy" in message and "'main'" in message
    )
    del hub.repos["Kijai/WanVideo_comfy"]
    with pytest.raises(HubNotFoundError, match="repository 'Kijai/WanVideo_comfy' not found"):
        ensure_models(settings_for(hub, tmp_path), manifest=MANIFEST, options=FAST)


def test_no_network_says_so_and_keeps_what_was_fetched(
    hub: FakeHub, contents: dict[str, bytes], tmp_path: Path
) -> None:
    settings = settings_for(hub, tmp_path, variant="fp8", step_distill_lora=False)
    ensure_models(settings, manifest=MANIFEST, options=FAST)
    hub.stop()
    with pytest.raises(NetworkError, match="no network"):
        ensure_models(replace(settings, step_distill_lora=True), manifest=MANIFEST, options=FAST)
    assert (tmp_path / "vae" / "Wan2_1_VAE_bf16.safetensors").exists()
    plan = plan_models(replace(settings, step_distill_lora=True), manifest=MANIFEST)
    assert [p.status for p in plan.files].count("verified") == 7 and plan.offline_reason


def test_connection_drops_beyond_the_retry_budget_keep_the_partial(
    hub: FakeHub, contents: dict[str, bytes], tmp_path: Path
) -> None:
    hub.drop_after[GGUF_Q4] = [100_000, 0, 0, 0, 0, 0]
    with pytest.raises(NetworkError, match="giving up"):
        ensure_models(settings_for(hub, tmp_path), manifest=MANIFEST, options=FAST)
    partial = partial_path(tmp_path / "diffusion_models" / GGUF_Q4)
    assert partial.stat().st_size == 100_000
    served = hub.served(GGUF_Q4)
    ensure_models(settings_for(hub, tmp_path), manifest=MANIFEST, options=FAST)
    assert hub.served(GGUF_Q4) - served == len(contents[f"diffusion_models/{GGUF_Q4}"]) - 100_000


def test_disk_preflight_refuses_before_downloading(
    hub: FakeHub, contents: dict[str, bytes], tmp_path: Path
) -> None:
    with pytest.raises(DiskSpaceError, match=rf"{tmp_path}.*needed"):
        ensure_models(settings_for(hub, tmp_path), manifest=MANIFEST, options=FAST, margin_bytes=10**18)
    assert hub.total_served == 0


def test_missing_gguf_level_falls_back_to_fp8_loudly(
    hub: FakeHub, contents: dict[str, bytes], tmp_path: Path
) -> None:
    settings = settings_for(hub, tmp_path, gguf_level="q3")
    messages: list[str] = []
    result = ensure_models(settings, manifest=MANIFEST, options=FAST, log=messages.append)
    assert result.variant == "fp8"
    assert result.diffusion_model == "Wan21_SteadyDancer_fp8_e4m3fn_scaled_KJ.safetensors"
    assert any(
        m.startswith("WARNING: GGUF level Q3_K_M") and "FALLING BACK" in m and "Q4_K_M, Q5_K_M" in m
        for m in messages
    )
    plan_text = "\n".join(describe_plan(plan_models(settings, manifest=MANIFEST)))
    assert plan_text.startswith("[SteadyDancer] variant fp8 (FALLBACK: gguf q3 is not available)")
    assert "WARNING: GGUF level Q3_K_M" in plan_text
    with pytest.raises(GgufLevelError, match=r"Q3_K_M.*--strict"):
        ensure_models(replace(settings, strict=True), manifest=MANIFEST, options=FAST)


def test_level_spelling_q4_picks_the_same_file(
    hub: FakeHub, contents: dict[str, bytes], tmp_path: Path
) -> None:
    for spelling in ("q4", "Q4_K_M", "q4_k_m"):
        plan = plan_models(settings_for(hub, tmp_path, gguf_level=spelling), manifest=MANIFEST)
        assert plan.diffusion_model == GGUF_Q4 and plan.gguf_level == "Q4_K_M"


def test_plan_changes_nothing_and_reports_bytes(
    hub: FakeHub, contents: dict[str, bytes], tmp_path: Path
) -> None:
    root = tmp_path / "models"
    plan = plan_models(settings_for(hub, root), manifest=MANIFEST)
    assert not root.exists() and hub.total_served == 0
    expected = sum(len(contents[p.target.rel]) for p in plan.files)
    assert plan.bytes_to_fetch == expected
    text = "\n".join(describe_plan(plan))
    assert "[SteadyDancer] variant gguf Q4_K_M" in text and f"diffusion_models/{GGUF_Q4}" in text
    assert "to download:" in text and "free in" in text


def test_progress_lines_in_logs(hub: FakeHub, contents: dict[str, bytes], tmp_path: Path) -> None:
    import io

    stream = io.StringIO()
    hub.rate_bytes_per_s = 4_000_000
    ensure_models(
        settings_for(hub, tmp_path),
        manifest=MANIFEST,
        options=FAST,
        progress=Progress(stream, tty=False, log_interval_s=0.3),
    )
    lines = stream.getvalue().splitlines()
    assert len(lines) >= 2 and all(line.startswith("[models] ") for line in lines)
    assert "100%" in lines[-1]


def test_plain_url_source_is_checked_against_its_published_sha256_prefix(
    hub: FakeHub, tmp_path: Path
) -> None:
    data = deterministic_bytes(300_000, "yolox")
    served = hub.add_file("mirror/files", "yolox_l.pth", data, lfs=False)
    url = f"{hub.endpoint}/mirror/files/resolve/main/yolox_l.pth"

    def manifest(prefix: str) -> Manifest:
        entry = replace(
            load_manifest().entry("yolox-l"), url=url, sha256_prefix=prefix, when={}, filename="yolox.pth"
        )
        return replace(load_manifest(), entries=(entry,), gguf_fallback=None)

    with pytest.raises(IntegrityError, match="does not start with the published 00000000"):
        ensure_models(settings_for(hub, tmp_path), manifest=manifest("00000000"), options=FAST)
    result = ensure_models(settings_for(hub, tmp_path), manifest=manifest(served.sha256[:8]), options=FAST)
    assert result.fetched == ["dwpose/yolox.pth"] and (tmp_path / "dwpose/yolox.pth").read_bytes() == data


def test_terminal_progress_draws_bars(hub: FakeHub, contents: dict[str, bytes], tmp_path: Path) -> None:
    import io

    stream = io.StringIO()
    hub.rate_bytes_per_s = 3_000_000
    ensure_models(
        settings_for(hub, tmp_path), manifest=MANIFEST, options=FAST, progress=Progress(stream, tty=True)
    )
    drawn = stream.getvalue()
    assert "\x1b[" in drawn and "━" in drawn and "diffusion_models/" in drawn  # rich.progress bars


def test_discarding_a_partial_removes_what_a_killed_sidecar_write_left(tmp_path: Path) -> None:
    # The sidecar is written through zr4.core.atomic: a kill between its create and its rename
    # leaves `.NAME.partial.json.<8 hex>`, which the next fresh start removes with the partial.
    dest = tmp_path / "diffusion_models" / "a.bin"
    dest.parent.mkdir()
    partial_path(dest).write_bytes(b"x" * 10)
    sidecar_path(dest).write_text("{}", encoding="utf-8")
    leftover = dest.parent / f".{sidecar_path(dest).name}.0badc0de"
    leftover.write_text("{", encoding="utf-8")
    not_ours = dest.parent / f".{sidecar_path(dest).name}.backup"
    not_ours.write_text("kept", encoding="utf-8")
    discard_partial(dest)
    assert sorted(p.name for p in dest.parent.iterdir()) == [not_ours.name]


def test_files_are_fetched_in_the_order_a_job_first_uses_them(
    hub: FakeHub, contents: dict[str, bytes], tmp_path: Path
) -> None:
    from zr4.core.model_files.selection import FIRST_USE_ORDER

    ensure_models(settings_for(hub, tmp_path), manifest=MANIFEST, options=FAST, jobs=1)
    fetched = []
    for method, path, _range in hub.requests:
        if method == "GET" and path.startswith("/blobs/"):
            entry = hub.blob(path.split("/")[2].split("?")[0])
            assert entry is not None
            if entry.path not in fetched:
                fetched.append(entry.path)
    roles = {e.path: e.role for e in MANIFEST.entries if e.path} | {GGUF_Q4: "steadydancer"}
    order = [roles[path] for path in fetched]
    # VAE, text encoder, diffusion model, LoRA, pose, CLIP vision: the manifest lists the model first.
    assert order == sorted(order, key=FIRST_USE_ORDER.index), order
    assert order[0] == "vae" and order[-1] == "clip_vision" and len(order) == 8
