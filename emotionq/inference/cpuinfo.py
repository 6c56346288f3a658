"""What this machine's CPU can do for int8 and bf16 arithmetic, read once from /proc/cpuinfo.

The int8 runtime's recipe depends on it (``emotionq.inference.quantization``: 7-bit weights on x86 without
VNNI), and the benchmarks print it beside every speed figure (``benchmarks.rows.cpu``).
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from functools import cache
from pathlib import Path

# The flags that decide int8 and bf16 speed, in the order the benchmarks print them.
SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni"})
X86 = frozenset({"x86_64", "amd64", "i386", "i686", "x86"})


@dataclass(frozen=True)
class Cpu:
    model: str
    cores: int
    flags: frozenset[str]  # empty where /proc/cpuinfo could not be read
    x86: bool
    readable: bool

    @property
    def vnni(self) -> bool:
        """Dot products of int8 pairs summed in int32 (AVX-512 VNNI or AVX-VNNI)."""
        return bool(VNNI_FLAGS & self.flags)

    @property
    def int8_class(self) -> str:
        return "with VNNI" if self.vnni else "AVX2-only" if "avx2" in self.flags else "no AVX2"

    def text(self) -> str:
        """The model, cores and speed flags, as the benchmarks' notes quote them."""
        present = [f for f in SPEED_FLAGS if f in self.flags]
        return (f"{self.model}, {self.cores} cores, {' '.join(present) or 'none of ' + ' '.join(SPEED_FLAGS)} "
                f"({self.int8_class})")


@cache
def cpu() -> Cpu:
    """This machine's CPU (the first processor's entry of /proc/cpuinfo)."""
    model, flags, readable = "unknown", frozenset(), True
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown":
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = frozenset(value.split())
    except OSError:
        readable = False
    return Cpu(model=model, cores=os.cpu_count() or 1, flags=flags,
               x86=platform.machine().lower() in X86, readable=readable)
