"""Fine-tuning with a tiny OpenCALM-layout model on CPU: masking, learning, resume,
stopping on a signal, merge, data building, config errors, and two-process DDP and
FSDP runs (gloo) that match a single process."""
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
    # The prompt layout it learned travels with it (checked when it answers).
    from rag.prompt import PROMPT_RECORD, PROMPT_VERSION
    assert run["prompt"] == {"prompt_version": PROMPT_VERSION, "template": "instruction"}
    assert json.loads((out / PROMPT_RECORD).read_text("utf-8")) == run["prompt"]
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
    from rag.evaluation.questions import load_questions
    from rag.retrieval.retriever import Retriever

    from finetune.build_data import build, strip_citations
    rows = build(Retriever(corpus_index), REPO / "corpus" / "questions.jsonl", k=4)
    qs = {q.id: q for q in load_questions(REPO / "corpus" / "questions.jsonl")}
    kinds = {r["kind"] for r in rows}
    assert kinds == {"answer", "abstain", "unanswerable"}
    for r in rows:
        assert r["instruction"] == INSTRUCTION_WITH_CONTEXT and "質問: " in r["input"]
        gold = {f"{g.file}#{g.article}" for g in qs[r["id"]].gold}
        if r["kind"] == "answer":
            # RAFT target (tests/test_finetune_raft.py): quote, answer, citation
            assert gold <= set(r["context"])
            assert f"回答: {strip_citations(qs[r['id']].answer)}" in r["output"].split("\n")
        else:
            assert not gold & set(r["context"]) and r["output"] == ABSTAIN_ANSWER


def test_build_data_checks_gold_articles_first(corpus_index, tmp_path):
    from rag.evaluation.questions import QuestionSetError
    from rag.retrieval.retriever import Retriever

    from finetune.build_data import build
    f = tmp_path / "q.jsonl"
    f.write_text('{"id": "a", "question": "除籍？", "gold": [{"file": "学則.txt", '
                 '"article": "第999条"}]}\n', encoding="utf-8")
    with pytest.raises(QuestionSetError, match=r"q.jsonl:1: gold article 学則.txt 第999条"):
        build(Retriever(corpus_index), f)


