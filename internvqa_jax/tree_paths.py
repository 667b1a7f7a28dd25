"""Name-based views of parameter trees: '/'-joined paths and regex rules.

Optimizer groups, freezing, and sharding all select parameters by path regex
(big_vision style). Everything here keys on the same names, e.g.
'blocks_39/attn/qkv/kernel', so one rule list means the same thing everywhere.

Parameter trees are nested Mappings (plain dicts or Flax FrozenDicts) whose
leaves are arrays (or jax.ShapeDtypeStruct). For other pytrees (optax states)
use `tree_names`, which joins jax key paths the same way.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import jax

SEP = "/"
_NO_MATCH = object()  # Sentinel: "no rule matched" (None may be a legitimate label).


def flatten(tree: Mapping[str, Any], sep: str = SEP) -> dict[str, Any]:
  """{path: leaf} for a nested Mapping; empty sub-dicts vanish."""
  if not isinstance(tree, Mapping):
    raise TypeError(f"expected a nested Mapping of parameters, got {type(tree).__name__}")
  out: dict[str, Any] = {}

  def rec(prefix: str, node: Any) -> None:
    if isinstance(node, Mapping):
      for k, v in node.items():
        k = str(k)
        if sep in k:
          raise ValueError(f"key {k!r} under {prefix or '<root>'!r} contains the separator {sep!r}")
        rec(f"{prefix}{sep}{k}" if prefix else k, v)
    else:
      out[prefix] = node

  rec("", tree)
  return out


def unflatten(flat: Mapping[str, Any], sep: str = SEP) -> dict[str, Any]:
  """Inverse of `flatten`; raises when a path is both a leaf and a prefix."""
  out: dict[str, Any] = {}
  for path, leaf in flat.items():
    parts = path.split(sep)
    node = out
    for i, p in enumerate(parts[:-1]):
      child = node.setdefault(p, {})
      if not isinstance(child, dict):
        raise ValueError(f"path {path!r}: {sep.join(parts[: i + 1])!r} is already a leaf")
      node = child
    if parts[-1] in node:
      raise ValueError(f"path {path!r} is given twice or is also a prefix of another path")
    node[parts[-1]] = leaf
  return out


def _key_name(k: Any) -> str:
  for attr in ("key", "name", "idx"):  # DictKey, GetAttrKey, SequenceKey/FlattenedIndexKey
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)


def keypath_name(keypath: Sequence[Any], sep: str = SEP) -> str:
  """'/'-joined name of a jax key path: a dict tree gives the `flatten` path."""
  return sep.join(_key_name(k) for k in keypath)


def tree_names(tree: Any, sep: str = SEP) -> Any:
  """Same-structure tree whose leaves are their '/'-joined names (any pytree).

  For an optax state, names look like '0/mu/blocks_0/attn/qkv/kernel'.
  """
  return jax.tree_util.tree_map_with_path(lambda kp, _: keypath_name(kp, sep), tree)


def compile_rules(
  rules: Iterable[tuple[str, Any]], what: str = "rule"
) -> list[tuple[re.Pattern, Any]]:
  """[(regex, value)] -> [(compiled, value)], validating the patterns."""
  out = []
  for i, rule in enumerate(rules):
    if not (isinstance(rule, (tuple, list)) and len(rule) == 2 and isinstance(rule[0], str)):
      raise ValueError(f"{what} #{i} must be a (regex, value) pair, got {rule!r}")
    pattern, value = rule
    if pattern.startswith(SEP):
      raise ValueError(f"{what} #{i} {pattern!r}: paths have no leading {SEP!r}")
    try:
      out.append((re.compile(pattern), value))
    except re.error as e:
      raise ValueError(f"{what} #{i} {pattern!r} is not a valid regex: {e}") from e
  return out


def first_match(name: str, compiled: Sequence[tuple[re.Pattern, Any]], default: Any = ...) -> Any:
  """Value of the first rule whose regex fullmatches `name` (or `default`)."""
  for pattern, value in compiled:
    if pattern.fullmatch(name):
      return value
  if default is ...:
    raise KeyError(name)
  return default


def match_labels(
  tree: Mapping[str, Any], rules: Iterable[tuple[str, Any]], what: str = "rule"
) -> dict[str, Any]:
  """Tree of labels: each leaf gets the value of the first rule fullmatching its path.

  Every leaf must match some rule; otherwise the error lists all unmatched paths
  (add a catch-all ('.*', value) rule if a default is intended).
  """
  compiled = compile_rules(rules, what)
  flat = flatten(tree)
  labels, unmatched = {}, []
  for path in flat:
    value = first_match(path, compiled, default=_NO_MATCH)
    if value is _NO_MATCH:
      unmatched.append(path)
    labels[path] = value
  if unmatched:
    raise ValueError(
      f"{len(unmatched)} parameter(s) match no {what} "
      f"(patterns: {[p.pattern for p, _ in compiled]}): {unmatched}"
    )
  return unflatten(labels)


def map_with_path(fn: Callable[[str, Any], Any], tree: Mapping[str, Any]) -> dict[str, Any]:
  """{path: leaf} -> {path: fn(path, leaf)}, keeping the nesting."""
  return unflatten({p: fn(p, x) for p, x in flatten(tree).items()})


def split_tree(tree: Mapping[str, Any], mask: Mapping[str, Any]) -> tuple[dict, dict]:
  """(leaves where mask is True, the others), both as nested dicts.

  Used at the jit boundary: differentiate the first tree only, pass the second
  as a plain (non-differentiated) argument. `mask` has the same paths as `tree`
  and Python bool leaves.
  """
  flat, flat_mask = flatten(tree), flatten(mask)
  if set(flat) != set(flat_mask):
    missing = sorted(set(flat) - set(flat_mask))
    extra = sorted(set(flat_mask) - set(flat))
    raise ValueError(f"mask does not fit the tree: missing {missing}, unexpected {extra}")
  selected, rest = {}, {}
  for path, leaf in flat.items():
    m = flat_mask[path]
    if not isinstance(m, bool):
      raise TypeError(f"mask leaf at {path!r} must be a Python bool, got {m!r}")
    (selected if m else rest)[path] = leaf
  return unflatten(selected), unflatten(rest)


def merge_trees(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
  """Union of two disjoint trees (inverse of `split_tree`); overlapping paths raise."""
  fa, fb = flatten(a), flatten(b)
  both = sorted(set(fa) & set(fb))
  if both:
    raise ValueError(f"trees to merge overlap at {both}")
  return unflatten({**fa, **fb})
