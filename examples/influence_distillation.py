"""Influence Distillation (Nikdan et al., arXiv 2505.19051): exact sandbox and LM selection.

  python -m examples.influence_distillation --experiment=sandbox   # exact maths on an MLP
  python -m examples.influence_distillation --experiment=lm        # tnx LM, 3 targets x 3 seeds
  python -m examples.influence_distillation --experiment=lm --smoke           # seconds
  python -m examples.influence_distillation --experiment=sandbox --docs       # figures -> docs/

Writes <workdir>/<experiment>/{results.json, results.md, *.png}; config:
tnx/configs/influence_distillation.py (any field: --config.lm.k=128).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import optax
from scipy.stats import spearmanr

from tnx import validation
from tnx.configs.influence_distillation import EXPERIMENTS
from tnx.selection import influence as idl
from tnx.selection.influence import sandbox
from tnx.train import config as config_lib
from tnx.train import metrics, optim


def parse(argv: list[str]) -> mlc.ConfigDict:
  """tnx.train.config.parse_args (which takes --experiment=lm and --docs), then the
  experiment's name checked."""
  cfg, _ = config_lib.parse_args(argv, default="influence_distillation")
  validation.one_of("experiment", cfg.experiment, EXPERIMENTS)
  return cfg


def floats(text: Any) -> list[float]:
  return [float(t) for t in config_lib.split_list(text)]


def ints(text: Any) -> list[int]:
  return [int(t) for t in config_lib.split_list(text)]


def jaccard(a: Any, b: Any) -> float:
  a, b = set(np.asarray(a).tolist()), set(np.asarray(b).tolist())
  return len(a & b) / max(len(a | b), 1)


def table(header: list[str], rows: list[list[Any]]) -> str:
  fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  return "\n".join(lines + ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows])


# ===================================================================================== sandbox


