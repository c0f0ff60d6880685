"""omni: tokenize everything into one transformer."""

from omni.attention import masks
from omni.model import ModelOutput, OmniModel
from omni.tokens import Tokens
from omni.transformer import Transformer, TransformerConfig

__all__ = ["ModelOutput", "OmniModel", "Tokens", "Transformer", "TransformerConfig", "masks"]
__version__ = "0.1.0"
