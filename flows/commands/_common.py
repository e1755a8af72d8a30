"""Options and helpers shared by the subcommands."""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Any

import yaml

from flows.runners import load_cluster_spec, make_task_runner
from pipeline.evaluate.summary import metric_rows
from pipeline.extract import ExtractConfig
from pipeline.ingest.publish import DEFAULT_MAX_COUNT


def add_set_option(parser: argparse.ArgumentParser, help: str, *, flag: str = "--set", dest: str = "overrides") -> None:
    """A repeatable ``KEY=VALUE`` config override (dotted keys; parsed by :func:`parse_set_option`)."""
    parser.add_argument(flag, dest=dest, action="append", default=[], metavar="KEY=VALUE", help=help)


def add_extract_config(parser: argparse.ArgumentParser, flag: str = "--set", dest: str = "overrides") -> None:
    """``--config FILE.yaml|NAME`` (an ExtractConfig; ``howto100m`` is the shipped HowTo100M recipe) and the
    repeatable ``--set KEY=VALUE`` overrides applied on top of it."""
    parser.add_argument(
        "--config",
        metavar="FILE|NAME",
        default=None,
        help="extract config YAML, or a shipped one by name (howto100m: the release's recipe, pretrained weights)",
    )
    add_set_option(
        parser,
        f"ExtractConfig override, dotted (repeatable), e.g. {flag} rgb2d.weights=resnet152-394f9c45.pth",
        flag=flag,
        dest=dest,
    )


def extract_config(config: str | None, overrides: dict[str, Any]) -> Any:
    """The ExtractConfig that ``--config`` and ``--set`` describe, checked now (errors name the option)."""

    base = ExtractConfig.from_file_or_preset(config) if config else ExtractConfig()
    try:
        cfg = base.with_updates(overrides)
    except (KeyError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        text = exc.args[0] if isinstance(exc, KeyError) else " ".join(str(exc).split())
        raise ValueError(f"invalid extract options: {text}") from exc
    return cfg


def say_stand_ins(cfg: Any) -> None:
    """Say, before a run starts, what makes its features stand-ins (random backbones, no word vectors...)."""
    for line in cfg.stand_ins():
        print(f"note: {line}", file=sys.stderr)


def add_workspace(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workspace",
        metavar="ROOT",
        default=None,
        help="workspace root: a folder or fsspec URL (default $MMCAPS_HOME or ./mmcaps-data)",
    )


def add_shard_videos(parser: argparse.ArgumentParser) -> None:
    """``--shard-videos N``: publish a shard and its manifest rows every N ok videos (what a killed run keeps)."""
    parser.add_argument(
        "--shard-videos",
        type=_positive_int,
        default=DEFAULT_MAX_COUNT,
        metavar="N",
        help=f"publish a shard and its manifest rows every N ok videos (default {DEFAULT_MAX_COUNT}); a killed run "
        "keeps what it published",
    )


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive whole number")
    return value


def add_runner(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--runner",
        choices=("threads", "dask"),
        default="threads",
        help="task runner for the per-video work (dask: the cluster at --dask-address, else a local one)",
    )
    parser.add_argument(
        "--dask-address",
        metavar="ADDR",
        default=None,
        help="scheduler of an existing Dask cluster (implies --runner dask)",
    )
    parser.add_argument("--dask-workers", type=int, default=2, help="workers of the local Dask cluster")
    parser.add_argument(
        "--dask-cluster",
        default=None,
        metavar="FILE.yaml",
        help="a Dask cluster to start for the run, e.g. class: dask_jobqueue.SLURMCluster, kwargs: {...}, adapt: "
        "{minimum: 0, maximum: 10} (implies --runner dask)",
    )


def task_runner(args: argparse.Namespace) -> Any:
    """The task runner the options ask for (threads by default; a scheduler's address or a cluster file means Dask).

    ``--dask-cluster``'s file is read here, not while the arguments are parsed, so that a command is checked whole
    (flows.commands._checks) and its parse stays free of files; a bad file is a ValueError naming it, one line.
    """
    address, cluster = getattr(args, "dask_address", None), getattr(args, "dask_cluster", None)
    runner = "dask" if address or cluster else getattr(args, "runner", "threads")
    return make_task_runner(runner, address, args.dask_workers, load_cluster_spec(cluster) if cluster else None)


def print_metrics(metrics: dict[str, dict[str, Any]]) -> None:
    """Print each evaluation's numbers under both protocols, with chance beside them, and the report path."""

    for name, m in metrics.items():
        kind = f" ({m['kind']})" if m.get("kind") and m["kind"] != name else ""
        print(f"\n== {name}{kind}")
        if m.get("videos"):
            v = m["videos"]
            print(f"  {v['present']}/{v['needed']} videos present, {v['missing']} missing")
        if m.get("similarity"):
            print(
                f"  similarity: {m['similarity']}" + (f" ({m['similarity_rule']})" if m.get("similarity_rule") else "")
            )
        protocols = m.get("protocols") or {}
        if protocols:
            print(
                "  strict: missing videos count as misses; reference: over the present videos, as howto100m, AVLnet "
                f"and MCN (the paper's tables: {protocols.get('paper', 'reference')})"
            )

        for r in metric_rows(name, m):
            if r["metric"].startswith("per_task"):
                continue
            chance = f"   (chance {r['chance']})" if r["chance"] != "" else ""
            ref = ""
            if r.get("reference", "") != "":
                ref_chance = f" (chance {r['reference_chance']})" if r.get("reference_chance", "") != "" else ""
                ref = f"   reference {r['reference']:>8}{ref_chance}"
            print(f"  {r['task']:<12} {r['modality']:<12} {r['metric']:<16} {r['value']:>8}{chance}{ref}")
        for modality, n in ((m.get("retrieval_queries") or {}).get("no_audio") or {}).items():
            if n:
                print(f"  {n} queries' clips have no audio: misses in the {modality} rows (as AVLnet counts them)")
        if m.get("retrieval") and m.get("tie_rule"):
            print(f"  {m['tie_rule']}")
        if m.get("report"):
            print(f"  report: {m['report']}")


def parse_set_option(items: list[str]) -> dict[str, Any]:
    """Parse ``--set key=value`` strings; values are read as YAML scalars (``64``, ``true``, ``1e-3``)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):  # YAML 1.1 reads "1e-3" as a string; users mean a number
                value = float(value)
        out[key.strip()] = value
    return out
