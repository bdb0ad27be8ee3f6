"""One module per `cmsdl` subcommand, each a thin Hydra app: `main(cfg)` composes, calls the plain function
of its domain module and reports. Subcommands are listed in cmsdl/cli.py."""
