"""mmcaps.flows: Prefect flows and tasks, deployments and schedules, and the ``mmcaps`` CLI."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mmcaps")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"
