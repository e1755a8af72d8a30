"""What a command can check before work starts, checked before Prefect starts: every problem at once, one line each.

A command makes a :class:`Checks`, runs the checks of its invocation (each appends the problems it finds, naming the
flag, the ``--on`` entry or the file, and where to get a missing file), and calls :meth:`Checks.done`. That raises
:class:`Problems` when there is any: ``flows.cli.main`` prints each of its lines as ``mmcaps CMD: error: LINE`` and
exits with status 2, before a command imports Prefect (tests/flows/commands/test_checks.py).

    checks = Checks()
    cfg = checks.extract_config(args.config, args.overrides)   # --config and every --set, each on its own
    checks.source(args.source)
    if cfg is not None:
        checks.extract_files(cfg, "--set")                    # weights and word vectors, all of them
    checks.done()                                             # raises Problems listing them all
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from flows.commands._common import parse_set_option
from flows.runners import load_cluster_spec
from model.fingerprint import FingerprintedConfig, plain_errors
from pipeline.evaluate.adapters import load_spec
from pipeline.evaluate.config import FEATURE_KINDS, EvalConfig, EvalSpec
from pipeline.extract import ExtractConfig
from pipeline.extract.config import RANDOM, is_weights_file
from pipeline.ingest.sources import discover_videos, find_subtitle_any
from pipeline.runs import RunFolder
from pipeline.search.layout import IndexFolder
from storage.workspace import Workspace, safe_name

C = TypeVar("C", bound=FingerprintedConfig)

# Errors that are the user's to fix (a missing file, a bad value): they become problem lines, anything else is a bug
# and keeps its traceback.
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, KeyError)

# Where each file of the HowTo100M recipe comes from (pipeline/extract/README.md "Weights").
GET_RGB2D = "torchvision's ResNet-152 IMAGENET1K_V1 file resnet152-394f9c45.pth"
GET_RGB3D = (
    "Kinetics ResNeXt-101: resnext101.pth (the HowTo100M feature extractor's) or resnext-101-kinetics.pth "
    "(Hara et al., 3D-ResNets-PyTorch)"
)
GET_WORD2VEC = (
    "GoogleNews-vectors-negative300.bin (the word2vec project's release; also in howto100m's metadata_eval.zip)"
)
# How many videos of a source are probed for a subtitle beside them (a remote source costs requests per probe).
SUBTITLE_PROBES = 50


class Problems(ValueError):
    """Everything wrong with an invocation: ``lines``, one problem each (``str()`` joins them with newlines)."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = list(lines)


def _text(exc: BaseException) -> str:
    """An exception's message on one line (a KeyError's without the quotes ``str()`` adds)."""
    message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
    return " ".join(str(message).split())


