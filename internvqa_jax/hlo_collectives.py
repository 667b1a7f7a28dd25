"""Bytes moved by the collectives of a compiled program, read from its HLO text.

For each collective instruction of the optimized, partitioned HLO (one
device's program) the size of the full buffer it exchanges, per device:
  all-gather      its result (the gathered tensor);
  reduce-scatter  its operand (the tensor before scattering);
  all-reduce      its result;
  all-to-all, collective-permute  their result.
Async pairs (`*-start` / `*-done`) count once, at the start. Instructions
inside loop bodies count once (the text does not say how often a loop runs),
so for a scanned model these are per-iteration figures. A ring
implementation sends about (n-1)/n of these bytes over the links.
"""

from __future__ import annotations

import re

import numpy as np

KINDS = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all", "collective-permute")
_DTYPE_BYTES = {
  "pred": 1,
  "s8": 1,
  "u8": 1,
  "s16": 2,
  "u16": 2,
  "f16": 2,
  "bf16": 2,
  "s32": 4,
  "u32": 4,
  "f32": 4,
  "s64": 8,
  "u64": 8,
  "f64": 8,
  "c64": 8,
  "c128": 16,
  "f8e4m3fn": 1,
  "f8e5m2": 1,
}
_SHAPE = re.compile(r"\b([a-z]+[0-9a-z]*)\[([0-9,]*)\]")
# "%name = <result type> <op>(<operands>), attrs"; the op may carry -start.
_INSTR = re.compile(
  r"=\s*(?P<result>.*?)\s(?P<op>" + "|".join(KINDS) + r")(?P<start>-start)?\((?P<operands>[^)]*)\)"
)


def _shape_bytes(text: str) -> list[int]:
  out = []
  for dtype, dims in _SHAPE.findall(text):
    if dtype not in _DTYPE_BYTES:
      continue
    n = int(np.prod([int(d) for d in dims.split(",") if d])) if dims else 1
    out.append(n * _DTYPE_BYTES[dtype])
  return out


def collective_bytes(hlo_text: str) -> dict[str, int]:
  """{kind: bytes per device per program run} for every kind in KINDS (0 when absent)."""
  totals = dict.fromkeys(KINDS, 0)
  counts = dict.fromkeys(KINDS, 0)
  for line in hlo_text.splitlines():
    m = _INSTR.search(line)
    if not m:
      continue
    op = m.group("op")
    result = _shape_bytes(m.group("result"))
    operands = _shape_bytes(m.group("operands"))
    if not result:
      continue
    if op == "reduce-scatter":
      size = sum(operands) if operands else result[-1]
    elif m.group("start") and len(result) > 1:
      # Async start returns (operands..., results...): the results are the second half.
      size = sum(result[len(result) // 2 :])
    else:
      size = sum(result)
    totals[op] += size
    counts[op] += 1
  return {**totals, **{f"{k}_count": v for k, v in counts.items()}}
