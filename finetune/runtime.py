"""Where and how training runs: the accelerate `Accelerator`, the model on it, signals.

One process per GPU, started by torchrun, srun + torchrun, or `accelerate launch`
(they set RANK, WORLD_SIZE, LOCAL_RANK, which accelerate reads); a single process
without them. The Accelerator places the model, runs mixed precision (bf16 on Ampere
and newer; fp16 with loss scaling on V100-class GPUs, whose fp16 weights keep their
norms and biases in fp32; fp32 on CPU), and synchronises gradients once per
accumulated step. `strategy` chooses how several processes share the model:

- ddp: every GPU holds the whole model, loaded straight onto it; DDP averages the
  gradients.
- fsdp: FSDP2 shards the model across the GPUs, one unit per transformer layer, so a
  model that does not fit one GPU trains on several. Each rank loads it on the host and
  `prepare` moves its shard to its GPU; the LoRA weights train in fp32 and their
  gradients are averaged in fp32.

The settings decide the precision, the strategy and the accumulation, not the
launcher's flags; an `accelerate launch --use_fsdp` that contradicts `strategy` is an
error rather than a silent choice.
"""
from __future__ import annotations

import contextlib
import os

from ingest.errors import RagError

from .config import TrainConfig

# LoRA targets per architecture: the attention projections.
TARGET_MODULES = {
    "gpt_neox": ["query_key_value"],
    "gptj": ["q_proj", "k_proj", "v_proj", "out_proj"],
    "gpt2": ["c_attn"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "qwen3": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "gemma": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "gemma2": ["q_proj", "k_proj", "v_proj", "o_proj"],
}

_PRECISION = {"bfloat16": "bf16", "float16": "fp16", "float32": "no"}


class TrainError(RagError):
    pass


@contextlib.contextmanager
def accelerator_for(cfg: TrainConfig):
    """(Accelerator, torch dtype of the weights) for one run. On leaving, the process
    group is closed and accelerate's process-wide state reset, so another run in the
    same process (tests, benchmarks) can choose another precision or strategy."""
    import torch
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState, PartialState
    from accelerate.utils import GradientAccumulationPlugin

    from rag.generation.models import pick_device_dtype

    launched_fsdp = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    if launched_fsdp and cfg.strategy != "fsdp":
        raise TrainError("launched with FSDP (accelerate launch --use_fsdp) but strategy = "
                         f"{cfg.strategy!r}; set strategy = \"fsdp\" (--set strategy=fsdp)")
    saved_env = {k: v for k, v in os.environ.items() if k.startswith(("ACCELERATE_", "FSDP_"))}
    try:
        # This process's device (joining the process group under a launcher) decides the
        # precision, which the Accelerator needs from the start.
        device = PartialState(cpu=not torch.cuda.is_available()).device
        _, dtype = pick_device_dtype(str(device) if device.type == "cuda" else device.type,
                                     cfg.dtype)
        precision = _PRECISION[str(dtype).replace("torch.", "")]
        if precision == "fp16" and device.type != "cuda":
            raise TrainError("dtype fp16 needs a GPU (loss scaling); use bf16 or fp32 on a CPU")
        plugin = _fsdp_plugin(precision) if cfg.strategy == "fsdp" else None
        acc = Accelerator(
            mixed_precision=precision, fsdp_plugin=plugin,
            # explicit, so that a launcher's --gradient_accumulation_steps cannot override it
            gradient_accumulation_plugin=GradientAccumulationPlugin(
                num_steps=cfg.grad_accum, sync_with_dataloader=False))
        if plugin is not None and acc.num_processes > 1 and not sharded(acc):
            _shard_on_cpus(acc, plugin, precision)
        # Checkpoints hold the LoRA weights as a PEFT adapter beside accelerate's state;
        # under DDP, accelerate would add a copy of the whole model (the base included).
        acc.register_save_state_pre_hook(lambda models, weights, path: weights.clear())
        acc.register_load_state_pre_hook(lambda models, path: models.clear())
        yield acc, dtype
    finally:
        if PartialState._shared_state:
            PartialState().destroy_process_group()      # when there is one
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
        for key in [k for k in os.environ if k.startswith(("ACCELERATE_", "FSDP_"))]:
            if key not in saved_env:
                del os.environ[key]
        os.environ.update(saved_env)


def _fsdp_plugin(precision: str):
    """FSDP2, one unit per transformer layer (the model's `_no_split_modules`), sharded
    checkpoints. Layers compute in bf16/fp16; gradients are reduced in fp32, and outputs
    are not cast (the loss stays fp32)."""
    import torch
    from accelerate import FullyShardedDataParallelPlugin
    from torch.distributed.fsdp import MixedPrecisionPolicy
    compute = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return FullyShardedDataParallelPlugin(
        fsdp_version=2, auto_wrap_policy="transformer_based_wrap", reshard_after_forward=True,
        state_dict_type="SHARDED_STATE_DICT", cpu_ram_efficient_loading=False,
        mixed_precision_policy=MixedPrecisionPolicy(param_dtype=compute,
                                                    reduce_dtype=torch.float32)
        if compute else None)


def _shard_on_cpus(acc, plugin, precision: str) -> None:
    """accelerate shards only on accelerators and falls back to DDP on CPUs, though
    torch's FSDP2 runs on CPUs over gloo as well; sharding there too keeps `fsdp` what it
    says on every machine, and lets the tests run the FSDP path without a GPU."""
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType
    if precision != "no":
        plugin.set_mixed_precision(precision)
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    AcceleratorState._shared_state["distributed_type"] = DistributedType.FSDP
    AcceleratorState._shared_state["fsdp_plugin"] = plugin


def sharded(acc) -> bool:
    from accelerate.utils import DistributedType
    return acc.distributed_type == DistributedType.FSDP


def strategy_name(acc) -> str:
    return "fsdp" if sharded(acc) else ("ddp" if acc.num_processes > 1 else "none")


def device_name(acc) -> str:
    return "cpu" if acc.device.type == "cpu" else str(acc.device)


def lora_targets(cfg: TrainConfig, model) -> list[str]:
    targets = cfg.target_modules or TARGET_MODULES.get(model.config.model_type)
    if not targets:
        raise TrainError(f"no default LoRA targets for architecture "
                         f"{model.config.model_type!r}; set target_modules")
    # A target is a module name (q_proj: every layer's) or, as PEFT matches them, the end
    # of a module path (layers.23.self_attn.q_proj: that layer's only, so a CPU run can
    # put LoRA on the top layers and back-propagate through those alone).
    paths = [n for n, _ in model.named_modules()]
    names = {n.rsplit(".", 1)[-1] for n in paths}
    missing = [t for t in targets if t not in names
               and not ("." in t and any(n.endswith("." + t) for n in paths))]
    if missing:
        raise TrainError(f"{cfg.model} has no modules named {', '.join(missing)} to put LoRA "
                         f"on ({model.config.model_type}); set target_modules")
    return targets


def build_model(cfg: TrainConfig, acc, dtype):
    """(PEFT model, LoRA targets), not yet prepared: under DDP on this process's device,
    under FSDP on the host for `prepare` to shard."""
    import torch
    from peft import LoraConfig, get_peft_model

    from ingest.attention import use_shape_agnostic_attention
    from rag.generation.models import load_causal_lm

    on_host = sharded(acc)
    model = load_causal_lm(cfg.model, device="cpu" if on_host else str(acc.device), dtype=dtype,
                           what="model", trust_remote_code=cfg.trust_remote_code,
                           allow_pickle=cfg.allow_pickle)
    use_shape_agnostic_attention(str(acc.device))
    targets = lora_targets(cfg, model)
    if dtype == torch.float16 and not on_host:
        # fp16 overflows in layer norms and the head (GPT-NeoX on V100): keep them fp32.
        # (FSDP gathers each unit in one dtype and computes in fp16 under autocast.)
        for p in model.parameters():
            if p.ndim == 1:
                p.data = p.data.float()
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model = get_peft_model(model, LoraConfig(
        r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
        target_modules=targets, task_type="CAUSAL_LM"))
    return model, targets


def adapter_weights(acc, model) -> dict:
    """The trainable (LoRA) weights, whole, on the host. Under FSDP every rank must call
    this (it gathers the shards); only the main process needs the result."""
    params = [(n, p) for n, p in acc.unwrap_model(model).named_parameters() if p.requires_grad]
    if sharded(acc):
        from torch.distributed.tensor import DTensor
        params = [(n, p.full_tensor() if isinstance(p, DTensor) else p) for n, p in params]
    return {name: p.detach().cpu() for name, p in params}


def save_adapter(acc, model, weights: dict, path) -> None:
    """adapter_config.json + adapter_model.safetensors (main process)."""
    acc.unwrap_model(model).save_pretrained(path, state_dict=weights, safe_serialization=True)


class _StopOnSignal:
    """Remembers SIGUSR1/SIGTERM so the loop can checkpoint at the next step boundary;
    with several processes every rank stops at the same step."""

    def __init__(self):
        import signal
        self.name = None
        self._old = {}
        for sig in (signal.SIGUSR1, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:          # not the main thread: leave signals alone
                pass

    def _handle(self, signum, frame):
        import signal
        self.name = signal.Signals(signum).name

    def requested(self, acc) -> bool:
        flag = self.name is not None
        if acc.num_processes > 1:
            import torch
            t = torch.tensor([1.0 if flag else 0.0], device=acc.device)
            flag = acc.reduce(t, "sum").item() > 0
            if flag and self.name is None:
                self.name = "a signal on another rank"
        return flag

    def restore(self) -> None:
        import signal
        for sig, old in self._old.items():
            signal.signal(sig, old)
