"""Per-example gradients: vmap/lax.map chunks vs a Python loop, parameter subsets (boolean
pytrees, entry masks, nnx filters), preconditioning/normalization/sketching, HVPs vs the
Hessian, sharded = unsharded on the 8 fake CPU devices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tnx import sharding as shd
from tnx.selection.influence import grads, sandbox
from tnx.selection.influence.sketch import RademacherSketch


@pytest.fixture(scope="module")
def problem():
  cfg = sandbox.SandboxConfig(dim=4, hidden=5, num_classes=3, num_domains=3, per_domain=5,
                              target_size=4, heldout_size=4)
  data = sandbox.make_sandbox(cfg, jnp.float64)
  params = sandbox.mlp_init(1, 4, 5, 3, jnp.float64)
  return params, data["pool"]


def loop_grads(params, exs, subset):
  grad = jax.jit(lambda p, e: subset.flatten(jax.grad(sandbox.mlp_loss)(p, e)))
  n = exs["x"].shape[0]
  return np.stack([np.asarray(grad(params, jax.tree.map(lambda a: a[i], exs)))
                   for i in range(n)])


def test_exact_grads_match_loop_for_every_chunk_size(problem):
  params, pool = problem
  subset = grads.ParamSubset(params)
  ref = loop_grads(params, pool, subset)
  for chunk in (1, 4, 15, 64):
    g = grads.per_example_grads(sandbox.mlp_loss, params, pool, subset=subset, chunk_size=chunk)
    np.testing.assert_allclose(g, ref, rtol=1e-12, atol=1e-14)


def test_subset_leaf_and_entry_masks(problem):
  params, pool = problem
  entry = np.zeros((4, 5), bool)
  entry[[0, 2, 3], [1, 4, 0]] = True
  mask = {"w1": entry, "b1": False, "w2": True, "b2": np.bool_(False)}
  subset = grads.ParamSubset(params, mask)
  assert subset.size == 3 + 15
  g = grads.per_example_grads(sandbox.mlp_loss, params, pool, subset=subset, chunk_size=4)
  full = jax.jit(jax.vmap(lambda e: jax.grad(sandbox.mlp_loss)(params, e)))(pool)
  want = np.concatenate([np.asarray(full["w1"]).reshape(15, -1)[:, np.flatnonzero(entry)],
                         np.asarray(full["w2"]).reshape(15, -1)], axis=1)
  np.testing.assert_allclose(g, want, rtol=1e-12)
  back = subset.unflatten(g[0], params)
  assert float(jnp.abs(back["b1"]).max()) == 0.0
  np.testing.assert_allclose(np.asarray(back["w1"])[entry], g[0, :3])


def test_subset_errors(problem):
  params, _ = problem
  with pytest.raises(ValueError, match="selects no parameter"):
    grads.ParamSubset(params, jax.tree.map(lambda _: False, params))
  with pytest.raises(ValueError, match="structure"):
    grads.ParamSubset(params, {"w1": True})
  with pytest.raises(ValueError, match="does not match"):
    grads.ParamSubset(params, dict(jax.tree.map(lambda _: True, params), w1=np.ones(3, bool)))
  with pytest.raises(ValueError, match="target must hold at least one example"):
    grads.num_examples({"x": jnp.zeros((0, 3))}, "target")


def test_nnx_filter_subset():
  class Net(nnx.Module):
    def __init__(self, rngs):
      self.up = nnx.Linear(3, 4, rngs=rngs)
      self.down = nnx.Linear(4, 2, rngs=rngs)

  state = nnx.state(Net(nnx.Rngs(0)), nnx.Param)
  mask = grads.subset_mask_from_filter(state, nnx.PathContains("down"))
  assert mask == {"up": {"kernel": False, "bias": False}, "down": {"kernel": True, "bias": True}}
  subset = grads.ParamSubset(nnx.to_pure_dict(state), mask)
  assert subset.size == 4 * 2 + 2
  with pytest.raises(ValueError, match="selects no parameter"):
    grads.subset_mask_from_filter(state, nnx.PathContains("nothing"))


def test_precondition_normalize_sketch_compose(problem):
  params, pool = problem
  subset = grads.ParamSubset(params)
  raw = loop_grads(params, pool, subset)
  a = np.linspace(0.5, 2.0, subset.size)
  sketch = RademacherSketch(subset.size, 7, seed=3, block_rows=10)
  g = grads.per_example_grads(sandbox.mlp_loss, params, pool, subset=subset, chunk_size=4,
                              precondition=jnp.asarray(a), normalize=True, sketch=sketch)
  pre = raw * a
  want = (pre / np.linalg.norm(pre, axis=1, keepdims=True)) @ np.asarray(sketch.matrix())
  np.testing.assert_allclose(g, want, rtol=1e-10, atol=1e-12)


def test_normalize_keeps_zero_gradient_finite():
  v = jnp.zeros((2, 3)).at[1].set(jnp.array([3.0, 0.0, 4.0]))
  out = grads.safe_normalize(v)
  np.testing.assert_allclose(out, [[0, 0, 0], [0.6, 0, 0.8]])


def test_hvp_matches_hessian(problem):
  params, pool = problem
  mask = {"w1": False, "b1": True, "w2": True, "b2": True}
  subset = grads.ParamSubset(params, mask)
  loss = grads.mean_loss_fn(sandbox.mlp_loss, pool)
  sel = subset.select(params)

  def flat_loss(v):
    return loss(subset.combine(params, subset.select(subset.unflatten(v, params))))
  hess = jax.jit(jax.hessian(flat_loss))(subset.flatten_selected(sel))
  hvp = jax.jit(grads.flat_hvp_fn(loss, params, subset))
  v = jax.random.normal(jax.random.key(0), (subset.size,), jnp.float64)
  np.testing.assert_allclose(hvp(v), hess @ v, rtol=1e-10, atol=1e-12)


def test_sharded_equals_unsharded(problem):
  params, pool = problem  # 15 rows: not a multiple of the 8 data devices (padding path)
  mesh = shd.make_mesh()
  assert mesh.shape["data"] == 8
  subset = grads.ParamSubset(params)
  one = grads.per_example_grads(sandbox.mlp_loss, params, pool, subset=subset, chunk_size=2)
  many = grads.per_example_grads(sandbox.mlp_loss, params, pool, subset=subset, chunk_size=2,
                                 mesh=mesh)
  np.testing.assert_allclose(many, one, rtol=1e-12, atol=1e-14)
