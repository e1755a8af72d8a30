"""Reading an extracted dataset: the current ok rows of one extract fingerprint, their shards, their samples."""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import cached_property
from typing import Any

import pyarrow as pa
import yaml

from storage.hashing import table_fingerprint
from storage.manifest import Manifest
from storage.sample import VideoFeatures
from storage.shards import iter_shard
from storage.workspace import Workspace, safe_name

CONFIG_FILE = "extract-config.yaml"  # the full extract config, beside the shards of its fingerprint

# What names a dataset's content: which videos, which bytes, which extraction, and the caption count (a caption
# change re-extracts a video with the same bytes).
FINGERPRINT_COLUMNS = ("video_id", "sha256", "extract_fingerprint", "n_captions", "captions_sha256")


class Dataset:
    """The ok videos of one dataset for one extract fingerprint (the manifest's current view).

    ``manifest``: pyarrow.Table of the current ok rows (schema ``MANIFEST_SCHEMA``); ``shards``: full paths of the
    shards that hold them; ``iter_videos()`` reads exactly those samples (an old version of a re-extracted video
    that still sits in an older shard is skipped).
    """

    def __init__(self, workspace: Workspace, name: str, extract_fp: str, manifest: pa.Table) -> None:
        self.workspace = workspace
        self.name = name
        self.extract_fp = extract_fp
        self.manifest = manifest
        self.dataset_dir = workspace.dataset_dir(name)
        shard_rel = manifest.column("shard").to_pylist()
        self.shards: list[str] = [f"{self.dataset_dir}/{s}" for s in dict.fromkeys(sorted(shard_rel))]

    def __repr__(self) -> str:
        return f"Dataset({self.name!r}, fp={self.extract_fp}, videos={self.num_videos}, shards={len(self.shards)})"

    @property
    def num_videos(self) -> int:
        return self.manifest.num_rows

    @property
    def hours(self) -> float:
        return float(sum(self.manifest.column("duration_s").to_pylist())) / 3600.0

    @property
    def video_ids(self) -> list[str]:
        return self.manifest.column("video_id").to_pylist()

    @cached_property
    def fingerprint(self) -> str:
        """A hash of the current ok rows' (video_id, sha256, extract fingerprint, caption count), order-free."""
        return table_fingerprint(self.manifest, FINGERPRINT_COLUMNS)

    @property
    def config_path(self) -> str:
        return f"{self.workspace.shard_dir(self.name, self.extract_fp)}/{CONFIG_FILE}"

    @cached_property
    def extract_config(self) -> dict[str, Any]:
        """The extract config stored beside the shards, as plain data (``ExtractConfig.model_validate`` reads it).

        Raises FileNotFoundError / ValueError naming the file when it is missing or not a YAML mapping.
        """
        try:
            data = yaml.safe_load(self.workspace.read_bytes(self.config_path).decode("utf-8")) or {}
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"{self.config_path}: extract config missing") from exc
        except yaml.YAMLError as exc:
            raise ValueError(f"{self.config_path}: not valid YAML ({exc})") from exc
        if not isinstance(data, dict):
            raise ValueError(f"{self.config_path}: not a YAML mapping")
        return data

    def iter_videos(self) -> Iterator[VideoFeatures]:
        """Decode every current ok video, shard by shard in file order. Errors name the shard and the member.

        Raises ValueError when a shard lacks a video the manifest places in it.
        """
        wanted: dict[str, dict[str, tuple[str, str]]] = {}
        for row in self.manifest.select(["video_id", "sha256", "shard"]).to_pylist():
            key = safe_name(row["video_id"], what="video id")
            wanted.setdefault(f"{self.dataset_dir}/{row['shard']}", {})[key] = (row["video_id"], row["sha256"])
        for shard in self.shards:
            expect = wanted[shard]
            seen = set()
            for raw in iter_shard(shard, self.workspace.fs):
                key = raw["__key__"]
                if key not in expect:
                    continue
                meta = json.loads(raw.get("meta.json", b"{}"))
                if meta.get("sha256") != expect[key][1]:
                    continue  # an older extraction of this video (its bytes changed since); the current one is elsewhere
                seen.add(key)
                yield VideoFeatures.from_sample(raw, where=f"shard {shard}")
            missing = sorted(set(expect) - seen)
            if missing:
                raise ValueError(f"shard {shard}: lacks videos the manifest places there: {missing[:5]}")


