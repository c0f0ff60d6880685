"""Attention masks and how they run, in three layers that depend one way:

- ``masks``: predicates over (query, key) token pairs that read ``Tokens`` metadata — the vocabulary;
- ``plans``: a mask in the form one execution path runs (dense tensor, sparse gather plan, FlexAttention
  ``BlockMask``), the path choice and the plan cache;
- ``kernels``: attention computed on a plan.

``from omni.attention import masks`` (also ``from omni import masks``) gives the vocabulary.
"""

from omni.attention import kernels, masks, plans
from omni.attention.masks import Mask
from omni.attention.plans import AttentionPath, Plan, PlanCache

__all__ = ["AttentionPath", "Mask", "Plan", "PlanCache", "kernels", "masks", "plans"]
