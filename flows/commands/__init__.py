"""One module per ``mmcaps`` subcommand, each with ``register(subparsers)``."""
