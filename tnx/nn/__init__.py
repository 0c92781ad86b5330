"""Neural-net blocks shared by the memory layers, the language model and the research
packages: `tnx.nn.layers` (RMSNorm, HeadNorm, rope, linear, GatedMLP, MAGGate, head
split/merge, dtypes), `tnx.nn.attention` (Attention with full / sliding / segment masks and a
decode cache, attend, causal_mask), `tnx.nn.conv` (causal depthwise convolution)."""
