"""Question -> passages: retriever.py (dense, BM25 and hybrid search over an index that
ingest wrote), thesaurus.py (everyday words -> regulation terms), query_encoder.py (the
numpy query encoder that spares `rag search` loading torch)."""
