"""One small module per use: which tokenizers, heads, losses, metrics and artifacts it combines. Data loading
lives in ``omni.data``, heads and their losses in ``omni.heads``."""
