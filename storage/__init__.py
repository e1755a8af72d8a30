"""mmcaps.storage: the workspace, WebDataset shards, the Parquet manifest and hashing.

Imports pyarrow, numpy and fsspec only (the shards are WebDataset tar files, written without the webdataset
package, which imports torch); no torch, no Prefect.
"""

from storage.hashing import sha256_file, table_fingerprint
from storage.manifest import MANIFEST_SCHEMA, Manifest
from storage.shards import ShardWriter, iter_shard
from storage.workspace import Workspace, safe_name

__all__ = [
    "MANIFEST_SCHEMA",
    "Manifest",
    "ShardWriter",
    "Workspace",
    "iter_shard",
    "safe_name",
    "sha256_file",
    "table_fingerprint",
]
