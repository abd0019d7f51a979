"""Batched streaming (`Generator.stream_batch`, the server's batches): greedy answers
equal the one-at-a-time path for prompts of different lengths, each sequence streams
its own text, and a cancelled sequence leaves the batch while the others go on."""
import threading

import pytest

from rag.generation.hf import TransformersGenerator
from rag.generation.base import GenerationOptions, Generator
from rag.prompt import ContextPassage, build_prompt

PROMPTS = [build_prompt(q, [ContextPassage("学則", "第42条（除籍）", "学長は、次の者を除籍する。" * n)])
           for n, q in enumerate(("除籍されますか？", "休学できますか", "授業料はいくらですか",
                                  "再入学の手続は？"), start=1)]
OPTIONS = GenerationOptions(24)


@pytest.fixture(scope="module")
def hf(tiny_generator):
    return TransformersGenerator(str(tiny_generator))


def _streamed(generator, prompts, options, **kw):
    pieces: list[list[str]] = [[] for _ in prompts]
    out = generator.stream_batch(prompts, options, on_text=[p.append for p in pieces], **kw)
    return out, ["".join(p) for p in pieces]


def test_transformers_batch_equals_one_at_a_time(hf):
    one = [hf.generate(p, OPTIONS) for p in PROMPTS]
    batch, streamed = _streamed(hf, PROMPTS, OPTIONS)
    assert [g.text for g in batch] == [g.text for g in one] == streamed
    assert [g.new_tokens for g in batch] == [g.new_tokens for g in one]
    assert all(g.first_token_ms is not None and not g.cancelled for g in batch)
    # The interface's default (sequential) agrees as well.
    assert [g.text for g in Generator.stream_batch(hf, PROMPTS, OPTIONS)] == streamed


def test_a_cancelled_sequence_leaves_the_batch(hf):
    cancelled = [threading.Event() for _ in PROMPTS]
    long = GenerationOptions(64, fixed_length=True)
    out = hf.stream_batch(PROMPTS, long, on_text=[None, lambda t: cancelled[1].set(), None, None],
                          cancelled=cancelled)
    assert out[1].cancelled and out[1].new_tokens < 64
    assert [g.new_tokens for i, g in enumerate(out) if i != 1] == [64, 64, 64]
    assert not any(g.cancelled for i, g in enumerate(out) if i != 1)


def test_a_failing_reader_stops_its_sequence_only(hf):
    def gone(text):
        raise ConnectionError("client went away")
    out = hf.stream_batch(PROMPTS[:2], GenerationOptions(16, fixed_length=True),
                          on_text=[gone, None])
    assert out[0].cancelled and out[0].new_tokens == 1
    assert out[1].new_tokens == 16 and not out[1].cancelled


def test_adapter_batch_equals_one_at_a_time(tiny_generator, tiny_adapter):
    gen = TransformersGenerator(str(tiny_generator), adapter=str(tiny_adapter))
    assert [g.text for g in gen.stream_batch(PROMPTS[:2], OPTIONS)] == [
        gen.generate(p, OPTIONS).text for p in PROMPTS[:2]]


def test_ctranslate2_batch_equals_one_at_a_time(tiny_generator, tmp_path_factory):
    from rag.generation.ct2 import CT2Generator, export
    ct = CT2Generator(export(str(tiny_generator), tmp_path_factory.mktemp("ct2") / "f32",
                             quantization="float32"))
    one = [ct.generate(p, OPTIONS) for p in PROMPTS]
    batch, streamed = _streamed(ct, PROMPTS, OPTIONS)
    assert [g.text for g in batch] == [g.text for g in one] == streamed
    # CTranslate2 feeds the tail of longer prompts through its decoding loop; those
    # tokens are not part of the answer (the evaluation batch path shares this).
    assert [g.text for g in ct.generate_batch(PROMPTS, OPTIONS)] == streamed
    cancelled = [threading.Event() for _ in PROMPTS]
    out = ct.stream_batch(PROMPTS, GenerationOptions(48, fixed_length=True),
                          on_text=[lambda t: cancelled[0].set(), None, None, None],
                          cancelled=cancelled)
    assert out[0].cancelled and out[0].new_tokens < 48
    assert [g.new_tokens for g in out[1:]] == [48, 48, 48]


def test_a_failing_batch_is_retried_one_by_one_so_one_bad_prompt_fails_alone(hf):
    from rag.serve.worker import Job, ModelWorker

    worker = ModelWorker(hf, max_batch=4, wait_s=0.2)
    results: dict[str, tuple] = {}
    done = threading.Event()

    def job(name, prompt):
        def finished(gen, error):
            results[name] = (gen, error)
            if len(results) == 2:
                done.set()
        return Job(prompt, GenerationOptions(4), lambda t: None, finished, deadline=1e12)

    worker.submit(job("good", PROMPTS[0]))
    worker.submit(job("too long", "第1条" * 3000))          # over the tiny model's window
    worker.start()
    assert done.wait(30)
    worker.stop()
    assert results["good"][1] is None and results["good"][0].new_tokens == 4
    assert results["too long"][0] is None and "context window" in str(results["too long"][1])