def unreferenced_shards(workspace: Workspace, dataset: str) -> list[str]:
    """Shards that no manifest row names (a run died between renaming a shard and appending the manifest)."""
    root = workspace.dataset_dir(dataset)
    if not workspace.exists(f"{root}/shards"):
        return []
    named = set(Manifest(workspace, dataset).read().column("shard").to_pylist())
    found = [p for p in workspace.fs.find(f"{root}/shards") if p.endswith(".tar")]
    stripped_root = workspace.fs._strip_protocol(root)
    return sorted(p for p in found if p[len(stripped_root) + 1 :] not in named)


def open_dataset(workspace: Workspace, name: str, extract_fp: str | None = None) -> Dataset:
    """Open dataset ``name``: the current ok rows of ``extract_fp`` (default: the fingerprint extracted last).

    Raises FileNotFoundError when the dataset has no manifest, KeyError when it has no rows for ``extract_fp``.
    """
    manifest = Manifest(workspace, name)
    if not manifest.exists():
        raise FileNotFoundError(f"dataset {name!r}: no manifest at {manifest.path} (run mmcaps extract first)")
    fps = manifest.fingerprints()
    if extract_fp is None:
        if not fps:
            raise KeyError(f"dataset {name!r}: the manifest is empty")
        extract_fp = fps[-1]
    elif extract_fp not in fps:
        raise KeyError(f"dataset {name!r}: no videos with extract fingerprint {extract_fp!r} (has {fps})")
    return Dataset(workspace, name, extract_fp, manifest.current(extract_fp, status="ok"))


def inspect_dataset(workspace: Workspace, name: str) -> dict[str, Any]:
    """Counts per extract fingerprint (current view): videos by status, hours, captions, shards and their bytes,
    the dataset fingerprint, and the failures with their errors. Plain JSON-able values, latest fingerprint last.
    """
    manifest = Manifest(workspace, name)
    if not manifest.exists():
        raise FileNotFoundError(f"dataset {name!r}: no manifest at {manifest.path} (run mmcaps extract first)")
    table = manifest.read()
    report: dict[str, Any] = {
        "dataset": name,
        "manifest": manifest.path,
        "rows": table.num_rows,
        "fingerprints": [],
        "unreferenced_shards": unreferenced_shards(workspace, name),
    }
    for fp in manifest.fingerprints():
        rows = manifest.current(fp).to_pylist()
        ok = [r for r in rows if r["status"] == "ok"]
        ds = Dataset(workspace, name, fp, manifest.current(fp, status="ok"))
        sizes = [workspace.fs.size(s) if workspace.exists(s) else 0 for s in ds.shards]
        report["fingerprints"].append(
            {
                "extract_fingerprint": fp,
                "ok": len(ok),
                "failed": sum(r["status"] == "failed" for r in rows),
                "skipped": sum(r["status"] == "skipped" for r in rows),
                "hours": sum(r["duration_s"] for r in ok) / 3600.0,
                "captions": sum(r["n_captions"] for r in ok),
                "with_audio": sum(bool(r["has_audio"]) for r in ok),
                "shards": len(ds.shards),
                "shard_bytes": int(sum(sizes)),
                "missing_shards": [s for s, n in zip(ds.shards, sizes, strict=True) if n == 0],
                "dataset_fingerprint": ds.fingerprint if ok else "",
                "failures": [(r["video_id"], r["error"]) for r in rows if r["status"] == "failed"],
                "warnings": [(r["video_id"], r["warning"]) for r in rows if r["warning"]],
                "extract_config": ds.extract_config if workspace.exists(ds.config_path) else {},
            }
        )
    return report
