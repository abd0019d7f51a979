"""`rag serve`: the retriever and the generator loaded once, answering over HTTP.

app.py (routes and the FastAPI app), answering.py (question -> prompt -> job -> events,
shared by /api/ask and /v1/chat/completions), openai.py (the OpenAI-compatible shapes),
worker.py (the one model thread that generates in batches), live_index.py (follows the
index's CURRENT generation), feedback.py (SQLite), guard.py (token, limits, headers).
The HTTP contract is docs/serve-api.md.
"""
