"""Saving and loading network weights without unpickling arbitrary objects.

Weights go to ``.safetensors`` with the network spec and normaliser in its metadata.
Loading accepts ``.safetensors`` or a ``torch.save``-d state dict read with
``torch.load(weights_only=True)``; a plain pickle is never executed.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from sanitize.errors import InputError
from sanitize.model.net import BootstrapNet, NetSpec
from sanitize.model.train import Normalizer


def save_checkpoint(model: BootstrapNet, normalizer: Normalizer, path: Path) -> None:
    """Write ``model``'s weights, spec and normaliser to ``path`` (.safetensors)."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {
        "spec": json.dumps(model.spec.to_dict()),
        "normalizer": json.dumps(normalizer.to_dict()),
    }
    save_file(state, str(path), metadata=metadata)


def load_checkpoint(
    path: str | Path, *, spec: NetSpec, device: torch.device
) -> tuple[BootstrapNet, Normalizer | None]:
    """Load weights for a network of ``spec``; the normaliser when the file carries one.

    Raises :class:`InputError` when the file is missing, unreadable, or its tensors do not
    fit ``spec`` (wrong number of classes, channels or width).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"checkpoint not found: {path}")
    normalizer = None
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
            with safe_open(str(path), framework="pt") as fh:
                meta = fh.metadata() or {}
            if "normalizer" in meta:
                normalizer = Normalizer.from_dict(json.loads(meta["normalizer"]))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(state, dict) and "state_dict" in state:
                state = state["state_dict"]
    except Exception as exc:  # any reader failure is a bad input file, said in one line
        raise InputError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from None
    model = BootstrapNet(spec)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if "\n" in str(exc) else str(exc)
        raise InputError(
            f"checkpoint {path} does not fit the network {spec.to_dict()}: {first}"
        ) from None
    return model.to(device).eval(), normalizer
