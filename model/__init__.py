"""mmcaps.model: the multimodal capsule network, its routing variants, baselines and the MMS loss.

Imports torch (and pydantic/yaml for configs) only, so it is usable from a notebook::

    from model import CapsuleConfig, build_model, mms_loss
    net = build_model(CapsuleConfig.from_preset("demo"))
    out = net(video=v, audio=mel, audio_lengths=n, text=t)   # out.embeddings["video"]: [B, D]
    loss, parts = mms_loss(out.embeddings)

The names are imported on first use, so reading a config (``model.config``, ``model.fingerprint``) loads no torch.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "CapsuleConfig": "model.config",
    "available_presets": "model.config",
    "load_preset": "model.config",
    "FingerprintedConfig": "model.fingerprint",
    "runtime_field": "model.fingerprint",
    "mms_loss": "model.loss",
    "ModelOutput": "model.network",
    "build_model": "model.network",
    "make_routing": "model.routing",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'model' has no attribute {name!r}")
