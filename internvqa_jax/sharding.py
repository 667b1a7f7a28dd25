"""Device mesh, regex-driven parameter sharding (FSDP), global batches, sharded init.

The mesh has two Auto (GSPMD) axes, ('data', 'fsdp'). Batches are split over
both axes jointly, so every device gets a different slice of the batch;
parameters (and their optimizer moments) are additionally split over 'fsdp'
and all-gathered by XLA where needed. fsdp=1 is plain data parallelism.

Auto axes on purpose: since JAX 0.8/0.9 `jax.make_mesh` defaults to Explicit
axes, under which an FSDP-sharded weight times a data-sharded batch is a type
error instead of an all-gather (jax_practices spec 3.2).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from internvqa_jax import tree_paths

AXES = ("data", "fsdp")
BATCH_AXES = ("data", "fsdp")  # The batch's leading axis is split over both.
DEFAULT_MIN_SIZE = 2**14  # Elements; smaller tensors are replicated (gather cost > memory win).
DEFAULT_RULES = ((".*", "fsdp"),)
TACTICS = ("replicate", "fsdp")


def make_mesh(data: int = -1, fsdp: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Mesh of shape (data, fsdp) with Auto axes; one size may be -1 (= the rest)."""
  devices = list(jax.devices() if devices is None else devices)
  n = len(devices)
  sizes = {"data": data, "fsdp": fsdp}
  for name, s in sizes.items():
    if not isinstance(s, (int, np.integer)) or (s != -1 and s < 1):
      raise ValueError(f"mesh axis {name!r} size must be a positive int or -1, got {s!r}")
  if data == -1 and fsdp == -1:
    raise ValueError("only one mesh axis size may be -1")
  if data == -1 or fsdp == -1:
    known = fsdp if data == -1 else data
    if n % known:
      raise ValueError(f"cannot infer the -1 mesh axis: {n} devices are not divisible by {known}")
    data, fsdp = (n // known, fsdp) if data == -1 else (data, n // known)
  if data * fsdp != n:
    raise ValueError(
      f"mesh data={data} x fsdp={fsdp} = {data * fsdp} devices, but {n} are "
      f"available; sizes must multiply to the device count"
    )
  if len({d.id for d in devices}) != n:
    raise ValueError("devices for the mesh contain duplicates")
  # jax.make_mesh orders devices by physical topology (mesh_utils); the Auto
  # axis types must be explicit, its default is Explicit.
  return jax.make_mesh(
    (int(data), int(fsdp)), AXES, axis_types=(AxisType.Auto,) * len(AXES), devices=devices
  )


def fsdp_spec(shape: Sequence[int], fsdp_size: int, min_size: int = DEFAULT_MIN_SIZE) -> P:
  """PartitionSpec splitting the largest dim divisible by fsdp_size over 'fsdp'.

  Replicated (P()) when fsdp_size == 1, the tensor has fewer than `min_size`
  elements, or no dimension is divisible. Among equally large dims the first wins.
  """
  shape = tuple(int(d) for d in shape)
  if fsdp_size == 1 or math.prod(shape) < min_size:
    return P()
  for dim in sorted(range(len(shape)), key=lambda i: -shape[i]):  # stable: first of equals
    if shape[dim] % fsdp_size == 0:
      spec = [None] * len(shape)
      spec[dim] = "fsdp"
      return P(*spec)
  return P()


def _check_mesh(mesh: Mesh) -> None:
  if tuple(mesh.axis_names) != AXES:
    raise ValueError(f"mesh axes must be {AXES} (use make_mesh), got {mesh.axis_names}")


def infer_param_shardings(
  abstract_tree: Any,
  mesh: Mesh,
  rules: Sequence[tuple[str, str]] | None = None,
  min_size: int = DEFAULT_MIN_SIZE,
) -> Any:
  """Same-structure tree of NamedSharding from (regex, tactic) rules.

  Works on any pytree of arrays / ShapeDtypeStructs (parameters, optimizer
  states, whole train states). Names are '/'-joined key paths (see
  tree_paths.tree_names); the first rule whose regex fullmatches wins and every
  leaf must match one (default rules: everything 'fsdp'). Tactics:
    'replicate'  full copy on every device;
    'fsdp'       `fsdp_spec`: largest dim divisible by the fsdp size, if the
                 tensor has >= min_size elements; else replicated.
  Because 'fsdp' depends on the shape only, Adam moments inferred with the
  same rules get exactly the sharding of their parameter.
  """
  _check_mesh(mesh)
  compiled = tree_paths.compile_rules(DEFAULT_RULES if rules is None else rules, "sharding rule")
  for p, tactic in compiled:
    if tactic not in TACTICS:
      raise ValueError(
        f"sharding rule {p.pattern!r}: unknown tactic {tactic!r}, choose from {TACTICS}"
      )
  fsdp_size = mesh.shape["fsdp"]
  unmatched = []

  def one(keypath, leaf):
    name = tree_paths.keypath_name(keypath)
    tactic = tree_paths.first_match(name, compiled, default=None)
    if tactic is None:
      unmatched.append(name)
      return NamedSharding(mesh, P())
    if tactic == "replicate":
      return NamedSharding(mesh, P())
    return NamedSharding(
      mesh,
      fsdp_spec(np.shape(leaf) if not hasattr(leaf, "shape") else leaf.shape, fsdp_size, min_size),
    )

  out = jax.tree_util.tree_map_with_path(one, abstract_tree)
  if unmatched:
    raise ValueError(
      f"{len(unmatched)} leaves match no sharding rule "
      f"({[p.pattern for p, _ in compiled]}): {unmatched}"
    )
  return out


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over ('data', 'fsdp') jointly; other axes whole."""
  _check_mesh(mesh)
  return NamedSharding(mesh, P(BATCH_AXES))


def make_global_batch(local_batch: Mapping[str, Any], mesh: Mesh) -> dict[str, Any]:
  """Process-local numpy batch -> global jax.Arrays sharded by `batch_sharding`.

  Each process passes its own slice (global batch / process count rows); the
  global leading dim is the sum over processes. Arrays of strings, bytes or
  objects (video ids, file names) cannot live on an accelerator: they are
  returned unchanged as host numpy arrays holding this process's rows only.
  """
  sharding = batch_sharding(mesh)
  local_devices = [d for d in mesh.devices.flat if d.process_index == jax.process_index()]
  n_local = len(local_devices)
  out: dict[str, Any] = {}
  lead = None
  for key, value in local_batch.items():
    a = np.asarray(value)
    if a.ndim == 0:
      raise ValueError(f"batch field {key!r} is a scalar; every field needs a leading batch axis")
    if lead is None:
      lead = (key, a.shape[0])
    elif a.shape[0] != lead[1]:
      raise ValueError(f"batch field {key!r} has {a.shape[0]} rows but {lead[0]!r} has {lead[1]}")
    if a.dtype.kind in "OSU":
      out[key] = a
      continue
    if a.shape[0] % n_local:
      raise ValueError(
        f"batch field {key!r}: local batch {a.shape[0]} is not divisible by the "
        f"{n_local} local devices of the mesh"
      )
    out[key] = jax.make_array_from_process_local_data(sharding, a)
  return out


def place_host_tree(tree: Any, shardings: Any) -> Any:
  """Puts a host (numpy) tree, identical on every process, onto the mesh.

  Each device copies only its own shard (make_array_from_callback), so no
  device ever holds a full replica of an FSDP-sharded tensor. Use for
  parameters loaded from a checkpoint file on the host.
  """

  def one(x, s):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, s, lambda idx: x[idx])

  return jax.tree.map(one, tree, shardings)
