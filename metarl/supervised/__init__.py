"""Supervised few-shot learning on the shared adaptation core: sine regression (Omniglot next)."""
