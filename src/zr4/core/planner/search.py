"""The search: for each candidate GGUF level the cheapest layout that fits, then the level, then
the plan with its decisions, warnings and ComfyUI arguments.

Block swap (WanVideoBlockSwap) keeps ``blocks_to_swap`` of the transformer blocks in host RAM
and streams them in one at a time while sampling, so the fewest swapped blocks that fit is the
fastest plan; ``auto`` tries ``full``, then ``model_cpu_offload``, then that.
"""

from __future__ import annotations

from zr4.core.comfy_flags import FlagSet, flag_set, tokenize
from zr4.core.planner.arguments import arch_limits, flags_for, with_user_args
from zr4.core.planner.bisection import smallest
from zr4.core.planner.budget import (
    DiffusionWeights,
    Evaluation,
    Layout,
    budget_items,
    evaluate,
    host_ram_needed,
)
from zr4.core.planner.explain import (
    alternatives,
    host_ram_warning,
    layout_decisions,
    layout_warnings,
    misfit_error,
)
from zr4.core.planner.facts import Facts, load_facts
from zr4.core.planner.formulas import tier_for
from zr4.core.planner.request import MEMORY_MODES, GpuFacts, PlanRequest
from zr4.core.planner.result import Decision, TuningPlan


class LayoutSearch:
    """The layouts of one request at one GGUF level (or one non-GGUF variant), and the best one."""

    def __init__(self, request: PlanRequest, facts: Facts, level: str | None) -> None:
        assert request.gpu is not None
        self.request = request
        self.facts = facts
        self.gpu: GpuFacts = request.gpu
        self.weights = DiffusionWeights.of(facts, request.variant, level)
        # ComfyUI uses cudaMallocAsync unless the user turns it off
        self.native_allocator = "--disable-cuda-malloc" in tokenize(request.user_comfyui_args)

    def evaluate(self, layout: Layout) -> Evaluation:
        items = budget_items(
            facts=self.facts,
            request=self.request,
            weights=self.weights,
            layout=layout,
            native_allocator=self.native_allocator,
        )
        needed = host_ram_needed(facts=self.facts, request=self.request, weights=self.weights, layout=layout)
        return evaluate(layout, tuple(items), needed)

    def fits(self, evaluation: Evaluation) -> bool:
        return evaluation.peak_mib <= self.gpu.usable_mib

    def ram_ok(self, evaluation: Evaluation) -> bool:
        ram = self.request.host_ram_mib
        return ram is None or evaluation.host_ram_needed_mib <= ram

    def _offload_layout(self, mode: str, swap: int, prefetch: int) -> Evaluation:
        """The cheapest offload layout: text encoder on the GPU and an untiled decode when they fit."""
        evaluation = self.evaluate(Layout(mode, swap, prefetch, True, False, True))
        usable = self.gpu.usable_mib
        text_on_gpu = evaluation.phase_mib["text"] <= usable
        tiled = evaluation.phase_mib["decode"] > usable
        pose_on_gpu = evaluation.phase_mib["pose"] <= usable
        if not text_on_gpu or tiled or not pose_on_gpu:
            evaluation = self.evaluate(Layout(mode, swap, prefetch, text_on_gpu, tiled, pose_on_gpu))
        return evaluation

    def best(self, mode: str) -> Evaluation:
        """The best layout for ``mode`` ("auto" tries full, then model offload, then block swap)."""
        blocks = self.weights.blocks
        forced_swap = self.request.block_swap
        if forced_swap is not None:
            swap = max(0, min(forced_swap, blocks))
            chosen = mode if mode != "auto" else ("sequential_cpu_offload" if swap else "model_cpu_offload")
            if chosen == "full":
                return self.evaluate(Layout("full", swap, 0, True, False))
            return self._with_prefetch(chosen, swap)
        if mode in ("auto", "full"):
            full = self.evaluate(Layout("full", 0, 0, True, False))
            if mode == "full" or self.fits(full):
                return full
        if mode in ("auto", "model_cpu_offload"):
            offload = self._offload_layout("model_cpu_offload", 0, 0)
            if mode == "model_cpu_offload" or self.fits(offload):
                return offload
        # sequential: the fewest swapped blocks that make sampling fit, with one block prefetched
        # ahead when there is room for it, else without
        for prefetch in (1, 0):

            def fits_with(n: int, ahead: int = prefetch) -> bool:
                return self.fits(self._offload_layout("sequential_cpu_offload", n, ahead))

            fewest = smallest(1, blocks, fits_with)
            if fewest is not None:
                return self._offload_layout("sequential_cpu_offload", fewest, prefetch)
        return self._offload_layout("sequential_cpu_offload", blocks, 0)

    def _with_prefetch(self, mode: str, swap: int) -> Evaluation:
        """Prefetch one block ahead when that still fits ("1 is usually enough", WanVideoBlockSwap)."""
        plain = self._offload_layout(mode, swap, 0)
        if swap == 0:
            return plain
        prefetched = self._offload_layout(mode, swap, 1)
        return prefetched if self.fits(prefetched) else plain


Candidate = tuple[str | None, LayoutSearch, Evaluation]


def level_candidates(request: PlanRequest, facts: Facts) -> list[str | None]:
    """The GGUF levels to search, largest first (None: a variant without levels)."""
    if request.variant != "gguf":
        return [None]
    if request.gguf_level.lower() == "auto":
        return list(facts.auto_candidates)
    return [request.gguf_level.upper()]


