"""A pod whose boot is still fetching its models, for the tests of jobs that arrive meanwhile.

The boot's own download (:class:`zr4.image.boot_models.ModelDownload`, writing the boot's status
file through :class:`zr4.image.boot_report.BootReport`) from a local Hub (tests/support/hub_server.py,
slowed per connection) into the models folder the stand-in ComfyUI API lists and checks
(tests/support/fake_comfyui_api.py, ``Behaviour.models_root``); the boot's workflow installed from the
download's plan, as step 3 of `zr4 start` does; with ``proxy`` the real auth proxy in front of that
ComfyUI, serving the status at ``/zr4/status.json`` (as `zr4 dance` reads it), without it the status
file only (as the serverless worker in the container reads it). ComfyUI counts as answering at once.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from image.test_start_sequence import manifest_for_tests, serve_models
from support.auth_stack import AuthProxy
from support.fake_comfyui_api import Behaviour, FakeComfyAPI
from support.hub_server import FakeHub
from zr4.core.workflow.install import PlannedSettings, install_workflow, workflow_spec_for_boot
from zr4.image.boot_models import ModelDownload
from zr4.image.boot_report import BootReport
from zr4.profile import load_profile


class StartingPod:
    def __init__(
        self,
        root: Path,
        hub: FakeHub,
        behaviour: Behaviour,
        *,
        rate: float | None = None,
        private_repo: str | None = None,
        proxy: bool = True,
    ) -> None:
        self.root = root
        self.models = root / "models"
        root.mkdir(parents=True)
        self.manifest = manifest_for_tests(root / "models.yaml")
        serve_models(hub, self.manifest)
        hub.rate_bytes_per_s = rate
        if private_repo is not None:
            hub.add_repo(private_repo, token="hf_private_0123456789")
        self.profile = load_profile("4080super", ["features.pose_backend=onnx", "model.variant=gguf"])
        (root / "profile.json").write_text(self.profile.model_dump_json())
        self.env = {
            "HF_ENDPOINT": hub.endpoint,
            "ZR4_PROFILE": str(root / "profile.json"),
            "ENABLE_DWPOSE": "false",
        }
        self.comfy = FakeComfyAPI(root / "comfy", dataclasses.replace(behaviour, models_root=self.models))
        self.report = BootReport(root / "boot" / "status.json", process_started=time.time())
        self.download = ModelDownload(self.env, self.models, self.manifest, self.report, lambda _line: None)
        self.with_proxy = proxy
        self.proxy: AuthProxy | None = None

    @property
    def url(self) -> str:
        """Where a job goes: the proxy, or ComfyUI itself."""
        return self.proxy.url if self.proxy is not None else self.comfy.url

    def __enter__(self) -> StartingPod:
        self.comfy.__enter__()
        public_port = int(self.comfy.url.rsplit(":", 1)[1])
        if self.with_proxy:
            self.proxy = AuthProxy(
                self.root / "proxy", public_port, extra_env={"ZR4_BOOT_STATUS": str(self.report.path)}
            )
            self.proxy.__enter__()
            public_port = self.proxy.public_port
        self.report.start()
        self.report.set_ports([public_port])
        self.report.comfyui_answers(public_port)  # what the start's readiness watch records
        self.download.start()
        planned = self.download.wait_for_plan()
        if planned.targets:
            spec = workflow_spec_for_boot(
                self.profile.model_dump(mode="json"), planned.targets, planned.variant, 0, PlannedSettings()
            )
            install_workflow(self.comfy.state.root, spec)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.download.stop()
        self.report.close()
        if self.proxy is not None:
            self.proxy.__exit__()
        self.comfy.__exit__()
