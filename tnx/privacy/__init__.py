"""Differential privacy.

DP clustering of embeddings and DP synthetic embeddings from a private Gaussian mixture:
`accounting` (dp-accounting wrapper and budget splits), `data` (bounded inputs, generators,
digits splits), `encoders`, `clustering` (LSH-coreset DP k-means, DP Lloyd), `gmm` (noisy
moments, mixture post-processing, sampling), `embeddings` (the end-to-end pipeline),
`classifier` (two-layer probe).
"""
