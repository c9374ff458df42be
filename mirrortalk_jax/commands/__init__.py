"""Jobs of the `mirrortalk` command (see mirrortalk_jax/cli.py): one module per job, `add_parser(subparsers)`."""
