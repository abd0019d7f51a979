"""The `rag` subcommands, one small module per concern. Each command parses its
options and calls one function of the library; errors derive from RagError and are
reported once, by the `rag` group (rag/cli.py)."""
