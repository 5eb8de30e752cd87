"""A training state (model, optimizer, schedule, generators, position, best so far) in one
safetensors file: its tensors as tensors, everything else as JSON in the file's metadata.

Not `torch.save`: a pickle runs code when it is loaded, and a run folder is something people send
each other. The nesting of optimizer and generator states (tuples, integer keys, NumPy arrays) is
kept by small JSON markers, so what is loaded equals what was saved.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from audiotext.errors import DataError
from audiotext.io import atomic_path, readable_as_umask

STATE_KEY = "state"


class TrainingStateError(DataError):
    """A resumable state that cannot be read; the message names the file."""


def save_state(path: str | Path, state: dict) -> None:
    """Writes `state` to `path` atomically: a kill leaves the previous state or this one, whole."""
    tensors: dict[str, torch.Tensor] = {}
    encoded = _encode(state, _Tensors(tensors))
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={STATE_KEY: json.dumps(encoded)})
        readable_as_umask(tmp)  # another machine's user of a shared file system resumes it


def load_state(path: str | Path) -> dict:
    try:
        with safe_open(str(path), framework="pt") as stored:
            encoded = json.loads((stored.metadata() or {})[STATE_KEY])
            tensors = {name: stored.get_tensor(name) for name in stored.keys()}
    except Exception as err:  # any unreadable file or metadata means the same to a user
        raise TrainingStateError(f"{path}: not a readable training state ({type(err).__name__}: {err})") from None
    return _decode(encoded, tensors)


class _Tensors:
    """The tensors of a state by key. safetensors refuses tensors that share memory, as tied weights
    do (a masked-LM's output layer is its input embedding): one that is the same view of memory
    already stored is stored once under both names, and loads as one tensor again; another view of
    the same memory is stored as a copy."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        self.tensors = tensors
        self.views: dict[tuple, str] = {}
        self.memory: set[int] = set()

    def key(self, value: torch.Tensor) -> str:
        tensor = value.detach().cpu().contiguous()
        view = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape), tensor.dtype)
        if view in self.views:
            return self.views[view]
        if view[0] in self.memory:
            tensor = tensor.clone()
        self.memory.add(view[0])
        key = self.views[view] = str(len(self.tensors))
        self.tensors[key] = tensor
        return key


def _encode(value: Any, tensors: _Tensors) -> Any:
    if isinstance(value, torch.Tensor):
        return {"__tensor__": tensors.key(value)}
    if isinstance(value, np.ndarray):
        return {"__ndarray__": _encode(torch.from_numpy(value.copy()), tensors)}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, tensors) for v in value]}
    if isinstance(value, list):
        return [_encode(v, tensors) for v in value]
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {k: _encode(v, tensors) for k, v in value.items()}
        return {"__items__": [[_encode(k, tensors), _encode(v, tensors)] for k, v in value.items()]}
    if isinstance(value, np.generic):
        return value.item()
    return value


def _decode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if "__tensor__" in value:
        return tensors[value["__tensor__"]]
    if "__ndarray__" in value:
        return _decode(value["__ndarray__"], tensors).numpy()
    if "__tuple__" in value:
        return tuple(_decode(v, tensors) for v in value["__tuple__"])
    if "__items__" in value:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in value["__items__"]}
    return {k: _decode(v, tensors) for k, v in value.items()}
