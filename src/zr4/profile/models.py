"""The profile: what a user may say about their GPU, model, stack and image, as Pydantic v2 models.

Every model forbids unknown keys, and every string that ends up in a Dockerfile or shell script is
constrained to a pattern, so a typo is an error with its field path instead of a silent default,
and no profile value can break out of the line it is rendered into.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from zr4.core.gguf_level import GGUF_LEVELS, SHORT_FORMS, parse_gguf_level

# Each pattern below, in words: what a profile error tells the user is allowed (a regular
# expression is for the validator, not for the person editing the YAML file).
PATTERN_WORDS: dict[str, str] = {}


def _pattern(regex: str, words: str) -> str:
    """``regex``, recorded with the ``words`` an error shows in its place."""
    PATTERN_WORDS[regex] = words
    return regex


_VERSION = r"[0-9]+(\.[0-9]+)*([a-z]+[0-9]*)?(\.post[0-9]+)?"
Version = Annotated[
    str,
    Field(
        pattern=_pattern(
            rf"^{_VERSION}$",
            "a version number such as 2.5.1, 2.6.0rc1 or 1.0.post1 (digits separated by dots, "
            "then optionally lower-case letters and digits, then optionally .postN)",
        ),
        max_length=40,
    ),
]
GitCommit = Annotated[
    str, Field(pattern=_pattern(r"^[0-9a-f]{40}$", "a full git commit hash: 40 characters 0-9 and a-f"))
]
GitHubRepoUrl = Annotated[
    str,
    Field(
        pattern=_pattern(
            r"^https://github\.com/[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$",
            "a GitHub repository address: https://github.com/OWNER/NAME (letters, digits, '_', '.', '-')",
        ),
        max_length=200,
    ),
]
# Image references as Docker accepts them: registry/path:tag, optional @sha256 digest.
ImageRef = Annotated[
    str,
    Field(
        pattern=_pattern(
            r"^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*"
            r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[0-9a-f]{64})?$",
            "a Docker image name such as ghcr.io/me/zr4 or localhost:5000/zr4:1.0: lower-case letters "
            "and digits with single '.', '_' or '-' between them and '/' between path parts, then "
            "optionally :TAG (up to 128 letters, digits, '_', '.', '-') and @sha256:DIGEST, no spaces",
        ),
        max_length=255,
    ),
]
Identifier = Annotated[
    str,
    Field(
        pattern=_pattern(
            r"^[a-z0-9][a-z0-9._-]{0,62}$",
            "1 to 63 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    ),
]
PlainText = Annotated[
    str,
    Field(
        max_length=300,
        pattern=_pattern(
            r"^[^\x00-\x1f\x7f`$\\\"]*$",
            "one line of text without control characters (tabs, newlines), backquotes, '$', "
            "backslashes or double quotes",
        ),
    ),
]
COMPUTE_CAPABILITY = _pattern(r"^[0-9]{1,2}\.[0-9]$", "a compute capability such as 8.9 or 12.0")


class StrictModel(BaseModel):
    """Unknown keys are errors; values are validated on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class Gpu(StrictModel):
    """The card the image is built for and planned against."""

    name: PlainText
    vram_gib: float = Field(gt=0, le=1024)
    # What the driver reports as the card's memory (nvidia-smi memory.total, MiB), where a source
    # gives it: less than vram_gib × 1024 (an RTX 4080 SUPER reports 16,376). Offline plans use it;
    # at run time the plan uses what NVML reports free.
    reported_mib: int | None = Field(default=None, gt=0, le=1024 * 1024)
    compute_capability: str = Field(pattern=COMPUTE_CAPABILITY)
    tier: Literal["consumer", "prosumer", "datacenter"]
    # Extra architectures to compile CUDA extensions for (TORCH_CUDA_ARCH_LIST), besides this card's own.
    extra_cuda_arches: list[
        Annotated[
            str,
            Field(
                pattern=_pattern(
                    r"^[0-9]{1,2}\.[0-9](\+PTX)?$",
                    "a compute capability such as 8.6, optionally +PTX (9.0+PTX)",
                )
            ),
        ]
    ] = Field(default_factory=list, max_length=8)

    @field_validator("compute_capability", mode="before")
    @classmethod
    def _number_as_written(cls, value: object) -> object:
        """`compute_capability: 8.9` unquoted is a YAML float; read it as the text it was (12.0 stays 12.0)."""
        if isinstance(value, float):
            return f"{value:.1f}"
        return value

    @property
    def total_mib(self) -> int:
        """The card's memory to plan against offline: as reported where known, else nominal."""
        return self.reported_mib if self.reported_mib is not None else int(self.vram_gib * 1024)

    @property
    def sm(self) -> int:
        """Compute capability as the integer nvcc uses (8.9 -> 89)."""
        major, minor = self.compute_capability.split(".")
        return int(major) * 10 + int(minor)

    @property
    def cuda_arch_list(self) -> str:
        """TORCH_CUDA_ARCH_LIST for extension builds: this card first, extras after, no repeats."""
        arches = [self.compute_capability, *self.extra_cuda_arches]
        return ";".join(dict.fromkeys(arches))


