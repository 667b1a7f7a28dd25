"""Model FLOPs of a function, counted from its jaxpr: matmuls and convolutions.

The usual model-FLOPs convention (the numerator of MFU): 2 FLOPs per
multiply-add of every dot_general and convolution the program states, which
for a transformer is 2 x parameters x tokens plus the attention's two
score/value matmuls. Elementwise work, softmax and norms are not counted.

Counting the jaxpr of the whole train step (forward, `jax.grad`'s backward and
the optimizer) gives the backward pass exactly where gradients flow: a trunk
under stop_gradient gets no backward matmuls, weights outside the
differentiated tree get no weight-gradient matmuls, and the input gets no
input-gradient matmul. Rematerialisation would add the recomputed forward
to the jaxpr; count a module with remat off for model FLOPs (the planner does).

Sub-jaxprs are followed (jit, remat, custom_vjp/jvp, while/cond bodies);
`scan` bodies count `length` times, `cond` the most expensive branch, `while`
loops once (their trip count is not static). Kernels written as custom calls
(e.g. Pallas) state no dot_general here and count zero.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
from jax.extend import core as jex_core


def dot_general_flops(eqn) -> int:
  lhs, rhs = (v.aval.shape for v in eqn.invars[:2])
  (lc, rc), (lb, _rb) = eqn.params["dimension_numbers"]
  contract = math.prod(lhs[i] for i in lc)
  batch = math.prod(lhs[i] for i in lb)
  lhs_free = math.prod(d for i, d in enumerate(lhs) if i not in lc and i not in lb)
  rhs_free = math.prod(d for i, d in enumerate(rhs) if i not in rc and i not in _rb)
  return 2 * batch * lhs_free * rhs_free * contract


def conv_flops(eqn) -> int:
  """2 x output elements x (kernel window x input features per group)."""
  out = eqn.outvars[0].aval.shape
  rhs = eqn.invars[1].aval.shape
  dn = eqn.params["dimension_numbers"]
  rhs_spec = dn.rhs_spec  # (out feature dim, in feature dim, *spatial dims)
  window = math.prod(rhs[i] for i in rhs_spec[2:])
  in_per_group = rhs[rhs_spec[1]]
  return 2 * math.prod(out) * window * in_per_group


def _sub_jaxprs(eqn):
  for v in eqn.params.values():
    for x in v if isinstance(v, (tuple, list)) else (v,):
      if isinstance(x, jex_core.ClosedJaxpr):
        yield x.jaxpr
      elif isinstance(x, jex_core.Jaxpr):
        yield x


def jaxpr_flops(jaxpr) -> int:
  total = 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "dot_general":
      total += dot_general_flops(eqn)
    elif name == "conv_general_dilated":
      total += conv_flops(eqn)
    elif name == "scan":
      total += eqn.params["length"] * jaxpr_flops(eqn.params["jaxpr"].jaxpr)
    elif name == "cond":
      total += max(jaxpr_flops(b.jaxpr) for b in eqn.params["branches"])
    else:
      total += sum(jaxpr_flops(j) for j in _sub_jaxprs(eqn))
  return total


def count(fn: Callable, *args: Any, **kwargs: Any) -> int:
  """Matmul + convolution FLOPs of fn(*args); args may be ShapeDtypeStructs."""
  return jaxpr_flops(jax.make_jaxpr(fn, **kwargs)(*args).jaxpr)