def choose_level(results: list[Candidate]) -> tuple[Candidate, str | None]:
    """The candidate to plan with, and why (None: the one level configured).

    Auto: the largest level that fits, with the block swap it needs, preferring one whose
    offloaded blocks also fit in host RAM."""
    if len(results) == 1:
        return results[0], None

    def fits_card(result: Candidate) -> bool:
        return result[1].fits(result[2])

    for rule, test in (
        ("the largest level that fits", lambda result: fits_card(result) and result[1].ram_ok(result[2])),
        ("the largest level that fits on the card, though host RAM is short", fits_card),
    ):
        chosen = next((result for result in results if test(result)), None)
        if chosen is not None:
            return chosen, rule
    return results[-1], "nothing fits; showing the smallest level"


def plan(request: PlanRequest, facts: Facts | None = None, flags: FlagSet | None = None) -> TuningPlan:
    """Budget, decide and explain. Pure: same request, same plan."""
    facts = facts or load_facts()
    flags = flags or flag_set(request.comfyui_version)
    return plan_for(request, facts, flags, explain=True)


def plan_for(request: PlanRequest, facts: Facts, flags: FlagSet, explain: bool) -> TuningPlan:
    """``plan`` with the facts and flags given; ``explain`` False skips the alternatives (which
    plan changed requests, and would otherwise recurse)."""
    if request.gpu is None:
        return cpu_plan(request, facts, flags)
    mode = request.memory_mode
    if mode != "auto" and mode not in MEMORY_MODES:
        raise ValueError(f"memory mode {mode!r}: use auto, {', '.join(MEMORY_MODES)}")

    results: list[Candidate] = []
    for level in level_candidates(request, facts):
        search = LayoutSearch(request, facts, level)
        results.append((level, search, search.best(mode)))
    (level, search, evaluation), level_why = choose_level(results)
    layout, weights, gpu = evaluation.layout, search.weights, search.gpu

    attention, attention_decisions, attention_warnings, arch_error = arch_limits(request, gpu)
    planned, flag_decisions = flags_for(layout.mode, attention, flags)
    final, rejected_args, flag_warnings = with_user_args(planned, request, flags)
    decisions = [
        *layout_decisions(request=request, facts=facts, weights=weights, layout=layout, level_why=level_why),
        *attention_decisions,
        *flag_decisions,
    ]
    warnings = [
        *layout_warnings(request=request, facts=facts, weights=weights, layout=layout),
        *attention_warnings,
        *flag_warnings,
        *host_ram_warning(request=request, evaluation=evaluation, weights=weights),
    ]

    error = arch_error
    instead: tuple[str, ...] = ()
    if error is None and not search.fits(evaluation):
        error = misfit_error(evaluation, gpu)
        if explain:
            instead = tuple(
                alternatives(
                    request, facts, evaluation, lambda changed: plan_for(changed, facts, flags, explain=False)
                )
            )

    return TuningPlan(
        gpu_name=gpu.name,
        card_mib=gpu.total_mib,
        usable_mib=gpu.usable_mib,
        tier=request.tier or tier_for(gpu.total_mib, facts),
        workload=request.workload,
        variant=request.variant,
        gguf_level=level,
        memory_mode=layout.mode,
        block_swap=layout.swap,
        prefetch_blocks=layout.prefetch,
        text_encoder_device="gpu" if layout.text_on_gpu else "cpu",
        pose_device="gpu" if layout.pose_on_gpu else "cpu",
        vae_tiling=layout.vae_tiled,
        attention=attention,
        items=evaluation.items,
        phase_mib=evaluation.phase_mib,
        peak_mib=evaluation.peak_mib,
        peak_phase=evaluation.peak_phase,
        host_ram_needed_mib=evaluation.host_ram_needed_mib,
        host_ram_mib=request.host_ram_mib,
        comfyui_args=final,
        rejected_args=rejected_args,
        decisions=tuple(decisions),
        warnings=tuple(warnings),
        error=error,
        alternatives=instead,
    )


def cpu_plan(request: PlanRequest, facts: Facts, flags: FlagSet) -> TuningPlan:
    """No NVIDIA GPU: ComfyUI with --cpu, no budget. GGUF ``auto`` means the manifest's documented
    default level, as there is no card to size for."""
    final, rejected_args, flag_warnings = with_user_args(["--cpu"], request, flags)
    level = request.gguf_level.upper() if request.gguf_level.lower() != "auto" else facts.default_gguf_level
    warnings = ["no NVIDIA GPU: ComfyUI runs with --cpu; a 14B video model on a CPU takes hours per clip"]
    warnings += flag_warnings
    return TuningPlan(
        gpu_name="none (CPU only)",
        card_mib=0,
        usable_mib=0,
        tier=request.tier or "cpu",
        workload=request.workload,
        variant=request.variant,
        gguf_level=None if request.variant != "gguf" else level,
        memory_mode="cpu",
        block_swap=0,
        prefetch_blocks=0,
        text_encoder_device="cpu",
        pose_device="cpu",
        vae_tiling=False,
        attention=request.attention,
        items=(),
        phase_mib={},
        peak_mib=0,
        peak_phase="-",
        host_ram_needed_mib=0,
        host_ram_mib=request.host_ram_mib,
        comfyui_args=final,
        rejected_args=rejected_args,
        decisions=(Decision("--cpu", "on", "no NVIDIA GPU detected"),),
        warnings=tuple(warnings),
    )
