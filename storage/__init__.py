"""mmcaps.storage: the workspace, WebDataset shards, the Parquet manifest and hashing.

Imports pyarrow, webdataset and fsspec only; no torch, no Prefect.
"""

from storage.workspace import Workspace, safe_name

__all__ = ["Workspace", "safe_name"]
