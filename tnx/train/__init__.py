"""Training: data (grain), optimizer (optax), checkpoints (orbax), metrics, eval, the loop."""