class Checks:
    """Problems of one invocation, collected (``lines``) and raised together by :meth:`done`."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, line: str) -> None:
        if line not in self.lines:  # two checks may find the same thing (a folder both missing and empty)
            self.lines.append(line)

    @contextlib.contextmanager
    def catch(self, where: str = "") -> Iterator[None]:
        """A user error raised inside becomes a problem line (prefixed ``where: ``); the checks go on."""
        try:
            yield
        except USER_ERRORS as exc:
            self.add(f"{where}: {_text(exc)}" if where else _text(exc))

    def done(self) -> None:
        """Raise :class:`Problems` with every line found, if any."""
        if self.lines:
            raise Problems(self.lines)

    # -- names ---------------------------------------------------------------------------------------------------
    def name(self, value: str, what: str) -> None:
        with self.catch():
            safe_name(value, what=what)

    def source(self, source: str) -> list[str]:
        """The videos of a training source ([] when it is missing or holds none: a problem then)."""
        with self.catch():
            return discover_videos(source)
        return []

    def run(self, workspace: Workspace, run_id: str, checkpoint: str | None = None) -> RunFolder | None:
        """The run ``run_id`` (None, with a problem, when the workspace has none or lacks the checkpoint)."""
        with self.catch():
            run = RunFolder(workspace, run_id).require()
            if checkpoint is not None:
                run.checkpoint_path(checkpoint)
            return run
        return None

    def index(self, workspace: Workspace, run_id: str, dataset: str) -> None:
        """That run ``run_id`` exists and has an index of ``dataset`` (else the command that builds it)."""
        run = self.run(workspace, run_id)
        if run is not None:
            with self.catch("--index"):
                IndexFolder(run, dataset).info()

    def cluster(self, path: str | None) -> None:
        """``--dask-cluster``'s file: YAML of a Dask cluster class that imports and takes its kwargs."""
        if path:
            with self.catch():
                load_cluster_spec(path)

    # -- configs -------------------------------------------------------------------------------------------------
    def config(self, base: C, items: list[str], *, what: str, flag: str = "--set") -> C | None:
        """``base`` with the ``KEY=VALUE`` items applied; each bad item is its own problem, in our words, naming the
        field, the value and the flag (``invalid extract options: threads: input should be a valid integer ...
        (got 'abc') (--set threads=abc)``). With bad items, the config of the good ones (its files are checked too);
        None when even that is invalid."""
        updates: dict[str, Any] = {}
        for item in items:
            try:
                ((key, value),) = parse_set_option([item]).items()
                base.with_updates({**updates, key: value})  # on the good items before it: streams.NAME.* build up
            except ValueError as exc:
                cause = exc.__cause__
                text = plain_errors(cause) if isinstance(cause, ValidationError) else _text(exc)
                self.add(f"invalid {what} options: {text} ({flag} {item})")
            except KeyError as exc:
                self.add(f"invalid {what} options: {_text(exc)} ({flag} {item})")
            else:
                updates[key] = value
        with self.catch(f"invalid {what} options"):  # fields that are fine alone but not together
            return base.with_updates(updates)
        return None

    def extract_config(self, config: str | None, items: list[str], flag: str = "--set") -> ExtractConfig | None:
        """The ExtractConfig of ``--config`` and the ``--set`` items (None, with the problems, when invalid)."""
        base = ExtractConfig()
        if config:
            try:
                base = ExtractConfig.from_file_or_preset(config)
            except (ValueError, FileNotFoundError) as exc:
                self.add(f"--config: {_text(exc)}")
                return None
        return self.config(base, items, what="extract", flag=flag)

    def extract_files(self, cfg: ExtractConfig, flag: str = "--set") -> None:
        """Every weight and word-vector file the config names is there (each missing one: where to get it and the
        option that points to it)."""
        if is_weights_file(cfg.rgb2d.weights):
            self._file(cfg.rgb2d.weights, "rgb2d.weights", GET_RGB2D, flag)
        elif cfg.rgb2d.weights != RANDOM:  # a torchvision name: its file in $TORCH_HOME/hub/checkpoints
            self._named_rgb2d(cfg.rgb2d.weights, cfg.download, flag)
        if is_weights_file(cfg.rgb3d.weights):
            self._file(cfg.rgb3d.weights, "rgb3d.weights", GET_RGB3D, flag)
        elif cfg.rgb3d.weights != RANDOM:
            self.add(f"rgb3d.weights: {cfg.rgb3d.weights!r} is not 'random' nor a checkpoint file ({GET_RGB3D})")
        if cfg.text.word2vec:
            self._file(cfg.text.word2vec, "text.word2vec", GET_WORD2VEC, flag)

    def _named_rgb2d(self, value: str, download: bool, flag: str) -> None:
        # The rule of pipeline.extract.backbones (torchvision's file name, in torch's hub folder), asked of torchvision
        # itself; imported only here, so that an invocation without named weights is checked without torch.
        import torch.hub  # noqa: PLC0415  deferred: torch, only for named weights
        import torchvision  # noqa: PLC0415  deferred: torchvision, only for named weights

        names = torchvision.models.ResNet152_Weights.__members__
        name = value.split(".")[-1]
        if name not in names:
            self.add(f"rgb2d.weights: {value!r} is not 'random', a file, or one of {', '.join(sorted(names))}")
            return
        url = names[name].url
        folder = Path(torch.hub.get_dir()) / "checkpoints"
        if not download and not (folder / os.path.basename(url)).is_file():
            self.add(
                f"rgb2d.weights: {name} needs {folder / os.path.basename(url)}, not there; download {url} into "
                f"{folder} (TORCH_HOME chooses the folder), point {flag} rgb2d.weights=PATH at the file, or let "
                f"{flag} download=true fetch it"
            )

    def _file(self, value: str, field: str, get: str, flag: str) -> None:
        path = Path(value).expanduser()
        if not path.is_file():
            self.add(
                f"{field}: {value}: {'not a file' if path.exists() else 'no such file'}; get {get} and point "
                f"{flag} {field}=PATH at it, or say {flag} {field}={'none' if field == 'text.word2vec' else RANDOM}"
            )

    def word_vectors(self, cfg: ExtractConfig, videos: list[str], captions: str | None, flag: str = "--set") -> None:
        """Captions and no word vectors is a problem unless the config says so (``text.word2vec=none``): else every
        caption would get a zero vector and text retrieval could not work, found out only at evaluation."""
        if cfg.text.word2vec or cfg.text.word2vec is False:
            return
        where = (
            f"--captions {captions}"
            if captions
            else next((s for s in map(find_subtitle_any, videos[:SUBTITLE_PROBES]) if s is not None), None)
        )
        if where is not None:
            self.add(
                f"captions ({where}) but no word vectors: point {flag} text.word2vec=PATH at {GET_WORD2VEC}, or say "
                f"{flag} text.word2vec=none to extract without text (every caption then gets a zero vector)"
            )

    def extraction(
        self, source: str, config: str | None, items: list[str], captions: str | None, flag: str = "--set"
    ) -> ExtractConfig | None:
        """An extraction's source, config, files and word vectors (what extract, run and watch start with)."""
        cfg = self.extract_config(config, items, flag)
        videos = self.source(source)
        if cfg is not None:
            self.extract_files(cfg, flag)
            self.word_vectors(cfg, videos, captions, flag)
        return cfg

    # -- evaluation ----------------------------------------------------------------------------------------------
    def eval_specs(self, specs: list[str], cfg: EvalConfig | None, flag: str = "--on") -> None:
        """Every benchmark entry: its form, its files and folders, and (entries with videos) its annotations read
        and at least one listed video present. Each problem names the entry."""
        for text in specs:
            where = f"{flag} {text}"
            try:
                spec = EvalSpec.parse(text)
            except ValueError as exc:
                self.add(f"{where}: {_text(exc)}")
                continue
            if not self._spec_paths(spec, where):
                continue
            if spec.kind in FEATURE_KINDS:  # a features file is read by the flow (it may be large)
                continue
            with self.catch(where):
                load_spec(spec, cfg or EvalConfig())

    def _spec_paths(self, spec: EvalSpec, where: str) -> bool:
        """Whether the entry's paths are there (each missing one is a problem)."""
        folder = spec.kind in ("crosstask", "mining") or spec.kind == "synthetic"
        wanted = [(spec.annotations, "folder" if folder else "file")]
        if spec.features is not None and spec.features != spec.annotations:
            wanted.append((spec.features, "file"))
        if spec.videos is not None:
            wanted.append((spec.videos, "video folder"))
        ok = True
        for path, kind in wanted:
            is_dir = kind != "file"
            if not path.exists():
                self.add(f"{where}: {path}: no such {'folder' if is_dir else 'file'}")
                ok = False
            elif path.is_dir() != is_dir:
                self.add(f"{where}: {path}: not a {'folder' if is_dir else 'file'}")
                ok = False
        if ok and spec.videos is not None and not discover_videos(str(spec.videos), allow_empty=True):
            self.add(f"{where}: video folder {spec.videos} holds no video")
            ok = False
        return ok
