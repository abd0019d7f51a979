"""A KV cache for batched decoding (TransformersGenerator.stream_batch) that does not
copy itself every token.

transformers' DynamicLayer appends each new token with torch.cat, copying the whole
cache: for 16 sequences of 900-token prompts that copy cost more than the model's own
step on a CPU. `RoomyLayer` keeps keys and values in buffers with room for the answer
and writes each token in place; the model sees views of the filled part.
"""
from __future__ import annotations

from transformers.cache_utils import DynamicCache, DynamicLayer


class RoomyLayer(DynamicLayer):
    def __init__(self, keys, values, room: int):
        super().__init__()
        self.device, self.is_initialized = keys.device, True
        self._length = keys.shape[-2]
        self._keys, self._values = self._buffer(keys, room), self._buffer(values, room)
        self._view()

    @staticmethod
    def _buffer(tensor, room: int):
        batch, heads, length, dim = tensor.shape
        buffer = tensor.new_empty((batch, heads, length + room, dim))
        buffer[:, :, :length] = tensor
        return buffer

    def _view(self) -> None:
        self.keys = self._keys[:, :, :self._length]
        self.values = self._values[:, :, :self._length]

    def update(self, key_states, value_states, *args, **kwargs):
        n = key_states.shape[-2]
        if self._length + n > self._keys.shape[-2]:          # out of room: double it
            self._keys = self._buffer(self.keys, self._length + n)
            self._values = self._buffer(self.values, self._length + n)
        self._keys[:, :, self._length:self._length + n] = key_states
        self._values[:, :, self._length:self._length + n] = value_states
        self._length += n
        self._view()
        return self.keys, self.values

    def batch_select_indices(self, indices) -> None:
        self._keys, self._values = self._keys[indices], self._values[indices]
        self._view()


def roomy_cache(layers: list[tuple], room: int) -> DynamicCache:
    """A DynamicCache over (keys, values) per layer, each with room for `room` tokens."""
    cache = DynamicCache()
    cache.layers = [RoomyLayer(keys, values, room) for keys, values in layers]
    return cache
