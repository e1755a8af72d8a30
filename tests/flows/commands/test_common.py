"""Options shared by the subcommands (flows/commands/_common.py)."""

import pytest

from flows.commands._common import parse_set_option


def test_parse_set_option_reads_yaml_scalars():
    assert parse_set_option(["a=64", "b.c=true", "lr=1e-3", "name=x"]) == {
        "a": 64,
        "b.c": True,
        "lr": 1e-3,
        "name": "x",
    }
    with pytest.raises(ValueError, match="key=value"):
        parse_set_option(["novalue"])
