import subprocess
import sys
from pathlib import Path

import pytest

from flows import __version__
from flows.cli import main


def test_version_in_process(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert __version__ in capsys.readouterr().out


def test_help_lists_commands(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "bench" in out


def test_console_script_help():
    """The installed console script runs (not only the in-process entry point)."""
    exe = Path(sys.executable).with_name("mmcaps")
    assert exe.exists(), f"console script missing beside {sys.executable}"
    proc = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "usage: mmcaps" in proc.stdout
