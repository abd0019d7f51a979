"""Instruction data -> LoRA adapter: data, train, merge; Slurm-ready."""
