"""tnx: deep test-time memories (Titans, TTT, ATLAS, TNT) and companion research systems in JAX."""

__version__ = "0.1.0"
