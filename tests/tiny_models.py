"""Tiny real models for offline tests: built from scratch, saved, loaded by path.

The tokenizer is trained on the text it will see, so Japanese is split into
real sub-words rather than [UNK]; the weights are random but the loading,
pooling, FAISS and bm25s code paths are the production ones.
"""
from __future__ import annotations

from pathlib import Path


def train_wordpiece(texts: list[str], vocab_size: int = 2000):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.NFKC()
    # BERT-style CJK handling: every ideograph/kana becomes its own pre-token.
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    tok.train_from_iterator(texts, trainer)
    return tok


def build_tiny_sentence_transformer(out: Path, texts: list[str], *, dim: int = 32,
                                    max_seq_length: int = 256, seed: int = 0,
                                    prompts: dict | None = None) -> Path:
    """A 2-layer random BERT + mean pooling + normalisation, saved as an ST model."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from tokenizers import processors
    from transformers import BertConfig, BertModel, BertTokenizerFast

    out = Path(out)
    raw = train_wordpiece(texts)
    raw.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", raw.token_to_id("[CLS]")), ("[SEP]", raw.token_to_id("[SEP]"))])
    tokenizer = BertTokenizerFast(tokenizer_object=raw, unk_token="[UNK]", pad_token="[PAD]",
                                  cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                                  model_max_length=max_seq_length)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=raw.get_vocab_size(), hidden_size=dim, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=dim * 2,
                        max_position_embeddings=max_seq_length + 2)
    bert_dir = out / "bert"
    BertModel(config).save_pretrained(bert_dir)
    tokenizer.save_pretrained(bert_dir)
    word = Transformer(str(bert_dir), max_seq_length=max_seq_length)
    pool = Pooling(word.get_embedding_dimension(), pooling_mode="mean")
    st = SentenceTransformer(modules=[word, pool, Normalize()],
                             prompts=prompts or {}, device="cpu")
    st.save(str(out))
    return out


def build_tiny_gpt_neox(out: Path, texts: list[str], *, vocab_size: int = 3000,
                        max_position_embeddings: int = 2048, hidden_size: int = 64,
                        seed: int = 0) -> Path:
    """A random GPTNeoXForCausalLM with OpenCALM's layout (rotary on all dims,
    sequential residual, untied head, eos = bos = 0, a separate <|padding|>) and a
    byte-level BPE tokenizer trained on `texts`, saved as safetensors."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerFast

    out = Path(out)
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|padding|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
        unk_token="<|endoftext|>", pad_token="<|padding|>",
        model_max_length=max_position_embeddings)
    torch.manual_seed(seed)
    config = GPTNeoXConfig(
        vocab_size=raw.get_vocab_size(), hidden_size=hidden_size,
        intermediate_size=4 * hidden_size,
        num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=max_position_embeddings,
        rotary_pct=1.0, rotary_emb_base=10000, use_parallel_residual=False,
        tie_word_embeddings=False, hidden_act="gelu", layer_norm_eps=1e-5,
        bos_token_id=0, eos_token_id=0, pad_token_id=1)
    model = GPTNeoXForCausalLM(config)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def make_lora_adapter(base: Path, out: Path, *, seed: int = 0) -> Path:
    """A LoRA adapter on query_key_value with non-zero B, so it changes the outputs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=16, lora_dropout=0.0,
                                                  target_modules=["query_key_value"],
                                                  task_type="CAUSAL_LM"))
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    peft_model.save_pretrained(out, safe_serialization=True)
    return Path(out)


def build_tiny_modernbert_sentence_transformer(out: Path, texts: list[str], *, dim: int = 32,
                                               layers: int = 4, local_attention: int = 8,
                                               seed: int = 0) -> Path:
    """A 4-layer random ModernBERT (ruri-v3's architecture: rotary positions with a theta
    per layer kind, a sliding window on two layers of three, gated MLP, no biases) + mean
    pooling, saved as an ST model. The window is small so short texts cross it."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from tokenizers import processors
    from transformers import ModernBertConfig, ModernBertModel, PreTrainedTokenizerFast

    out = Path(out)
    raw = train_wordpiece(texts)
    cls, sep = raw.token_to_id("[CLS]"), raw.token_to_id("[SEP]")
    raw.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]",
                                        pad_token="[PAD]", cls_token="[CLS]",
                                        sep_token="[SEP]", mask_token="[MASK]",
                                        model_max_length=512)
    torch.manual_seed(seed)
    config = ModernBertConfig(
        vocab_size=raw.get_vocab_size(), hidden_size=dim, num_hidden_layers=layers,
        num_attention_heads=2, intermediate_size=dim * 2, max_position_embeddings=512,
        local_attention=local_attention, global_attn_every_n_layers=3,
        pad_token_id=raw.token_to_id("[PAD]"), cls_token_id=cls, sep_token_id=sep,
        bos_token_id=cls, eos_token_id=sep, attn_implementation="eager")
    body = out / "modernbert"
    model = ModernBertModel(config)
    with torch.no_grad():           # norms away from 1/0 so that a wrong one shows
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(1.0, 0.3)
    model.save_pretrained(body)
    tokenizer.save_pretrained(body)
    word = Transformer(str(body), max_seq_length=512)
    pool = Pooling(word.get_embedding_dimension(), pooling_mode="mean")
    SentenceTransformer(modules=[word, pool], device="cpu").save(str(out))
    return out
