"""Language models behind one interface: base.py (Generator, Generation, GenerationOptions
and what every engine shares), hf.py (transformers + PEFT), ct2.py (CTranslate2),
openai_compat.py (an OpenAI-compatible server), models.py (loading: device, dtype,
weights, adapters), batch_cache.py (the KV cache of streamed batches)."""
