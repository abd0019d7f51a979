"""`rag finetune merge`: a LoRA adapter merged into its base model for serving
(safetensors). The merging itself is rag.generation.models', which `rag models export` uses too."""
from __future__ import annotations

from rag.generation.models import merge_adapter as merge

__all__ = ["merge"]
