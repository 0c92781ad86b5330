"""Position auctions in AI-generated content: experiments E1-E4 of docs/auctions.md.

  python -m examples.auctions            # 10^4 instances per experiment, a few CPU minutes
  python -m examples.auctions --smoke    # ~35 s CPU
  python -m examples.auctions --docs     # also update docs/auctions.md and its plots

E1 MNL welfare: exact optimum versus the separable-ranking and additive-matching heuristics
   as the non-separability s varies, plus solver agreement and throughput.
E2 Revenue: Myerson (ironed virtual values) versus VCG versus VCG with the monopoly reserve,
   three value priors.
E3 Incentives: sampled misreports never raise utility; IR; monotonicity of cascade greedy.
E4 Cascade: exact versus greedy, local search, additive-then-order and the MNL allocation.

Writes <workdir>/auctions.md (the results block), results.json (every number of the tables)
and auctions_e{1,2,4}.png. With --docs the block also replaces the one between the RESULTS
markers of docs/auctions.md (the rest of that file is kept) and the plots are copied next to it.
Config: tnx/configs/auctions.py.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib
import ml_collections
import numpy as np

from tnx import auctions as au
from tnx.train import config as config_lib
from tnx.train import paths

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

BEGIN, END = "<!-- RESULTS:BEGIN -->", "<!-- RESULTS:END -->"
DOCS = Path(__file__).resolve().parents[1] / "docs"


def _timed(fn, *args, **kw):
  """Runs once to compile, then times a second run; returns (result, seconds)."""
  jax.block_until_ready(fn(*args, **kw))
  t = time.perf_counter()
  out = jax.block_until_ready(fn(*args, **kw))
  return out, time.perf_counter() - t


def _ratio_stats(val, ref):
  ok = np.asarray(ref) > 1e-12
  r = np.asarray(val)[ok] / np.asarray(ref)[ok]
  return float(r.mean()), float(np.percentile(r, 5)), float(r.min()), r


def e1(c, key, rows, speed, res):
  n, m, k = c.n, c.m, c.k
  curves = {"separable": [], "additive": []}
  rows.append("| s | exact (mean welfare) | separable ranking: mean / p5 ratio | "
              "additive matching: mean / p5 ratio | max abs diff enum vs Dinkelbach vs bisection |")
  rows.append("|---|---|---|---|---|")
  for s in c.s_values:
    inst = au.generate_instances(jax.random.fold_in(key, int(s * 100)), c.instances, n, m, s)
    w = au.w_from_p(inst.p)
    x_d, t_d = _timed(au.mnl_opt_dinkelbach, inst.v, w, k)
    x_e, t_e = _timed(au.mnl_opt_enum, inst.v, w, k)
    x_b, t_b = _timed(au.mnl_opt_bisection, inst.v, w, k)
    ref = au.mnl_value(x_d, inst.v, w)
    diff = max(float(jnp.max(jnp.abs(au.mnl_value(x, inst.v, w) - ref))) for x in (x_e, x_b))
    cells = []
    for name in curves:
      val = au.mnl_value(au.mnl_heuristic(inst.v, inst.p, k, name), inst.v, w)
      mean, p5, _, _ = _ratio_stats(val, ref)
      curves[name].append((mean, p5))
      cells.append(f"{mean:.4f} / {p5:.4f}")
    rows.append(f"| {s} | {float(ref.mean()):.4f} | {cells[0]} | {cells[1]} | {diff:.1e} |")
    res.setdefault("e1", {})[str(s)] = {
        "exact_welfare": float(ref.mean()), "solver_max_abs_diff": diff,
        **{f"{name}_ratio": dict(zip(("mean", "p5"), curves[name][-1])) for name in curves}}
    if s == c.s_values[-1]:
      speed.update({f"MNL enumeration ({n},{m},{k})": c.instances / t_e,
                    f"MNL Dinkelbach + JAX Hungarian ({n},{m},{k})": c.instances / t_d,
                    f"MNL bisection + JAX Hungarian ({n},{m},{k})": c.instances / t_b})
      h = c.host_instances
      t = time.perf_counter()
      lp = [au.mnl_opt_lp(inst.v[b], w[b], k)[1] for b in range(h)]
      speed[f"MNL HiGHS LP, host ({n},{m},{k})"] = h / (time.perf_counter() - t)
      t = time.perf_counter()
      sc = [au.mnl_opt_scipy(inst.v[b], w[b], k) for b in range(h)]
      speed[f"MNL Dinkelbach + scipy assignment, host ({n},{m},{k})"] = h / (
          time.perf_counter() - t)
      host_diff = max(np.max(np.abs(np.asarray(lp) - np.asarray(ref[:h]))),
                      max(abs(float(au.mnl_value(x, inst.v[b], w[b]) - ref[b]))
                          for b, x in enumerate(sc)))
  res["e1_host_max_abs_diff"] = float(host_diff)
  if c.medium_instances:
    _e1_medium(c, key, rows, speed)
  rows.append("")
  rows.append(f"Host cross-check at size ({n},{m},{k}), s={c.s_values[-1]}, first "
              f"{c.host_instances} instances: max abs difference of HiGHS LP and scipy-assignment "
              f"Dinkelbach from the JAX Dinkelbach optimum = {host_diff:.1e}.")
  return _e1_plot(c, curves)


def _e1_medium(c, key, rows, speed):
  nm, mm, km = c.medium
  inst = au.generate_instances(jax.random.fold_in(key, 7), c.medium_instances, nm, mm, 1.0)
  w = au.w_from_p(inst.p)
  x_d, t_d = _timed(au.mnl_opt_dinkelbach, inst.v, w, km)
  ref = au.mnl_value(x_d, inst.v, w)
  speed[f"MNL Dinkelbach + JAX Hungarian ({nm},{mm},{km})"] = c.medium_instances / t_d
  h = c.host_instances
  t = time.perf_counter()
  lp = np.asarray([au.mnl_opt_lp(inst.v[b], w[b], km)[1] for b in range(h)])
  speed[f"MNL HiGHS LP, host ({nm},{mm},{km})"] = h / (time.perf_counter() - t)
  med_diff = float(np.max(np.abs(lp - np.asarray(ref[:h]))))
  med = [_ratio_stats(au.mnl_value(au.mnl_heuristic(inst.v, inst.p, km, nme), inst.v, w), ref)
         for nme in ("separable", "additive")]
  rows.append(f"| 1.0, size {c.medium} | {float(ref.mean()):.4f} | {med[0][0]:.4f} / "
              f"{med[0][1]:.4f} | {med[1][0]:.4f} / {med[1][1]:.4f} | "
              f"LP vs Dinkelbach on {h}: {med_diff:.1e} |")


def _e1_plot(c, curves):
  fig, ax = plt.subplots(figsize=(5, 3.2))
  for color, (name, pts) in zip(("C0", "C3"), curves.items()):
    arr = np.asarray(pts)
    ax.plot(c.s_values, arr[:, 0], "o-", color=color, label=f"{name}: mean")
    ax.plot(c.s_values, arr[:, 1], "s--", color=color, label=f"{name}: 5th pct")
  ax.set_xlabel("non-separability s")
  ax.set_ylabel("welfare / exact MNL welfare")
  ax.legend(fontsize=7)
  fig.tight_layout()
  return fig


def e2(c, key, rows, speed, res):
  n, m, k = c.n, c.m, c.k
  rows.append("| prior | mechanism | revenue (mean +- s.e.) | welfare (mean +- s.e.) | "
              "E[sum phibar ctr] |")
  rows.append("|---|---|---|---|---|")
  bars = {}
  for idx, prior in enumerate(("uniform", "exponential", "bimodal")):
    inst = au.generate_instances(jax.random.fold_in(key, idx), c.instances, n, m, 1.0, prior)
    w = au.w_from_p(inst.p)
    smap = au.ironed_virtual_value_map(prior)
    rho = float(au.monopoly_reserve(smap))
    mechs = {"Myerson (ironed)": smap, "VCG": au.identity_map(),
             f"VCG + reserve {rho:.3f}": au.reserve_map(rho)}
    for name, sm in mechs.items():
      (_, ctr, pay), t = _timed(au.mnl_mechanism, inst.v, w, k, sm)
      if prior == "uniform" and name == "VCG":
        speed[f"MNL mechanism: enumeration + threshold payments ({n},{m},{k})"] = (
            c.instances / t)
      rev, wel = np.asarray(pay.sum(-1)), np.asarray((inst.v * ctr).sum(-1))
      vs = np.asarray((au.apply_map(smap, inst.v) * ctr).sum(-1))
      se = lambda a: a.std() / np.sqrt(a.size)
      rows.append(f"| {prior} | {name} | {rev.mean():.4f} +- {se(rev):.4f} | "
                  f"{wel.mean():.4f} +- {se(wel):.4f} | {vs.mean():.4f} |")
      bars[(prior, name.split(" ")[0] + (" + reserve" if "reserve" in name else ""))] = (
          rev.mean(), se(rev))
      res.setdefault("e2", {})[f"{prior}|{name}"] = {
          "revenue": float(rev.mean()), "revenue_se": float(se(rev)),
          "welfare": float(wel.mean()), "virtual_surplus": float(vs.mean())}
  (_, _, _), t = _timed(au.mnl_vcg, inst.v, w, k)
  speed[f"MNL VCG: Clarke pivots, n+1 Dinkelbach solves ({n},{m},{k})"] = c.instances / t
  fig, ax = plt.subplots(figsize=(5, 3.2))
  names = ["Myerson", "VCG", "VCG + reserve"]
  for j, nme in enumerate(names):
    vals = [bars[(p, nme)] for p in ("uniform", "exponential", "bimodal")]
    ax.bar(np.arange(3) + 0.27 * (j - 1), [v[0] for v in vals], 0.27,
           yerr=[2 * v[1] for v in vals], label=nme)
  ax.set_xticks(range(3), ["U[0,1]", "Exp(1)", "bimodal"])
  ax.set_ylabel("expected revenue per query")
  ax.legend(fontsize=7)
  fig.tight_layout()
  return fig


def _ic_row(name, mech, v, key, misreports, rows, res):
  """Max utility gain over sampled misreports (uniform on [0, 1.5 max v]) plus IR checks."""
  _, ctr, pay = mech(v)
  util = v * ctr - pay
  worst, bad = -np.inf, 0
  hi = 1.5 * float(jnp.max(v))
  for t in range(misreports):
    ki, kb = jax.random.split(jax.random.fold_in(key, t))
    who = jax.random.randint(ki, (v.shape[0],), 0, v.shape[1])
    mis = jax.random.uniform(kb, (v.shape[0],)) * hi
    onehot = jax.nn.one_hot(who, v.shape[1], dtype=bool)
    _, c2, p2 = mech(jnp.where(onehot, mis[:, None], v))
    gain = jnp.sum(jnp.where(onehot, v * c2 - p2 - util, 0.0), axis=1)
    worst, bad = max(worst, float(gain.max())), bad + int(jnp.sum(gain > 1e-9))
  ir = int(jnp.sum((pay < -1e-12) | (util < -1e-12)))
  rows.append(f"| {name} | {v.shape[0] * misreports} | {worst:.1e} | {bad} | {ir} |")
  res.setdefault("e3", {})[name] = {"misreports": v.shape[0] * misreports,
                                    "max_utility_gain": worst, "gains_above_1e-9": bad,
                                    "ir_violations": ir}


def e3(c, key, rows, speed, res):
  del speed
  n, m, k = c.n, c.m, c.k
  inst = au.generate_instances(jax.random.fold_in(key, 3), c.ic_instances, n, m, 1.0, "bimodal")
  w, p = au.w_from_p(inst.p), inst.p
  q1 = au.continuation(p)
  q2 = au.continuation(p, (1.0 - p) * jax.random.uniform(jax.random.fold_in(key, 4), p.shape,
                                                          minval=0.5))
  rank = jnp.tile(jnp.arange(m), (c.ic_instances, 1))
  rows.append("| mechanism | misreports | max utility gain | gains > 1e-9 | IR violations |")
  rows.append("|---|---|---|---|---|")
  mechs = {
      "MNL VCG": lambda b: au.mnl_mechanism(b, w, k),
      "MNL Myerson (bimodal prior, ironed)": lambda b: au.mnl_mechanism(
          b, w, k, au.ironed_virtual_value_map("bimodal")),
      "MNL VCG + reserve 0.7": lambda b: au.mnl_mechanism(b, w, k, au.reserve_map(0.7)),
      "Cascade C1 free order: VCG on exact DP": lambda b: au.cascade_vcg(b, p, q1, k),
      "Cascade C2 fixed order: VCG on exact DP": lambda b: au.cascade_vcg(b, p, q2, k, rank=rank),
  }
  for name, mech in mechs.items():
    _ic_row(name, mech, inst.v, jax.random.fold_in(key, 5), c.misreports, rows, res)
  # Monotonicity of the (non-truthful) greedy rule: bidder 0's CTR along a bid grid.
  g = c.grid_points
  grid = jnp.linspace(0.0, 1.5, g)
  cnt = min(c.ic_instances, c.instances // g)
  bids = jnp.repeat(inst.v[:cnt], g, axis=0).at[:, 0].set(jnp.tile(grid, cnt))
  pp, qq = jnp.repeat(p[:cnt], g, axis=0), jnp.repeat(q1[:cnt], g, axis=0)
  rows.append("")
  for method in ("greedy", "local_search", "dp"):
    x = au.cascade_solve(bids, pp, qq, k, method)
    ctr = au.cascade_ctr(x, bids, pp, qq)[:, 0].reshape(cnt, g)
    drops = int(jnp.sum(jnp.any(jnp.diff(ctr, axis=1) < -1e-12, axis=1)))
    res.setdefault("e3_ctr_decreases", {})[method] = {"instances": cnt, "decreasing": drops}
    rows.append(f"- Cascade C1, `{method}`: bidder 0's CTR decreases somewhere on a {g}-point bid "
                f"grid in {drops} of {cnt} instances.")


def e4(c, key, rows, speed, res):
  n, m, k = c.n, c.m, c.k
  inst = au.generate_instances(jax.random.fold_in(key, 11), c.instances, n, m, 1.0)
  p, r = inst.p, inst.v
  u = jax.random.uniform(jax.random.fold_in(key, 12), p.shape, minval=0.5)
  variants = {"C1 click-and-leave": au.continuation(p),
              "C2 q = U[0.5,1] (1-p)": au.continuation(p, (1.0 - p) * u),
              f"C3 delta={c.cascade_delta}": au.continuation(p, delta=c.cascade_delta)}
  rows.append("| variant | method | mean ratio | 5th pct | min | instances/s |")
  rows.append("|---|---|---|---|---|---|")
  fig, axes = plt.subplots(1, 3, figsize=(11, 3.2), sharey=True)
  for ax, (vname, q) in zip(axes, variants.items()):
    x_e, t_e = _timed(au.cascade_solve, r, p, q, k, "enum")
    ref = au.cascade_value(x_e, r, p, q)
    methods = ["dp"] if vname.startswith("C1") else []
    methods += ["greedy", "local_search", "additive", "mnl"]
    rows.append(f"| {vname} | enum (exact) | 1 | 1 | 1 | {c.instances / t_e:.0f} |")
    for meth in methods:
      x, t = _timed(au.cascade_solve, r, p, q, k, meth)
      mean, p5, mn, ratios = _ratio_stats(au.cascade_value(x, r, p, q), ref)
      res.setdefault("e4", {})[f"{vname}|{meth}"] = {"mean": mean, "p5": p5, "min": mn}
      rows.append(f"| {vname} | {meth} | {mean:.4f} | {p5:.4f} | {mn:.4f} | "
                  f"{c.instances / t:.0f} |")
      if vname.startswith("C1"):
        speed[f"Cascade {meth} ({n},{m},{k})"] = c.instances / t
      if meth != "dp":
        ax.hist(ratios, bins=np.linspace(0.4, 1.0, 61), histtype="step", label=meth, log=True)
    if vname.startswith("C1"):
      speed[f"Cascade enumeration ({n},{m},{k})"] = c.instances / t_e
    ax.set_title(vname, fontsize=9)
    ax.set_xlabel("welfare / optimum")
  axes[0].legend(fontsize=7)
  fig.tight_layout()
  return fig


def run(c: ml_collections.ConfigDict) -> tuple[str, dict, dict]:
  """Runs E1-E4: (markdown results block, {experiment: numbers}, {png name: figure})."""
  key = jax.random.PRNGKey(c.seed)
  rows: list[str] = []
  speed: dict[str, float] = {}
  res: dict = {}
  figs = {}
  t0 = time.perf_counter()
  sections = [("E1: MNL welfare, exact versus heuristics", e1),
              ("E2: revenue, Myerson versus VCG versus VCG with reserve", e2),
              ("E3: incentive checks", e3), ("E4: cascade, exact versus approximations", e4)]
  for j, (title, fn) in enumerate(sections):
    rows += ["", f"### {title}", ""]
    t = time.perf_counter()
    fig = fn(c, jax.random.fold_in(key, j), rows, speed, res)
    if fig is not None:
      name = f"auctions_e{j + 1}.png"
      figs[name] = fig
      rows += ["", f"![{title}]({name})"]
    print(f"{title}: {time.perf_counter() - t:.1f}s", flush=True)
  rows += ["", "### Throughput (instances per second, after compilation)", "",
           "| solver | instances/s |", "|---|---|"]
  rows += [f"| {name} | {val:,.0f} |" for name, val in speed.items()]
  rows += ["", f"Total wall time {time.perf_counter() - t0:.0f}s on {os.cpu_count()} CPU cores "
           f"(jax {jax.__version__}, backend {jax.default_backend()})."]
  res["throughput"] = speed
  return "\n".join(rows), res, figs


def replace_block(text: str, block: str) -> str:
  """`text` with the part between the RESULTS markers replaced by `block` (markers added at
  the end if absent); everything else is kept."""
  if BEGIN not in text:
    text += f"\n{BEGIN}\n{END}\n"
  head, rest = text.split(BEGIN, 1)
  tail = rest.split(END, 1)[1] if END in rest else ""
  return f"{head}{BEGIN}\n{block}\n{END}{tail}"


def main(argv: list[str] | None = None) -> dict:
  cfg, _ = config_lib.parse_args(sys.argv[1:] if argv is None else argv, default="auctions")
  jax.config.update("jax_enable_x64", True)
  block, res, figs = run(cfg)
  out = paths.path(cfg.workdir)
  out.mkdir(parents=True, exist_ok=True)
  for name, fig in figs.items():
    paths.save_figure(fig, out / name, dpi=110)
    plt.close(fig)
  paths.write_text(out / "auctions.md", replace_block("# Position auctions: results\n", block))
  paths.write_text(out / "results.json", json.dumps(res, indent=1))
  print(block)
  print(f"\nwrote {out}/auctions.md, results.json and {', '.join(figs)}")
  if cfg.docs:
    doc = DOCS / "auctions.md"
    doc.write_text(replace_block(doc.read_text() if doc.exists() else
                                 "# Position auctions\n", block))
    paths.copy_into([out / name for name in figs], DOCS)
    print(f"updated {doc} and copied the plots into {DOCS}")
  return res


if __name__ == "__main__":
  main()
