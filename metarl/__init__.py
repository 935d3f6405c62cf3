"""metarl: meta-learning and meta-reinforcement learning on PyTorch, Gymnasium and MuJoCo."""

__version__ = "0.1.0"