# Two CPU processes over gloo, against one process with the same effective batch: the
# micro-batches are the same (rank r of 2 takes global micro-batches r, r + 2, ...), so
# the adapters agree to rounding only if each rank trained on its own half of the data.
DISTRIBUTED = ["--set", "micro_batch=2", "--set", "eval_fraction=0.2", "--set", "lr=1e-2",
               "--set", "warmup_steps=1", "--set", "lora_dropout=0", "--set", "log_every=1"]


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(launcher: list[str], tiny_generator, data, out, *args) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [sys.executable, "-m", *launcher, "-m", "rag", "finetune", "train",
         "--model", str(tiny_generator), "--data", str(data), "--out", str(out), *DISTRIBUTED,
         *args, "--json"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def _one_process(tiny_generator, data, out, **kw) -> dict:
    cfg = load_config(None, [a for a in DISTRIBUTED if a != "--set"], model=str(tiny_generator),
                      data=(str(data),), out=str(out))
    for key, value in kw.items():
        setattr(cfg, key, value)
    return train(cfg, progress=False, log=lambda s: None)


def _same_adapter(a: Path, b: Path) -> None:
    import torch
    from safetensors.torch import load_file
    x, y = load_file(a / "adapter_model.safetensors"), load_file(b / "adapter_model.safetensors")
    assert x.keys() == y.keys()
    for k in x:
        assert torch.allclose(x[k], y[k], atol=1e-5), (k, (x[k] - y[k]).abs().max())


def test_two_process_ddp_run_trains_one_adapter(tiny_generator, alpaca, tmp_path):
    out = tmp_path / "ddp"
    card = _launch(["torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                    str(_free_port())], tiny_generator, alpaca, out,
                   "--max-steps", "4", "--set", "grad_accum=2")
    assert card["world_size"] == 2 and card["steps"] == 4 and card["strategy"] == "ddp"
    assert (out / "adapter_model.safetensors").is_file()
    assert card["final_train_loss"] < card["first_train_loss"]
    one = _one_process(tiny_generator, alpaca, tmp_path / "one", max_steps=4, grad_accum=4)
    _same_adapter(out, tmp_path / "one")
    assert card["final_eval_loss"] == pytest.approx(one["final_eval_loss"], abs=1e-5)


def test_two_process_fsdp_run_shards_resumes_and_matches_one_process(tiny_generator, alpaca,
                                                                      tmp_path):
    """FSDP through `accelerate launch` (gloo on CPUs; its --cpu would start a single
    process): sharded optimizer state in the checkpoint, a resume from it, an evaluation
    with a rank that has no batch of its own, and an adapter that PEFT loads."""
    out = tmp_path / "fsdp"
    launcher = ["accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                "--main_process_port", str(_free_port())]
    args = ("--set", "strategy=fsdp", "--set", "grad_accum=2", "--set", "max_eval_examples=2")
    first = _launch(launcher, tiny_generator, alpaca, out, "--max-steps", "2", *args)
    assert first["world_size"] == 2 and first["strategy"] == "fsdp"
    assert (out / "checkpoint" / "accelerate" / "optimizer_0").is_dir()
    card = _launch(launcher, tiny_generator, alpaca, out, "--max-steps", "4", "--resume", *args)
    assert card["steps"] == 4 and card["final_train_loss"] < first["first_train_loss"]
    one = tmp_path / "one"
    _one_process(tiny_generator, alpaca, one, max_steps=2, grad_accum=4, max_eval_examples=2)
    ref = _one_process(tiny_generator, alpaca, one, max_steps=4, grad_accum=4,
                       max_eval_examples=2, resume=True)
    _same_adapter(out, one)
    assert card["final_eval_loss"] == pytest.approx(ref["final_eval_loss"], abs=1e-5)
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_generator),
                                      str(out))
    assert model(input_ids=torch.tensor([[5, 17, 42]])).logits.shape[:2] == (1, 3)


def test_a_signal_checkpoints_and_the_run_resumes_from_it(tiny_generator, alpaca, tmp_path,
                                                         monkeypatch):
    """SIGUSR1 (Slurm's warning before the time limit) or SIGTERM (scancel): the step
    finishes, a checkpoint is saved, Interrupted is raised (rag exits 75), and --resume
    ends where an uninterrupted run ends."""
    import signal

    import finetune.train as ft
    from finetune.train import Interrupted
    whole = tmp_path / "whole"
    train(_cfg(tiny_generator, alpaca, whole, max_steps=5), progress=False, log=lambda s: None)
    real = ft._optimizer_step

    def step_then_signal(run):
        result = real(run)
        if run.step == 1:                       # during step 2
            os.kill(os.getpid(), signal.SIGUSR1)
        return result

    part = tmp_path / "part"
    monkeypatch.setattr(ft, "_optimizer_step", step_then_signal)
    logs = []
    with pytest.raises(Interrupted) as stopped:
        train(_cfg(tiny_generator, alpaca, part, max_steps=5), progress=False, log=logs.append)
    assert stopped.value.step == 2 and any("stopped by SIGUSR1 at step 2 of 5" in x for x in logs)
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL      # handlers restored
    monkeypatch.setattr(ft, "_optimizer_step", real)
    card = train(_cfg(tiny_generator, alpaca, part, max_steps=5, resume=True), progress=False,
                 log=logs.append)
    assert "resuming at step 2 of 5" in logs and card["steps"] == 5
    _same_adapter(whole, part)


def test_strategy_contradicting_the_launcher_is_an_error(tiny_generator, alpaca, tmp_path,
                                                         monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")        # accelerate launch --use_fsdp
    with pytest.raises(TrainError, match="set strategy = \"fsdp\""):
        train(_cfg(tiny_generator, alpaca, tmp_path / "x"), progress=False, log=lambda s: None)


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
                                           ("eval_fraction=1.5", "eval_fraction"),
                                           ("strategy=zero", "strategy must be ddp or fsdp")])
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
