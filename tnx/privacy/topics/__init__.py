"""DP synthetic Topics API data (arXiv 2506.23855): simulate, release, fit, sample, attack.

Pipeline: `api` (the Topics API: weekly top-k sets, per-site topics, calls), `population`
(a generated ground-truth population), `stats` (single / within-week / across-week pair
statistics and their user-level DP release, accounted with `tnx.privacy.accounting`), `model`
(the type mixture: closed-form marginals, inverse-CDF sampling), `fit` (optax moment
matching), `storage` (Parquet users and a grain source), `public` and `tfrecord` (the public
release's JSON tables, parameters and TFRecord shards), `reid` (the re-identification attack).

Dimension letters: N users, W weeks (epochs), K slots per week, O topics, T types, Q queries,
S sites, R epochs of a trace.
"""
