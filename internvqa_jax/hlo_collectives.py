"""Bytes moved by the collectives of a compiled program, read from its HLO text.

For each collective instruction of the optimized, partitioned HLO (one
device's program) the size of the full buffer it exchanges, per device:
  all-gather      its result (the gathered tensor);
  reduce-scatter  its operand (the tensor before scattering);
  all-reduce      its result;
  all-to-all, collective-permute  their result.
Async pairs (`*-start` / `*-done`) count once, at the start. An instruction
counts as often as its computation runs: a while loop's body runs its
trip count (the `known_trip_count` the compiler writes in the loop's
backend_config, or, where it writes none as XLA:TPU does, N from the scan-form
condition `counter < N`; a scanned model's blocks are such a loop), nested loops
multiply, and a loop whose trip count is unknown counts once (reported in
`unknown_trip_loops`).
A ring implementation sends about (n-1)/n of these bytes over the links.
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


# A computation's header: "%name (params) -> result {" or "ENTRY %name ... {", at column 0.
_HEADER = re.compile(r"^(?:ENTRY\s+)?%?(?P<name>[\w.\-]+)\b.*\{\s*$")
# Computations an instruction runs: while body/condition, fusion and call targets, reducers,
# conditional branches.
_CALLEE = re.compile(
  r"\b(?P<kind>body|condition|calls|to_apply)=%?(?P<names>[\w.\-]+)"
  r"|\b(?P<branch>branch_computations)=\{(?P<branches>[^}]*)\}"
)
_CALLEE_NAME = re.compile(r"%([\w.\-]+)")
_TRIP_COUNT = re.compile(r'"known_trip_count":\{"n":"(\d+)"\}')
_CONDITION = re.compile(r"\bcondition=%?([\w.\-]+)")
_S32_CONSTANT = re.compile(r"=\s*s32\[\]\S*\s+constant\((\d+)\)")


def _trip_count(line: str, comps: dict[str, list[str]]) -> int:
  """A while instruction's trip count: the compiler's `known_trip_count` where it writes one
  (XLA:CPU/GPU), else read from its condition when that is the scan form `counter < N` (one
  s32 constant, a less-than compare; XLA:TPU writes no trip count), else 0 (unknown)."""
  m = _TRIP_COUNT.search(line)
  if m:
    return int(m.group(1))
  c = _CONDITION.search(line)
  cond = comps.get(c.group(1), []) if c else []
  constants = [int(n) for n in (_S32_CONSTANT.search(x) for x in cond) if n for n in [n.group(1)]]
  roots = [x for x in cond if "ROOT" in x]
  if (
    len(constants) == 1
    and len(roots) == 1
    and "compare(" in roots[0]
    and "direction=LT" in roots[0]
  ):
    return constants[0]
  return 0


def _computations(hlo_text: str) -> tuple[dict[str, list[str]], str | None]:
  """{computation name: its instruction lines}, and the entry computation's name."""
  comps: dict[str, list[str]] = {}
  entry, current = None, None
  for line in hlo_text.splitlines():
    if current is None:
      m = _HEADER.match(line)
      if m:
        current = m.group("name")
        comps[current] = []
        if line.startswith("ENTRY"):
          entry = current
    elif line.startswith("}"):
      current = None
    else:
      comps[current].append(line)
  return comps, entry


def run_counts(hlo_text: str) -> tuple[dict[str, int], int]:
  """{computation: times it runs per program run}, and the number of loops without a known
  trip count (counted once)."""
  comps, entry = _computations(hlo_text)
  calls: dict[str, list[tuple[str, int]]] = {name: [] for name in comps}  # callee -> callers
  unknown = 0
  for name, lines in comps.items():
    for line in lines:
      trips = 1
      if " while(" in line:
        trips = _trip_count(line, comps)
        unknown += trips == 0
        trips = trips or 1
      for m in _CALLEE.finditer(line):
        kind = m.group("kind") or m.group("branch")
        names = [m.group("names")] if m.group("kind") else _CALLEE_NAME.findall(m.group("branches"))
        for callee in names:
          if callee in calls:
            calls[callee].append((name, trips if kind in ("body", "condition") else 1))
  memo: dict[str, int] = {}

  def runs(name: str) -> int:
    if name not in memo:
      if name == entry or not calls[name]:  # the entry, or an unreachable computation
        memo[name] = int(name == entry)
      else:
        memo[name] = sum(runs(caller) * factor for caller, factor in calls[name])
    return memo[name]

  return {name: runs(name) for name in comps}, unknown


def loop_trip_counts(hlo_text: str) -> list[int]:
  """The trip count of each while loop in the program (0 where it is unknown; `_trip_count`)."""
  comps, _ = _computations(hlo_text)
  return [_trip_count(line, comps) for line in hlo_text.splitlines() if " while(" in line]


def collective_bytes(hlo_text: str) -> dict[str, int]:
  """{kind: bytes per device per program run} and {kind_count: instructions run} for every kind
  in KINDS (0 when absent), plus `unknown_trip_loops`."""
  totals = dict.fromkeys(KINDS, 0)
  counts = dict.fromkeys(KINDS, 0)
  comps, entry = _computations(hlo_text)
  runs, unknown = run_counts(hlo_text)
  if entry is None:  # a bare instruction list: each line runs once
    comps, runs = {"": hlo_text.splitlines()}, {"": 1}
  for line, times in ((line, runs[c]) for c, lines in comps.items() for line in lines):
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
    totals[op] += size * times
    counts[op] += times
  return {
    **totals,
    **{f"{k}_count": v for k, v in counts.items()},
    "unknown_trip_loops": unknown,
  }