def run_sandbox(c: mlc.ConfigDict, out: str) -> dict[str, Any]:
  """Exact gradients and Hessian of a small MLP: every approximation against its target."""
  s = c.sandbox
  sc = sandbox.SandboxConfig(dim=s.dim, hidden=s.hidden, num_classes=s.num_classes,
                             num_domains=s.num_domains, per_domain=s.per_domain,
                             target_size=s.target_size, heldout_size=s.heldout_size,
                             seed=c.seed)
  data = sandbox.make_sandbox(sc, jnp.float64)
  pool, tgt, held = data["pool"], data["target"], data["heldout"]
  domain = np.asarray(data["domain"])
  n = int(pool["x"].shape[0])
  rng = np.random.default_rng(c.seed)

  # Warm-up with tnx.train's AdamW (schedule, clipping, decay mask); keep the optax state.
  total = s.warm_steps + s.train_steps
  opt = mlc.ConfigDict(dict(peak_lr=s.warm_lr, warmup_steps=max(1, s.warm_steps // 10),
                            final_lr_ratio=0.1, b1=0.9, b2=s.b2, eps=1e-8, weight_decay=0.1,
                            no_decay=("b1", "b2"), clip=1.0))
  tx = optim.make_optimizer(opt, total)
  mask = lambda p: optim.decay_mask(p, exclude=("b1", "b2"))

  @jax.jit
  def adam_step(params, state, batch):
    updates, state = tx.update(jax.grad(sandbox.mean_loss)(params, batch), state, params)
    return optax.apply_updates(params, updates), state

  params = sandbox.mlp_init(c.seed, s.dim, s.hidden, s.num_classes, jnp.float64)
  state = tx.init(params)
  for _ in range(s.warm_steps):
    idx = rng.choice(n, s.warm_batch, replace=False)
    params, state = adam_step(params, state, jax.tree.map(lambda a: a[idx], pool))
  step = idl.adam_affine(state, params, learning_rate=optim.schedule(opt, total), b1=0.9,
                         b2=s.b2, eps=1e-8, weight_decay=0.1, weight_decay_mask=mask)
  lr_next = float(step.lr)

  # Exact quantities over all parameters.
  subset = idl.ParamSubset(params)
  g_s = idl.per_example_grads(sandbox.mlp_loss, params, pool, subset=subset, chunk_size=256)
  target_loss = jax.jit(lambda p: sandbox.mean_loss(p, tgt))
  held_loss = jax.jit(lambda p: sandbox.mean_loss(p, held))
  g_t = subset.flatten(jax.grad(target_loss)(params))
  flat0 = subset.flatten(params)
  hess = jax.jit(jax.hessian(lambda v: target_loss(subset.unflatten(v, params))))(flat0)
  hvp = lambda v: hess @ v
  a_p, b_p = subset.flatten(step.a), subset.flatten(step.b)
  g_pre = g_s * a_p
  p_gd, p_adam = np.asarray(g_s @ g_t), np.asarray(g_pre @ g_t)
  res: dict[str, Any] = {"pool": n, "params": subset.size, "lr_next": lr_next}
  md = [f"Pool n = {n} ({s.num_domains} domains), {subset.size} parameters, target m = "
        f"{s.target_size}, next Adam lr = {lr_next:.3g}."]

  # (a) Taylor prediction vs the real change of the target loss.
  w = jnp.asarray(rng.dirichlet(np.ones(n)) * n)
  rows, res["taylor"] = [], {}
  for kind, a, b, scale in (("gd", jnp.ones_like(a_p), jnp.zeros_like(b_p), 1.0),
                            ("adam", a_p, b_p, s.warm_lr)):
    d = idl.scores.weighted_direction(g_s, w, a, b)
    lrs = np.array(floats(s.taylor_lrs)) * scale
    r1, r2, true = [], [], []
    for lr in lrs:
      t = float(target_loss(subset.unflatten(flat0 - lr * d, params)) - target_loss(params))
      true.append(t)
      r1.append(abs(t - float(idl.scores.predicted_change(g_t, None, d, lr))))
      r2.append(abs(t - float(idl.scores.predicted_change(g_t, hvp, d, lr))))
    sl = lambda r: float(np.polyfit(np.log(lrs[-3:]), np.log(r[-3:]), 1)[0])
    res["taylor"][kind] = dict(lrs=lrs.tolist(), true=true, resid1=r1, resid2=r2,
                               slope1=sl(r1), slope2=sl(r2))
    rows.append([kind, sl(r1), sl(r2), r1[-1], r2[-1]])
  md += ["\n### Taylor check (random w on the simplex)\n",
         table(["step", "slope 1st-order resid", "slope 2nd-order resid",
                "resid1 @ smallest lr", "resid2 @ smallest lr"], rows)]
  metrics.plot_curves({f"{k} {o}": (res["taylor"][k]["lrs"], res["taylor"][k][f"resid{i}"])
                       for k in ("gd", "adam") for i, o in ((1, "1st"), (2, "2nd"))},
                      os.path.join(out, "id_sandbox_taylor.png"), xlabel="learning rate",
                      ylabel="|true - predicted| change", title="Taylor residuals",
                      xscale="log", yscale="log")

  # (b) GD vs Adam influences: which samples, and what one Adam step (the modelled
  # mechanism) and a longer Adam run on them do.
  k = s.k
  picks = {"uniform": rng.choice(n, k, replace=False),
           "aligned domain (oracle)": rng.choice(np.flatnonzero(domain == 0), k, replace=False),
           "gd": idl.robust_first_order(p_gd, k)[0], "adam": idl.robust_first_order(p_adam, k)[0]}
  rows = [["warm-up (no step)", 0.0, 0.0, 0.0, float(held_loss(params)),
           float(sandbox.accuracy(params, held)), "-", "-", "-"]]
  res["gd_vs_adam"] = {"warm": dict(loss=rows[0][4], acc=rows[0][5])}
  for name, idx in picks.items():
    sub = jax.tree.map(lambda a: a[jnp.asarray(idx)], pool)
    d = b_p + a_p * jnp.mean(g_s[jnp.asarray(idx)], axis=0)
    modelled = float(target_loss(subset.unflatten(flat0 - lr_next * d, params))
                     - target_loss(params))
    p1, _ = adam_step(params, state, sub)
    real_t = float(target_loss(p1) - target_loss(params))
    real_h = float(held_loss(p1) - held_loss(params))
    pt, st = params, state
    for _ in range(s.train_steps):
      pt, st = adam_step(pt, st, sub)
    comp = np.bincount(domain[np.asarray(idx)], minlength=s.num_domains) / k
    res["gd_vs_adam"][name] = dict(modelled=modelled, real_target=real_t, real_heldout=real_h,
                                   trained_loss=float(held_loss(pt)),
                                   trained_acc=float(sandbox.accuracy(pt, held)),
                                   domains=comp.tolist())
    rows.append([name, modelled, real_t, real_h, float(held_loss(pt)),
                 float(sandbox.accuracy(pt, held)), comp[0], comp[1], comp[2]])
  res["gd_vs_adam"]["overlap"] = jaccard(picks["gd"], picks["adam"])
  res["gd_vs_adam"]["spearman"] = float(spearmanr(p_gd, p_adam)[0])
  md += [f"\n### GD vs Adam influences (k = {k}; top-k Jaccard "
         f"{res['gd_vs_adam']['overlap']:.2f}, Spearman {res['gd_vs_adam']['spearman']:.2f})\n",
         "One Adam step on the selection's mean gradient: modelled (frozen second moment) and "
         f"real (optax) change of the target-set loss, real change of the held-out loss; then "
         f"{s.train_steps} more real Adam steps on the selection.\n",
         table(["selection", "target dL, modelled", "target dL, real", "held-out dL, real",
                f"held-out loss after {s.train_steps}", "accuracy", "share aligned",
                "share look-alike", "share noisy"], rows)]

  # (c) First vs second order at the modelled step's lr.
  rows, res["order"] = [], []
  for lr in floats(s.order_lrs):
    lr = lr * lr_next
    p2 = np.asarray(g_pre @ (g_t - lr * hvp(b_p)))
    qmv = jax.jit(lambda v: g_pre @ (hess @ (g_pre.T @ v)) / n)
    i1, w1, _ = idl.robust_first_order(p_adam, k)
    i2, w2, lam2 = idl.robust_qp(jnp.asarray(p2), qmv, lr, k, steps=s.qp_steps, tol=1e-9)

    def change(idx, wts, lr=lr):
      full = jnp.zeros(n).at[jnp.asarray(idx)].set(jnp.asarray(wts))
      d = idl.scores.weighted_direction(g_s, full, a_p, b_p)
      return float(target_loss(subset.unflatten(flat0 - lr * d, params)) - target_loss(params))
    row = dict(lr=lr, spearman=float(spearmanr(p_adam, p2)[0]), jaccard=jaccard(i1, i2),
               change_first=change(i1, w1), change_second=change(i2, w2), lam=lam2)
    res["order"].append(row)
    rows.append([lr, row["spearman"], row["jaccard"], row["change_first"],
                 row["change_second"]])
  md += ["\n### First vs second order (Adam step, k non-zero weights each)\n",
         table(["lr", "Spearman(p1, p2)", "support Jaccard", "true dL_T, 1st-order w",
                "true dL_T, 2nd-order w"], rows)]
  metrics.plot_curves({"first-order weights": ([r["lr"] for r in res["order"]],
                                               [r["change_first"] for r in res["order"]]),
                       "second-order (QP) weights": ([r["lr"] for r in res["order"]],
                                                     [r["change_second"] for r in res["order"]])},
                      os.path.join(out, "id_sandbox_order.png"), xlabel="learning rate",
                      ylabel="true change of target loss", title="first vs second order",
                      xscale="log")

  # (d) lambda-sparsity curve (first order closed form).
  top = np.sort(p_adam)[::-1]
  lo = max(idl.weights.lambda_interval_for_k(top[:2], 1, n)[1], 1e-12)
  hi = idl.weights.lambda_interval_for_k(top, n, n)[0] * 2
  lams = np.geomspace(lo / 3, hi, s.lambda_points)
  sizes = [idl.weights.support_size_first_order(top, lam, n) for lam in lams]
  res["sparsity"] = dict(lams=lams.tolist(), support=sizes)
  metrics.plot_curves({"first order": (lams.tolist(), sizes)},
                      os.path.join(out, "id_sandbox_sparsity.png"), xlabel="lambda",
                      ylabel="non-zero weights", title="support size vs L2 strength",
                      xscale="log", yscale="log")

  # (e) Landmark propagation error vs number of landmarks. Embeddings see the label the way an
  # LM's see the response: each feature map is placed in the block of the sample's class.
  prefix = {"w1": params["w1"], "b1": params["b1"]}
  labelled = lambda e, v: (jax.nn.one_hot(e["y"], s.num_classes)[:, None] * v[None]).reshape(-1)
  feat = lambda p, e: labelled(e, sandbox.mlp_hidden(p, e["x"]))
  width = s.jvp_tangents * s.num_classes * s.hidden
  embs = {"jvp": (idl.jvp_embeddings(feat, prefix, pool, key=jax.random.key(c.seed),
                                     num_tangents=s.jvp_tangents, chunk_size=256), "rbf"),
          "input": (jax.vmap(lambda e: labelled(e, e["x"]))(pool), "rbf"),
          "random": (jnp.asarray(rng.standard_normal((n, width))), "rbf"),
          "gradient (oracle, linear)": (g_pre, "linear")}
  counts = [min(x, n) for x in ints(s.landmark_counts)]
  top_k = set(np.argsort(-p_adam)[:k].tolist())
  res["landmarks"] = {}
  curves = {}
  for damp in floats(s.damps):
    for ename, (emb, kern) in embs.items():
      errs, rhos, jacs = [], [], []
      for ell in counts:
        e_r, r_r, j_r = [], [], []
        for seed in range(s.landmark_seeds if ell < n else 1):
          idx = idl.landmarks.random_landmarks(jax.random.key(seed), n, ell)
          p_hat, _ = idl.krr_propagate(emb, idx, jnp.asarray(p_adam)[idx], kernel=kern,
                                       damp=damp)
          p_hat = np.asarray(p_hat)
          e_r.append(np.linalg.norm(p_hat - p_adam) / np.linalg.norm(p_adam))
          r_r.append(spearmanr(p_hat, p_adam)[0])
          j_r.append(jaccard(np.argsort(-p_hat)[:k], list(top_k)))
        errs.append(float(np.mean(e_r)))
        rhos.append(float(np.mean(r_r)))
        jacs.append(float(np.mean(j_r)))
      res["landmarks"][f"{ename}@{damp:g}"] = dict(counts=counts, rel_error=errs,
                                                   spearman=rhos, topk_jaccard=jacs)
      curves[f"{ename}, damp {damp:g}"] = (counts, errs)
  metrics.plot_curves(curves, os.path.join(out, "id_sandbox_landmarks.png"),
                      xlabel="landmarks", ylabel="||p_hat - p|| / ||p||",
                      title="landmark propagation error", xscale="log", yscale="log")
  d0 = floats(s.damps)[0]
  rows = [[e] + [f"{res['landmarks'][f'{e}@{d:g}']['rel_error'][i]:.3g}" for d in floats(s.damps)
                 for i in (0, len(counts) // 2, len(counts) - 1)] for e in embs]
  md += [f"\n### Landmark propagation, relative error of p_hat (mean of {s.landmark_seeds} "
         f"seeds; l = {counts[0]}, {counts[len(counts) // 2]}, {counts[-1]})\n",
         table(["embedding"] + [f"damp {d:g}, l={counts[i]}" for d in floats(s.damps)
                                for i in (0, len(counts) // 2, len(counts) - 1)], rows)]
  for key in (f"jvp@{d0:g}", f"gradient (oracle, linear)@{floats(s.damps)[-1]:g}"):
    r = res["landmarks"][key]
    md.append(f"\nTop-k Jaccard / Spearman with the exact scores ({key}): " + ", ".join(
        f"l={ell}: {j:.2f}/{rho:.2f}" for ell, j, rho in zip(counts, r["topk_jaccard"],
                                                          r["spearman"])))

  # (f) Error propagation: noise in the landmark gradients -> weight error (Thm 4.1 analogue).
  rms = float(jnp.sqrt(jnp.mean(g_pre**2)))
  res["noise"] = []
  rows = []
  for lam in floats(s.noise_lambdas):
    w_ref = idl.weights._project_np(p_adam / lam, n)
    for sigma in floats(s.noise_levels):
      noisy = g_pre + sigma * rms * jnp.asarray(rng.standard_normal(g_pre.shape))
      p_n = np.asarray(noisy @ g_t)
      dw = float(np.linalg.norm(idl.weights._project_np(p_n / lam, n) - w_ref))
      bound = float(np.linalg.norm(p_n - p_adam) / lam)
      res["noise"].append(dict(lam=lam, sigma=sigma, weight_error=dw, bound=bound))
      rows.append([lam, sigma, dw, bound])
  md += ["\n### Noise in landmark gradients -> weight error (bound ||dp|| / lambda)\n",
         table(["lambda", "noise std / rms", "||w_noisy - w||", "bound"], rows)]
  res["markdown"] = "\n".join(md)
  return res


def run_lm(c: mlc.ConfigDict, out: str) -> dict[str, Any]:
  """The LM experiment (examples.influence_distillation_lm)."""
  from examples.influence_distillation_lm import run_lm as run  # imports this module's helpers
  return run(c, out)

RUNNERS = {"sandbox": run_sandbox, "lm": run_lm}


def _jsonable(x: Any) -> Any:
  if isinstance(x, dict):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, (np.ndarray, jax.Array)):
    return np.asarray(x).tolist()
  if isinstance(x, (np.floating, np.integer)):
    return x.item()
  if isinstance(x, float) and not math.isfinite(x):
    return str(x)
  return x


def main(argv: list[str] | None = None) -> dict[str, Any]:
  jax.config.update("jax_enable_x64", True)  # exact sandbox maths; the LM asks for float32
  argv = sys.argv[1:] if argv is None else argv
  cfg = parse(argv)
  out = os.path.join(cfg.workdir, cfg.experiment)
  os.makedirs(out, exist_ok=True)
  t0 = time.time()
  res = RUNNERS[cfg.experiment](cfg, out)
  res["wall_seconds"] = time.time() - t0
  res["config"] = cfg.to_dict()
  res["command"] = "python -m examples.influence_distillation " + " ".join(argv)
  with open(os.path.join(out, "results.json"), "w") as f:
    json.dump(_jsonable(res), f, indent=1)
  with open(os.path.join(out, "results.md"), "w") as f:
    f.write(f"# {cfg.experiment}\n\n`{res['command']}`\n\nwall time {res['wall_seconds']:.1f} s, "
            f"seed {cfg.seed}\n\n{res['markdown']}\n")
  print(res["markdown"])
  print(f"\n{cfg.experiment}: {res['wall_seconds']:.1f} s, outputs in {out}")
  if cfg.docs:
    for name in sorted(os.listdir(out)):
      if name.endswith(".png"):
        shutil.copy(os.path.join(out, name), os.path.join("docs", name))
  return res


if __name__ == "__main__":
  main()
