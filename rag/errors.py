"""The project's error base, for code in `rag`: see ingest/errors.py."""
from ingest.errors import RagError

__all__ = ["RagError"]
