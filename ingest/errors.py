"""The one error base of the project.

Every error that is the user's to fix (a bad file, a missing model, a wrong setting)
derives from `RagError`; its message says what and why, and the `rag` command prints
it without a traceback. It lives in `ingest`, the lowest layer (rag and finetune
import ingest, never the reverse), so every package can derive from it.
"""


class RagError(Exception):
    """An error reported to the user as its message alone."""
