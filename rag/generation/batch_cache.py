"""The KV cache of a running batch (continuous batching, rag.generation.hf.RunningBatch).

One row per sequence, and the columns are shared: every decode step writes one column
for all rows, in place (transformers' DynamicLayer would `torch.cat` the whole cache
each token). A sequence that joins has its prompt read alone; its keys and values are
copied into a free row so that they end at the current column, and the row's attention
mask marks its own columns, nothing else. A sequence that leaves only frees its row.

Where a key sits in the buffer does not matter, only the mask: the model receives each
token's position explicitly (`position_ids`, counting that sequence's real tokens), and
its keys carry that position (rotary embeddings are applied before caching, absolute
ones before the first layer), so rows joined at different steps, with prompts of any
length, share one buffer and decode exactly as they would alone. (That holds for GPT-NeoX,
Llama, Qwen and GPT-2 layouts; an ALiBi model would need columns to be positions.)

    columns   start ......................... end (the next step writes here)
    row 0     . . . [ prompt 0 . . . . . | answer 0 . . . ]
    row 1     . . . . . . . . [ prompt 1 (joined later) | . ]
    row 2     (free: garbage, masked out of every other row; reused by the next joiner)

The buffer is copied only when it must change shape (`relayout`): more rows than it
has, a joiner's prompt longer than the columns before `end`, no column left for the
next step, or most rows free and nobody joining (then it shrinks to the live rows).
"""
from __future__ import annotations

from transformers.cache_utils import DynamicCache, DynamicLayer


class SlotLayer(DynamicLayer):
    """One layer's keys and values, [rows, heads, capacity, dim]; the model sees
    columns [start, end) and writes each step's column at `end`."""

    def __init__(self, keys, values):
        super().__init__()
        self.device, self.is_initialized = keys.device, True
        self.buffer_keys, self.buffer_values = keys, values
        self.start = self.end = 0
        self.view()

    def view(self) -> None:
        self.keys = self.buffer_keys[:, :, self.start:self.end]
        self.values = self.buffer_values[:, :, self.start:self.end]

    def update(self, key_states, value_states, *args, **kwargs):
        n = key_states.shape[-2]
        self.buffer_keys[:, :, self.end:self.end + n] = key_states
        self.buffer_values[:, :, self.end:self.end + n] = value_states
        self.end += n
        self.view()
        return self.keys, self.values

    def batch_select_indices(self, indices) -> None:      # not used by RunningBatch
        raise NotImplementedError("rows of a SlotCache are freed, not selected")


class SlotCache(DynamicCache):
    """Rows of sequences in one buffer per layer, with the attention mask over them."""

    def __init__(self, prompt_cache, rows: int, end: int, capacity: int):
        """Buffers shaped like `prompt_cache` (one prompt's DynamicCache), `rows` x
        `capacity` columns, every row free, the next step's column at `end`."""
        super().__init__()
        import torch

        self._torch = torch
        self.layers = []
        for layer in prompt_cache.layers:
            _, heads, _, dim = layer.keys.shape
            self.layers.append(SlotLayer(
                layer.keys.new_zeros((rows, heads, capacity, dim)),
                layer.values.new_zeros((rows, heads, capacity, layer.values.shape[-1]))))
        for layer in self.layers:
            layer.start = layer.end = end
            layer.view()
        self.mask = torch.zeros((rows, capacity), dtype=torch.long, device=self.layers[0].device)
        self.first: list[int | None] = [None] * rows      # each live row's first column

    @property
    def rows(self) -> int:
        return self.mask.shape[0]

    @property
    def capacity(self) -> int:
        return self.mask.shape[1]

    @property
    def start(self) -> int:
        return self.layers[0].start

    @property
    def end(self) -> int:
        return self.layers[0].end

    def free_rows(self) -> list[int]:
        return [row for row, first in enumerate(self.first) if first is None]

    def place(self, row: int, prompt_cache) -> None:
        """Copy one prompt's keys and values into `row`, ending at column `end`."""
        length = prompt_cache.layers[0].keys.shape[-2]
        begin = self.end - length
        assert begin >= 0 and self.first[row] is None, "relayout before placing"
        for layer, prompt in zip(self.layers, prompt_cache.layers):
            layer.buffer_keys[row, :, begin:self.end] = prompt.keys[0]
            layer.buffer_values[row, :, begin:self.end] = prompt.values[0]
        self.mask[row] = 0
        self.mask[row, begin:self.end] = 1
        self.first[row] = begin
        self._set_start()

    def free(self, row: int) -> None:
        """The sequence of `row` has left; the row waits for the next joiner."""
        self.first[row] = None
        self._set_start()

    def attention_mask(self):
        """The mask for the next step's forward pass: columns [start, end], the new
        column included (every row attends to its own new token; a free row to nothing
        else, so it never has a row of -inf)."""
        self.mask[:, self.end] = 1
        return self.mask[:, self.start:self.end + 1]

    def relayout(self, keep: list[int], rows: int, end: int, capacity: int) -> None:
        """New buffers of `rows` x `capacity`: the rows `keep` (in that order) become
        rows 0.. with their live columns moved to end at `end`; the rest are free."""
        torch = self._torch
        start, old_end = self.start, self.end
        span = old_end - start
        assert len(keep) <= rows and span <= end < capacity
        index = torch.tensor(keep, dtype=torch.long, device=self.mask.device)
        for layer in self.layers:
            for name in ("buffer_keys", "buffer_values"):
                old = getattr(layer, name)
                new = old.new_zeros((rows, old.shape[1], capacity, old.shape[3]))
                new[:len(keep), :, end - span:end] = old[index, :, start:old_end]
                setattr(layer, name, new)
            layer.start, layer.end = end - span, end
            layer.view()
        mask = self.mask.new_zeros((rows, capacity))
        mask[:len(keep), end - span:end] = self.mask[index, start:old_end]
        shift = end - old_end
        self.mask = mask
        self.first = [self.first[row] + shift for row in keep] + [None] * (rows - len(keep))
        self._set_start()

    def _set_start(self) -> None:
        """The view begins at the earliest live row's first column: columns that only
        left rows used are no longer read."""
        live = [first for first in self.first if first is not None]
        start = min(live) if live else self.end
        for layer in self.layers:
            layer.start = start
            layer.view()
