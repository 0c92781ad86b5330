"""Differential privacy.

DP clustering of embeddings and DP synthetic embeddings from a private Gaussian mixture:
`accounting` (dp-accounting wrapper and budget splits), `data` (bounded inputs, generators,
digits splits), `encoders`, `clustering` (LSH-coreset DP k-means, DP Lloyd), `gmm` (noisy
moments, mixture post-processing, sampling), `embeddings` (the end-to-end pipeline),
`classifier` (two-layer probe).

DP synthetic Topics API data (arXiv 2506.23855): `topics` (API simulator, user-level DP pair
statistics, type-mixture fit, streaming Parquet sampler, public-release readers,
re-identification attack).

Every public function that adds noise takes a scale > 0, or None for the explicit non-private
limit; zero, negative or NaN scales are errors.
"""
