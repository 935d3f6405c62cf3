"""Meta-reinforcement learning: batched sampler, Gaussian policy, baseline, MAML-TRPO."""
