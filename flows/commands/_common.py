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
    """Print each evaluation as a grid: a row per metric, a column per modality, chance in the last column; the
    reference protocol's columns beside them only where it differs from the strict one (some videos missing).

    ::

        == synthetic: 8/8 videos present; similarity dot (...)
          retrieval            video  video+audio     chance
          R@1                 0.0417       0.0833     0.0417
    """
    for name, m in metrics.items():
        kind = f" ({m['kind']})" if m.get("kind") and m["kind"] != name else ""
        head = [f"{m['videos']['present']}/{m['videos']['needed']} videos present"] if m.get("videos") else []
        if m.get("similarity"):
            rule = f" ({m['similarity_rule']})" if m.get("similarity_rule") else ""
            head.append(f"similarity {m['similarity']}{rule}")
        print(f"\n== {name}{kind}" + (": " + "; ".join(head) if head else ""))
        rows = [r for r in metric_rows(name, m) if not r["metric"].startswith("per_task")]
        differs = any(r.get("reference", "") not in ("", r["value"]) for r in rows)
        for task in dict.fromkeys(r["task"] for r in rows):
            _print_grid(task, [r for r in rows if r["task"] == task], differs)
        protocols = m.get("protocols") or {}
        if protocols and any(r.get("reference", "") != "" for r in rows):
            paper = f"the paper's tables: {protocols.get('paper', 'reference')}"
            print(
                "  strict: missing videos count as misses; reference: over the present videos, as howto100m, AVLnet "
                f"and MCN ({paper})" + ("" if differs else "; every video present, so both give these numbers")
            )
        for modality, n in ((m.get("retrieval_queries") or {}).get("no_audio") or {}).items():
            if n:
                print(f"  {n} queries' clips have no audio: misses in the {modality} rows (as AVLnet counts them)")
        if m.get("retrieval") and m.get("tie_rule"):
            print(f"  {m['tie_rule']}")
        if m.get("report"):
            print(f"  report: {m['report']}")


def _print_grid(task: str, rows: list[dict[str, Any]], with_reference: bool) -> None:
    """One task's rows as a grid (see :func:`print_metrics`): per protocol a column per modality then its chance;
    a cell whose chance differs from its row's shows its own."""
    modalities = list(dict.fromkeys(r["modality"] for r in rows))
    groups = [("", "value", "chance")] + ([(" (ref)", "reference", "reference_chance")] if with_reference else [])
    titles = [f"{m}{suffix}" for suffix, _, _ in groups for m in [*modalities, "chance"]]
    table = []
    for metric in dict.fromkeys(r["metric"] for r in rows):
        by = {r["modality"]: r for r in rows if r["metric"] == metric}
        cells = []
        for _, key, chance_key in groups:
            chance = next((r[chance_key] for r in by.values() if r.get(chance_key, "") != ""), "")
            for modality in modalities:
                r = by.get(modality, {})
                value, own = r.get(key, ""), r.get(chance_key, "")
                cells.append(f"{value} (chance {own})" if value != "" and own not in ("", chance) else f"{value}")
            cells.append(f"{chance}")
        table.append((metric, cells))
    widths = [max(len(t), 8, *(len(cells[k]) for _, cells in table)) for k, t in enumerate(titles)]
    print(f"  {task:<18}" + "".join(f"  {t:>{w}}" for t, w in zip(titles, widths, strict=True)))
    for metric, cells in table:
        print(f"    {metric:<16}" + "".join(f"  {c:>{w}}" for c, w in zip(cells, widths, strict=True)))


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
