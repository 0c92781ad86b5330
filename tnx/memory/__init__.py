"""Deep test-time memory: the pure math (no NNX) and the memory mixers built on it.

Pure math: `model` (the memory network f(W, x) and its per-token gradients), `gates` (decay
gates in log space, the intra-chunk coefficients), `inner_optim` (GD / momentum / Muon with
Newton-Schulz), `chunk_step` and `chunked` (the one chunked primitive: dual form, Omega window,
remat, padding, decode step), `reference` (its slow token-by-token reference), `finite`
(causality under non-finite values, the opt-in finiteness check). NNX layers: `mixer`,
`mixer_config`, `inputs`, `titans`, `ttt`, and `atlas.mixers`.

Dimension letters used in shapes and names throughout the memory stack (`tnx.memory`,
`tnx.tnt`): B batch, L sequence length, D model width, H heads, K head dim (query/key/value
width per head), Dk / Dv key (feature) / value width of a memory when they differ from K,
C chunk size (tokens per gradient anchor), E = C + c_w - 1 gradient tokens of a chunk with an
Omega window of c_w tokens, N local memories (TNT), S_L local shard length (TNT).
"""
