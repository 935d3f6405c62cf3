"""Flat-vector views of parameter dicts, for finite differences and explicit matrices."""

from __future__ import annotations

from collections import OrderedDict

import torch


def flatten(params):
    return torch.cat([p.reshape(-1) for p in params.values()])


def unflatten(vector, like):
    out, i = OrderedDict(), 0
    for k, p in like.items():
        out[k] = vector[i:i + p.numel()].view_as(p)
        i += p.numel()
    return out
