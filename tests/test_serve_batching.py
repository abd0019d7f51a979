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


# --------------------------------------------------------------- continuous batching

def _run_plan(batch, plan):
    """Decode with `batch`, joining (prompt, options) of `plan[step]` before that step;
    returns the sequences in the order they joined."""
    joined, step = [], 0
    while step <= max(plan) or batch.running:
        for prompt, options in plan.get(step, []):
            joined.append(batch.join(prompt, options))
        for seq in batch.step():
            assert seq.error is None, seq.error
        step += 1
    return joined


def test_joiners_mid_batch_give_exactly_the_one_at_a_time_text(hf):
    short, longer = GenerationOptions(12), GenerationOptions(30)
    long_prompt = PROMPTS[3] + PROMPTS[2]                  # longer than anything running
    plan = {0: [(PROMPTS[0], longer)],
            3: [(PROMPTS[1], short), (PROMPTS[2], longer)],     # more rows than the cache has
            7: [(long_prompt, longer)],                        # more columns before `end`
            9: [(PROMPTS[0], GenerationOptions(30, temperature=0.8))],   # sampled, beside
            20: [(PROMPTS[3], short)]}                         # after some have left
    batch = hf.running_batch()
    joined = _run_plan(batch, plan)
    greedy = [seq for seq in joined if seq.options.temperature == 0]
    alone = [hf.generate(hf.tokenizer.decode(seq.prompt_ids), seq.options).text
             for seq in greedy]
    assert [seq.generation.text for seq in greedy] == alone
    assert [seq.generation.new_tokens for seq in greedy] == [
        hf.generate(hf.tokenizer.decode(s.prompt_ids), s.options).new_tokens for s in greedy]
    assert batch.running == 0 and batch.cache is None        # idle: the cache is let go


def test_a_joiner_takes_its_first_token_at_the_next_step(hf):
    batch = hf.running_batch()
    first = batch.join(PROMPTS[0], GenerationOptions(16, fixed_length=True))
    for _ in range(4):
        batch.step()
    second = batch.join(PROMPTS[1], GenerationOptions(16, fixed_length=True))
    batch.step()
    assert len(first.stream.ids) == 5 and len(second.stream.ids) == 1
    while batch.running:
        batch.step()
    assert batch.steps == 4 + 16 - 1        # forward passes shared, not one batch after another


def test_a_cancelled_sequence_leaves_and_its_row_is_reused(hf):
    batch = hf.running_batch()
    cancel = threading.Event()
    long = GenerationOptions(40, fixed_length=True)
    stays = [batch.join(PROMPTS[0], long), batch.join(PROMPTS[2], long)]
    leaves = batch.join(PROMPTS[1], long, cancelled=cancel)
    for _ in range(5):
        batch.step()
    rows = batch.cache.rows
    cancel.set()
    assert batch.step() == [leaves]                # it leaves at the next token
    assert leaves.generation.cancelled and leaves.generation.new_tokens == 6
    assert batch.rows.count(None) == 1
    comes = batch.join(PROMPTS[3], GenerationOptions(24))
    batch.step()
    assert batch.cache.rows == rows and None not in batch.rows   # into the freed row
    while batch.running:
        batch.step()
    assert [s.generation.new_tokens for s in stays] == [40, 40]
    assert not any(s.generation.cancelled for s in stays)
    assert comes.generation.text == hf.generate(PROMPTS[3], GenerationOptions(24)).text


def test_a_failing_sequence_fails_alone(hf, monkeypatch):
    from rag.generation.base import ModelError

    batch = hf.running_batch()
    ok = [batch.join(PROMPTS[0], OPTIONS)]
    batch.step()
    with pytest.raises(ModelError, match="context window"):      # refused where it joins
        batch.join("第1条" * 3000, OPTIONS)
    read_prompt = hf._read_prompt
    broken = hf.tokenizer(PROMPTS[1], add_special_tokens=False)["input_ids"]

    def failing(ids):
        if ids == broken:
            raise RuntimeError("out of memory")
        return read_prompt(ids)

    monkeypatch.setattr(hf, "_read_prompt", failing)
    bad = batch.join(PROMPTS[1], OPTIONS)
    ok.append(batch.join(PROMPTS[2], OPTIONS))
    ended = []
    while batch.running:
        ended += batch.step()
    assert bad in ended and bad.generation is None and "out of memory" in str(bad.error)
    assert [s.generation.text for s in ok] == [hf.generate(p, OPTIONS).text
                                               for p in (PROMPTS[0], PROMPTS[2])]


def test_the_worker_lets_a_question_join_a_running_batch(hf):
    from rag.serve.worker import Job, ModelWorker

    worker = ModelWorker(hf, max_batch=4, wait_s=0)
    streamed = threading.Event()
    ended: dict[str, threading.Event] = {"first": threading.Event(),
                                         "joiner": threading.Event()}
    results: dict[str, tuple] = {}

    def job(name, prompt, options, on_text=lambda t: None):
        def done(gen, error):
            results[name] = (gen, error)
            ended[name].set()
        return Job(prompt, options, on_text, done, deadline=1e12)

    first = job("first", PROMPTS[0], GenerationOptions(200, fixed_length=True),
                lambda t: streamed.set())
    joiner = job("joiner", PROMPTS[1], OPTIONS)
    worker.start()
    worker.submit(first)
    assert streamed.wait(30)                   # the first is generating ...
    worker.submit(joiner)                      # ... when the second comes
    assert ended["joiner"].wait(30) and ended["first"].wait(60)
    worker.stop()
    assert results["joiner"][1] is None and results["first"][1] is None
    assert joiner.finished < first.finished    # it did not wait for the first to end
    assert results["joiner"][0].text == hf.generate(PROMPTS[1], OPTIONS).text
    assert results["first"][0].new_tokens == 200
    stats = worker.stats
    assert stats.batches == 1 and stats.largest_batch == 2 and stats.sequences == 2
    assert stats.steps >= 199 and stats.busy_s > 0
