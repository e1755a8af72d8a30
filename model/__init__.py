"""mmcaps.model: the multimodal capsule network, its routing variants, baselines and the MMS loss.

Imports torch (and pydantic/yaml for configs) only, so it is usable from a notebook.
"""

from model.config import FingerprintedConfig, runtime_field

__all__ = ["FingerprintedConfig", "runtime_field"]
