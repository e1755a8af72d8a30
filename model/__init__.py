"""mmcaps.model: the multimodal capsule network, its routing variants, baselines and the MMS loss.

Imports torch (and pydantic/yaml for configs) only, so it is usable from a notebook::

    from model import CapsuleConfig, build_model, mms_loss
    net = build_model(CapsuleConfig.from_preset("demo"))
    out = net(video=v, audio=mel, audio_lengths=n, text=t)   # out.embeddings["video"]: [B, D]
    loss, parts = mms_loss(out.embeddings)
"""

from model.capsule_config import CapsuleConfig, available_presets, load_preset
from model.config import FingerprintedConfig, runtime_field
from model.loss import mms_loss
from model.network import ModelOutput, build_model
from model.routing import make_routing

__all__ = [
    "CapsuleConfig",
    "FingerprintedConfig",
    "ModelOutput",
    "available_presets",
    "build_model",
    "load_preset",
    "make_routing",
    "mms_loss",
    "runtime_field",
]
