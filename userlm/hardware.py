"""Speed settings chosen by the machine a run is on, each with the reason it was chosen.

bf16 autocast is 1.7-2.5x faster than float32 on a CPU with AVX-512 BF16 or AMX, and about
20x slower on one without (AVX2 only: torch emulates bf16), so a recipe's `bf16: auto` asks
the machine. `ONEDNN_MAX_CPU_ISA` and `ATEN_CPU_CAPABILITY` turn a CPU's instructions off for
torch; they count here too, so a bf16 machine set to AVX2 picks what an AVX2 machine picks.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

# oneDNN ISA caps below AVX512_CORE_BF16: with one of them set, bf16 matmuls run emulated.
ONEDNN_ISAS_WITHOUT_BF16 = frozenset({"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX512_CORE", "AVX512_CORE_VNNI"})


@dataclass(frozen=True)
class Precision:
    """Whether a run uses bf16 autocast, and the sentence that says why."""

    bf16: bool
    reason: str

    def describe(self) -> str:
        return f"{'bf16 autocast' if self.bf16 else 'float32'} ({self.reason})"


def native_bf16() -> tuple[bool, str]:
    """Whether this machine's device computes bf16 in hardware, and what says so."""
    import torch

    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        if torch.cuda.is_bf16_supported():
            return True, f"the GPU {name} has bf16"
        return False, f"the GPU {name} has no bf16"
    capability = torch.backends.cpu.get_cpu_capability()
    amx = torch.cpu._is_amx_tile_supported()
    if not (amx or torch.cpu._is_avx512_bf16_supported()):
        return False, f"this CPU ({capability}) has no AVX-512 BF16 or AMX instructions"
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    if capability != "AVX512" or isa in ONEDNN_ISAS_WITHOUT_BF16:
        return False, (
            f"this CPU's bf16 instructions are turned off for torch (capability {capability}, "
            f"ONEDNN_MAX_CPU_ISA={isa or 'unset'})"
        )
    return True, f"this CPU has {'AMX' if amx else 'AVX-512 BF16'}"


def resolve_bf16(setting: bool | str) -> Precision:
    """`auto`: bf16 autocast where the hardware has bf16, float32 elsewhere; `true` on a CPU without it warns once."""
    if setting is False:
        return Precision(False, "bf16: false")
    native, why = native_bf16()
    if setting == "auto":
        if native:
            return Precision(True, f"bf16: auto, and {why}")
        return Precision(False, f"bf16: auto, and {why}: bf16 would run emulated, about 20x slower")
    if not native:
        print(
            f"warning: bf16 is true but {why}, so bf16 runs emulated, about 20x slower than float32; "
            "set bf16: auto to let the machine choose.",
            file=sys.stderr,
        )
        return Precision(True, f"bf16: true, though {why}")
    return Precision(True, f"bf16: true, and {why}")


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity, capped by a cgroup CPU quota (containers, CI runners)."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            count = min(count, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return count


def set_cpu_threads() -> str:
    """torch's intra-op threads, at most one per usable CPU: more than the quota allows run slower, not faster."""
    import torch

    cpus = usable_cpus()
    if torch.get_num_threads() > cpus:
        torch.set_num_threads(cpus)
        return f"{cpus} torch threads (the CPUs this process may use)"
    return f"{torch.get_num_threads()} torch threads"
