"""`rag eval`: questions.py (the question set), run.py (answering it per condition),
metrics.py (retrieval and answer scores), report.py (table, CSV/JSON, chart)."""
