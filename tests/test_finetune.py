"""Fine-tuning with a tiny OpenCALM-layout model on CPU: masking, learning, resume,
merge, data building, config errors, and a two-process DDP run (gloo)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from finetune.config import ConfigError, TrainConfig, load_config
from finetune.data import IGNORE, DataError, Example, prepare, to_example, tokenize
from finetune.train import TrainError, train

REPO = Path(__file__).resolve().parents[1]
FACTS = [("学長は誰が任命しますか", "理事会です"), ("修業年限は", "4年です"),
         ("在学期間の上限は", "8年です"), ("卒業に必要な単位は", "124単位です"),
         ("履修登録の上限は", "24単位です"), ("GPAの最高値は", "4.0です")]


@pytest.fixture
def alpaca(tmp_path):
    f = tmp_path / "data.jsonl"
    rows = [{"instruction": f"{q}？", "input": "", "output": a} for q, a in FACTS * 4]
    f.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", "utf-8")
    return f


def _cfg(tiny_generator, data, out, **kw):
    base = dict(model=str(tiny_generator), data=[str(data)], out=str(out), max_steps=30,
                micro_batch=4, grad_accum=1, lr=1e-2, warmup_steps=1, lora_r=8,
                lora_dropout=0.0, eval_fraction=0.0, log_every=5, eval_every=100,
                save_every=100, gradient_checkpointing=True)
    base.update(kw)
    return TrainConfig(**base)


def test_labels_mask_the_prompt_and_end_with_eos(tiny_generator):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(tiny_generator)
    ex = to_example({"instruction": "除籍の要件は？", "output": "学則第42条です。"}, tok, "row 0")
    assert ex.prompt.endswith("### 応答:\n") and "### 指示:\n除籍の要件は？" in ex.prompt
    t = tokenize(ex, tok, 512)
    n_prompt = len(tok(ex.prompt, add_special_tokens=False)["input_ids"])
    assert t["labels"][:n_prompt] == [IGNORE] * n_prompt
    assert t["labels"][n_prompt:] == t["input_ids"][n_prompt:]
    assert t["input_ids"][-1] == tok.eos_token_id
    assert tokenize(ex, tok, 5) is None                     # too long: dropped


def test_chat_rows_and_bad_rows(tiny_generator, tmp_path):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(tiny_generator)
    ex = to_example({"messages": [{"role": "user", "content": "休学できますか"},
                                  {"role": "assistant", "content": "できます"}]}, tok, "r")
    assert isinstance(ex, Example) and ex.completion == "できます" and "休学できますか" in ex.prompt
    with pytest.raises(DataError, match="data.jsonl row 1: field 'output'"):
        f = tmp_path / "data.jsonl"
        f.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c"}\n', "utf-8")
        prepare([str(f)], tok, 256, 0.0, 10, 0)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", "utf-8")
    with pytest.raises(DataError, match="empty dataset"):
        prepare([str(empty)], tok, 256, 0.0, 10, 0)


def test_unknown_dataset_id_is_a_clear_error(tiny_generator, monkeypatch):
    from transformers import AutoTokenizer
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    tok = AutoTokenizer.from_pretrained(tiny_generator)
    with pytest.raises(DataError, match="no-such/dataset: unknown or unreachable dataset"):
        prepare(["no-such/dataset"], tok, 256, 0.0, 10, 0)


def test_config_errors_name_the_key(tmp_path):
    f = tmp_path / "ft.toml"
    f.write_text('model = "x"\ndata = ["d.jsonl"]\nlearning_rate = 1e-4\n', "utf-8")
    with pytest.raises(ConfigError, match="unknown setting 'learning_rate'"):
        load_config(f)
    with pytest.raises(ConfigError, match="lr = 'fast'"):
        load_config(None, ["lr=fast"], data=("d.jsonl",))
    cfg = load_config(None, ["lr=1e-4", "target_modules=query_key_value,dense"],
                      data=("d.jsonl",), max_steps=5)
    assert cfg.lr == 1e-4 and cfg.target_modules == ["query_key_value", "dense"]
    assert cfg.max_steps == 5
    with pytest.raises(ConfigError, match="no training data"):
        load_config(None)
    f.write_bytes('model = "東雲"\n'.encode("cp932"))
    with pytest.raises(ConfigError, match="ft.toml: not UTF-8"):
        load_config(f)
    # the shipped example configs are valid
    for example in (REPO / "finetune" / "examples").glob("*.toml"):
        assert load_config(example).data


def test_training_lowers_the_loss_and_saves_a_usable_adapter(tiny_generator, alpaca,
                                                             tmp_path, corpus_index):
    out = tmp_path / "adapter"
    # A random 2-layer model's frozen head bounds what LoRA can fit (~7.2 nats from 8.1);
    # all linear layers learn fastest.
    targets = ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"]
    card = train(_cfg(tiny_generator, alpaca, out, target_modules=targets), progress=False,
                 log=lambda s: None)
    assert card["final_train_loss"] < card["first_train_loss"] - 0.5, card
    assert (out / "adapter_model.safetensors").is_file() and (out / "run.json").is_file()
    run = json.loads((out / "run.json").read_text("utf-8"))
    assert run["steps"] == 30 and run["tokens_seen"] > 0 and run["lora_targets"] == targets
    assert run["base_model"] == str(tiny_generator) and run["dropped_too_long"] == 0
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["step"] == 30 and "tokens_per_s" in metrics[0]
    # PEFT loads it, and so does `rag ask --adapter`
    from peft import PeftConfig
    assert PeftConfig.from_pretrained(str(out)).r == 8
    from click.testing import CliRunner

    from rag.cli import cli
    r = CliRunner().invoke(cli, ["ask", "修業年限は？", "--adapter", str(out), "--index",
                                 str(corpus_index), "--max-new-tokens", "4", "--json"], obj={})
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["adapter"] == str(out)


def test_resume_continues_at_the_checkpoint_step(tiny_generator, alpaca, tmp_path, monkeypatch):
    import torch
    from safetensors.torch import load_file

    import finetune.train as ft
    whole = tmp_path / "whole"
    train(_cfg(tiny_generator, alpaca, whole, max_steps=6, save_every=3), progress=False,
          log=lambda s: None)

    real = ft._checkpoint

    def checkpoint_then_die(path, model, optimizer, scaler, step, *a):
        real(path, model, optimizer, scaler, step, *a)
        if step == 3:
            raise KeyboardInterrupt          # preempted right after the step-3 checkpoint

    part = tmp_path / "part"
    monkeypatch.setattr(ft, "_checkpoint", checkpoint_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(tiny_generator, alpaca, part, max_steps=6, save_every=3), progress=False,
              log=lambda s: None)
    monkeypatch.setattr(ft, "_checkpoint", real)
    logs = []
    card = train(_cfg(tiny_generator, alpaca, part, max_steps=6, save_every=3, resume=True),
                 progress=False, log=logs.append)
    assert "resuming at step 3 of 6" in logs
    assert card["steps"] == 6
    a = load_file(whole / "adapter_model.safetensors")
    b = load_file(part / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    with pytest.raises(TrainError, match="would change the data order"):
        train(_cfg(tiny_generator, alpaca, part, max_steps=9, micro_batch=2, resume=True),
              progress=False, log=lambda s: None)


def test_merged_model_matches_adapter_on_base(tiny_generator, tiny_adapter, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from finetune.merge import merge
    merged_dir = merge(str(tiny_adapter), tmp_path / "merged", dtype="fp32")
    assert (merged_dir / "model.safetensors").is_file()
    ids = torch.tensor([[5, 17, 42, 99, 7]])
    with torch.no_grad():
        base = AutoModelForCausalLM.from_pretrained(tiny_generator)
        ref = PeftModel.from_pretrained(base, str(tiny_adapter))(ids).logits
        got = AutoModelForCausalLM.from_pretrained(merged_dir)(ids).logits
    assert torch.allclose(ref, got, atol=1e-4)


def test_missing_lora_target_fails_before_training(tiny_generator, alpaca, tmp_path):
    cfg = _cfg(tiny_generator, alpaca, tmp_path / "x", target_modules=["q_proj"])
    with pytest.raises(TrainError, match="no modules named q_proj"):
        train(cfg, progress=False, log=lambda s: None)


def test_build_data_from_the_sample_corpus(corpus_index, tmp_path):
    from rag.prompt import ABSTAIN_ANSWER, INSTRUCTION_WITH_CONTEXT
    from rag.questions import load_questions
    from rag.retrieve import Retriever

    from finetune.build_data import build
    rows = build(Retriever(corpus_index), REPO / "corpus" / "questions.jsonl", k=4)
    qs = {q.id: q for q in load_questions(REPO / "corpus" / "questions.jsonl")}
    kinds = {r["kind"] for r in rows}
    assert kinds == {"answer", "abstain", "unanswerable"}
    for r in rows:
        assert r["instruction"] == INSTRUCTION_WITH_CONTEXT and "質問: " in r["input"]
        gold = {f"{g.file}#{g.article}" for g in qs[r["id"]].gold}
        if r["kind"] == "answer":
            assert gold <= set(r["context"]) and r["output"] == qs[r["id"]].answer
        else:
            assert not gold & set(r["context"]) and r["output"] == ABSTAIN_ANSWER


def test_build_data_checks_gold_articles_first(corpus_index, tmp_path):
    from rag.questions import QuestionSetError
    from rag.retrieve import Retriever

    from finetune.build_data import build
    f = tmp_path / "q.jsonl"
    f.write_text('{"id": "a", "question": "除籍？", "gold": [{"file": "学則.txt", '
                 '"article": "第999条"}]}\n', encoding="utf-8")
    with pytest.raises(QuestionSetError, match=r"q.jsonl:1: gold article 学則.txt 第999条"):
        build(Retriever(corpus_index), f)


def test_two_process_ddp_run_trains_one_adapter(tiny_generator, alpaca, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_port", "29531", "-m", "rag", "finetune", "train",
         "--model", str(tiny_generator), "--data", str(alpaca), "--out", str(out),
         "--max-steps", "4", "--set", "micro_batch=2", "--set", "grad_accum=1",
         "--set", "eval_fraction=0", "--set", "lora_dropout=0", "--json"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    card = json.loads(proc.stdout)
    assert card["world_size"] == 2 and card["steps"] == 4
    assert (out / "adapter_model.safetensors").is_file()


def test_resuming_a_finished_run_reports_it(tiny_generator, alpaca, tmp_path):
    out = tmp_path / "done"
    first = train(_cfg(tiny_generator, alpaca, out, max_steps=3), progress=False,
                  log=lambda s: None)
    logs = []
    again = train(_cfg(tiny_generator, alpaca, out, max_steps=3, resume=True), progress=False,
                  log=logs.append)
    assert again == first and any("already trained" in x for x in logs)


@pytest.mark.parametrize("setting,error", [("grad_accum=0", "grad_accum must be at least 1"),
                                           ("micro_batch=0", "micro_batch must be at least 1"),
                                           ("eval_fraction=1.5", "eval_fraction")])
def test_settings_out_of_range(setting, error):
    with pytest.raises(ConfigError, match=error):
        load_config(None, [setting], data=("d.jsonl",))


def test_malformed_chat_rows(tiny_generator):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(tiny_generator)
    for row in ({"messages": [{"role": "user"}, {"role": "assistant", "content": "x"}]},
                {"messages": ["hello", {"role": "assistant", "content": "x"}]},
                {"instruction": "a", "output": "b", "input": 3}):
        with pytest.raises(DataError, match="row 7"):
            to_example(row, tok, "d.jsonl row 7")