class ModelChoice(StrictModel):
    """Which SteadyDancer weights the image downloads by default (changeable at run time)."""

    variant: Literal["fp16", "fp8", "gguf"]
    gguf_level: str = "Q4_K_M"
    text_encoder: Literal["bf16", "fp8"] = "bf16"
    step_distill_lora: bool = True

    @field_validator("gguf_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        parsed = parse_gguf_level(value)
        if parsed is None:
            short = ", ".join(name.lower() for name in SHORT_FORMS)
            raise ValueError(
                f"{value!r} is not a GGUF level; use one of {', '.join(GGUF_LEVELS)} (any case), {short} or auto"
            )
        return parsed


class Stack(StrictModel):
    """Pinned software stack. Each pin is checked against data/compatibility.yaml."""

    python: str = Field(pattern=_pattern(r"^3\.[0-9]{1,2}$", "a Python 3 minor version such as 3.11"))
    # uv installs the managed CPython (python-build-standalone) at the same path in builder and runtime.
    uv: Version = "0.13.9"
    cuda: str = Field(
        pattern=_pattern(r"^[0-9]{2}\.[0-9]\.[0-9]$", "a CUDA version in three parts such as 12.4.1"),
        description="CUDA toolkit of the base images",
    )
    base_image_devel: ImageRef
    base_image_runtime: ImageRef
    torch: Version
    torch_cuda: str = Field(
        pattern=_pattern(r"^cu[0-9]{3}$", "'cu' and three digits, such as cu124"),
        description="CUDA build of the torch wheels",
    )
    torchvision: Version
    torchaudio: Version
    xformers: Version | None = None
    flash_attn: Version | None = None
    mmcv: Version | None = None
    mmdet: Version | None = None
    mmpose: Version | None = None
    onnxruntime_gpu: Version
    lock: Identifier = Field(
        description=(
            "The stack's locks under data/locks/: <lock>.txt for the ONNX pose backend, "
            "<lock>-mmpose.txt (with mmengine, mmdet and mmpose) for the native one"
        )
    )
    exclude_newer: dt.date = Field(description="Nothing released after this date enters the lock")
    cxx11_abi: bool = Field(default=False, description="PyPI torch wheels before 2.7 use the pre-cxx11 ABI")


class CustomNode(StrictModel):
    """A ComfyUI custom node pack fetched at a pinned commit."""

    name: Annotated[
        str,
        Field(
            pattern=_pattern(
                r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$",
                "1 to 100 letters, digits, '_', '.' or '-', starting with a letter or digit",
            )
        ),
    ]
    repo: GitHubRepoUrl
    commit: GitCommit
    optional: bool = False


class ComfyUI(StrictModel):
    """ComfyUI itself and the node packs the workflows need."""

    repo: GitHubRepoUrl = "https://github.com/comfyanonymous/ComfyUI"
    version: str = Field(pattern=_pattern(r"^v[0-9]+\.[0-9]+\.[0-9]+$", "a release tag such as v0.7.0"))
    commit: GitCommit
    custom_nodes: list[CustomNode] = Field(max_length=50)

    @model_validator(mode="after")
    def _unique_nodes(self) -> ComfyUI:
        names = [node.name for node in self.custom_nodes]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"custom node listed twice: {', '.join(duplicates)}")
        return self


class Features(StrictModel):
    """What goes into the image besides ComfyUI."""

    flash_attn: bool = False
    flash_attn_source: Literal["wheel", "source"] = "wheel"
    xformers: bool = False
    pose_backend: Literal["onnx", "mmpose"] = "onnx"
    r2_sync: bool = True
    # WanVideoModelLoader's attention_mode choices (data/comfyui/object_info-v0.7.0.json.gz).
    attention: Literal["sdpa", "flash_attn_2", "sageattn"] = "sdpa"


