"""metarl: meta-learning and meta-reinforcement learning on PyTorch, Gymnasium and MuJoCo.

Importing metarl registers its Gymnasium environments (``metarl/Navigation2D-v0``, ...).
"""

__version__ = "0.1.0"

from metarl import envs as envs
