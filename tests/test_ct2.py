"""The CTranslate2 backend: export (GPT-NeoX under transformers 5, an adapter merged
first), the same greedy tokens as transformers in float32, most of them in int8, and
the answering path, eval and the CLI unaware of which engine runs."""
import json
import shutil

import pytest
from click.testing import CliRunner

from rag.generation.ct2 import RECORD, CT2Generator, export
from rag.generation.hf import TransformersGenerator
from rag.generation.base import GenerationOptions
from rag.generation.models import ModelError
from rag.prompt import ContextPassage, build_prompt

PROMPTS = [build_prompt(q, [ContextPassage("学則", "第42条（除籍）", "学長は、次の者を除籍する。")])
           for q in ("除籍されますか？", "休学できますか", "授業料はいくらですか")]


@pytest.fixture(scope="module")
def exports(tiny_generator, tmp_path_factory):
    out = tmp_path_factory.mktemp("ct2")
    return {q: export(str(tiny_generator), out / q, quantization=q) for q in ("float32", "int8")}


def _ids(generator, text):
    return generator.tokenizer(text, add_special_tokens=False)["input_ids"]


def test_float32_export_gives_transformers_greedy_tokens(tiny_generator, exports):
    hf, ct = TransformersGenerator(str(tiny_generator)), CT2Generator(exports["float32"])
    for p in PROMPTS:
        assert ct.generate(p, GenerationOptions(16)).text == hf.generate(
            p, GenerationOptions(16)).text
    batch = ct.generate_batch(PROMPTS, GenerationOptions(16))
    assert [g.text for g in batch] == [ct.generate(p, GenerationOptions(16)).text
                                       for p in PROMPTS]
    record = json.loads((exports["float32"] / RECORD).read_text("utf-8"))
    assert record["quantization"] == "float32" and record["context_window"] == ct.context_window


def test_int8_export_agrees_on_most_tokens(tiny_generator, exports):
    """Random weights give nearly flat next-token distributions, the hardest case for
    int8: the first token must agree, and most of each answer before they part."""
    hf, ct = TransformersGenerator(str(tiny_generator)), CT2Generator(exports["int8"])
    questions = ["除籍されますか？", "休学できますか", "授業料はいくらですか", "卒業要件は？",
                 "再試験はありますか", "留学できますか", "懲戒とは", "単位の上限は", "学年はいつから",
                 "転学部は"]
    first, leads = 0, []
    for q in questions:
        p = build_prompt(q, [ContextPassage("学則", "第42条（除籍）", "学長は、次の者を除籍する。")])
        a = _ids(hf, hf.generate(p, GenerationOptions(16)).text)
        b = _ids(ct, ct.generate(p, GenerationOptions(16)).text)
        first += a[:1] == b[:1]
        lead = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        leads.append(lead / max(1, len(a)))
    assert first >= 8 and sum(leads) / len(leads) >= 0.4, (first, leads)


def test_streaming_and_a_reader_that_stops(exports):
    ct = CT2Generator(exports["float32"])
    pieces = []
    gen = ct.generate(PROMPTS[0], GenerationOptions(12), on_text=pieces.append)
    assert "".join(pieces) == gen.text and gen.first_token_ms is not None

    def reader(piece):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ct.generate(PROMPTS[0], GenerationOptions(200), on_text=reader)
    assert ct.generate(PROMPTS[1], GenerationOptions(4)).new_tokens >= 1


def test_damaged_or_foreign_exports_are_clear_errors(tiny_generator, exports, tmp_path):
    with pytest.raises(ModelError, match="not a CTranslate2 export"):
        CT2Generator(tiny_generator)                     # a transformers directory
    broken = tmp_path / "broken"
    shutil.copytree(exports["int8"], broken)
    (broken / RECORD).write_text("{", "utf-8")
    with pytest.raises(ModelError, match="damaged"):
        CT2Generator(broken)
    (broken / RECORD).write_text("{}", "utf-8")
    (broken / "model.bin").write_bytes(b"not a model")
    with pytest.raises(ModelError, match="cannot load the CTranslate2 model"):
        CT2Generator(broken)


def test_ask_and_eval_run_on_an_export(exports, corpus_index, tmp_path, tiny_adapter,
                                       tiny_generator):
    from rag.cli import cli
    run = CliRunner().invoke
    r = run(cli, ["ask", "除籍されますか？", "--index", str(corpus_index), "--model",
                  str(exports["int8"]), "--max-new-tokens", "8", "--json"], obj={})
    assert r.exit_code == 0, r.output
    answer = json.loads(r.output)
    assert answer["model"] == str(exports["int8"]) and answer["sources"]
    timings = answer["timings"]             # prefill and decoding apart
    assert timings["prompt_tokens"] > 0 and timings["prefill_tokens_per_s"] > 0
    assert "decode_tokens_per_s" in timings
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"id": "a", "question": "除籍されますか？"}\n', encoding="utf-8")
    r = run(cli, ["eval", str(questions), "--index", str(corpus_index), "--model",
                  str(exports["int8"]), "--max-new-tokens", "8", "--out", str(tmp_path / "e")],
            obj={})
    assert r.exit_code == 0, r.output
    # An adapter is merged first when exporting; the CLI names the result.
    r = run(cli, ["models", "export", str(tiny_generator), "--adapter", str(tiny_adapter),
                  "--quantization", "int8", "--out", str(tmp_path / "merged-ct2")], obj={})
    assert r.exit_code == 0, r.output
    record = json.loads((tmp_path / "merged-ct2" / RECORD).read_text("utf-8"))
    assert record["adapter"] == str(tiny_adapter)
    from rag.prompt import trained_layout       # the layout the merged adapter learnt
    assert record["trained_prompt"] == trained_layout(tiny_adapter)
    r = run(cli, ["ask", "x", "--index", str(corpus_index), "--model",
                  str(tmp_path / "merged-ct2"), "--adapter", str(tiny_adapter)], obj={})
    assert r.exit_code == 1 and "merged when it was exported" in r.output
