"""`rag serve`: the retriever and the generator loaded once, answering over HTTP.

app.py (routes and the FastAPI app), openai.py (the OpenAI-compatible shapes), both over
requests.py (field checks, starting a Run, streamed or whole answers) and state.py
(ServeSettings, ServerState); answering.py (Engine: the Answerer, the worker and the live
index; Run: Answerer.prepare -> the worker -> Answerer.finish, as events), loader.py
(settings -> Engine, through rag.factory), worker.py (the one model thread that generates
in batches), live_index.py (follows the index's CURRENT generation), feedback.py (SQLite),
guard.py (token, limits, headers). The HTTP contract is docs/serve-api.md.
"""