class Memory(StrictModel):
    """Default memory plan; the GPU_MEMORY_MODE variables override it at run time."""

    mode: Literal["auto", "full", "model_cpu_offload", "sequential_cpu_offload"] = "auto"
    block_swap: Literal["auto"] | Annotated[int, Field(ge=0, le=40)] = "auto"


class Workload(StrictModel):
    """The default generation size the planner budgets for."""

    width: int = Field(default=480, ge=64, le=4096, multiple_of=16)
    height: int = Field(default=832, ge=64, le=4096, multiple_of=16)
    frames: int = Field(default=81, ge=1, le=1025)
    steps: int = Field(default=4, ge=1, le=200)

    @field_validator("frames")
    @classmethod
    def _four_n_plus_one(cls, value: int) -> int:
        if value % 4 != 1:
            raise ValueError(f"frames must be 4n+1 (Wan's VAE packs 4 frames per latent), got {value}")
        return value


class Image(StrictModel):
    """How the built image is named and whom it runs as."""

    name: ImageRef = "zr4"
    tag: (
        Annotated[
            str,
            Field(
                pattern=_pattern(
                    r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$",
                    "a Docker tag: 1 to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'",
                )
            ),
        ]
        | None
    ) = None
    user: Annotated[
        str,
        Field(
            pattern=_pattern(
                r"^[a-z_][a-z0-9_-]{0,31}$",
                "a Linux user name: 1 to 32 lower-case letters, digits, '_' or '-', starting with a "
                "letter or '_'",
            )
        ),
    ] = "comfy"
    uid: int = Field(default=1000, ge=1, le=60000)


class RunPod(StrictModel):
    """Fields of the RunPod template; disk sizes of 0 mean "size from the model manifest"."""

    template_name: PlainText
    container_disk_gb: int = Field(default=0, ge=0, le=2000)
    volume_gb: int = Field(default=0, ge=0, le=10000)
    volume_mount_path: str = Field(
        default="/workspace",
        pattern=_pattern(
            r"^/[A-Za-z0-9_./-]{0,100}$",
            "an absolute path: '/' and up to 100 letters, digits, '_', '.', '/' or '-'",
        ),
    )


class Profile(StrictModel):
    """A fully resolved profile (after ``extends:`` and ``--set``)."""

    name: Identifier
    description: PlainText = ""
    gpu: Gpu
    model: ModelChoice
    stack: Stack
    comfyui: ComfyUI
    features: Features = Field(default_factory=Features)
    memory: Memory = Field(default_factory=Memory)
    workload: Workload = Field(default_factory=Workload)
    image: Image = Field(default_factory=Image)
    runpod: RunPod

    @model_validator(mode="after")
    def _consistent(self) -> Profile:
        problems: list[str] = []
        if self.features.flash_attn and not self.stack.flash_attn:
            problems.append("features.flash_attn is on but stack.flash_attn names no version")
        if self.features.xformers and not self.stack.xformers:
            problems.append("features.xformers is on but stack.xformers names no version")
        if self.features.pose_backend == "mmpose" and not (
            self.stack.mmcv and self.stack.mmdet and self.stack.mmpose
        ):
            problems.append(
                "features.pose_backend is mmpose but stack.mmcv, stack.mmdet and stack.mmpose must all be pinned"
            )
        if self.features.attention == "flash_attn_2" and not self.features.flash_attn:
            problems.append("features.attention is flash_attn_2 but features.flash_attn is off")
        if self.features.attention == "sageattn":
            problems.append(
                "features.attention sageattn needs SageAttention, which this image does not build; use sdpa"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def lock_name(self) -> str:
        """The stack lock this profile's image installs (``data/locks/<name>.txt``).

        One per pose backend: the ONNX image never runs mmengine, mmdet or mmpose (nor the compiled
        mmcv), so its lock, ``stack.lock``, leaves them out; the native backend's is
        ``<stack.lock>-mmpose``.
        """
        if self.features.pose_backend == "onnx":
            return self.stack.lock
        return f"{self.stack.lock}-{self.features.pose_backend}"

    @property
    def image_tag(self) -> str:
        """The tag ``zr4 build`` uses unless told otherwise."""
        from zr4 import __version__

        return self.image.tag or f"{self.name}-zr4-{__version__}"
