"""One module per `cmsdl` subcommand, each a thin Hydra app: `main(cfg)` composes, calls the plain function
of its domain module and reports. Subcommands are listed in cmsdl/cli.py.

A command module imports its domain module inside `main`, never at the top: `--help`, shell completion and config
errors are answered from the composed config before torch, Lightning or onnxruntime load (tests/test_cli_speed.py).
"""
