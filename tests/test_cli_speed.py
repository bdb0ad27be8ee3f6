"""A fast, light CLI (issue 20 item 4): `--help`, shell completion and config errors are answered from the composed
config without importing torch or Lightning; help shows the YAML comments and only the groups a command uses;
a command whose extra is not installed says which `pip install` it needs."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from cmsdl import cli
from cmsdl.config import call_naming_extras
from cmsdl.config_help import Comment, annotate, hydra_error_line, key_comments
from cmsdl.errors import CmsdlError

HEAVY = ("torch", "torchvision", "torchmetrics", "lightning", "pytorch_lightning", "onnxruntime", "sklearn",
         "matplotlib", "kubernetes")


@pytest.fixture(autouse=True)
def clear_hydra() -> None:
    yield
    GlobalHydra.instance().clear()


def help_of(capsys: pytest.CaptureFixture, *args: str) -> str:
    assert cli.main(list(args)) == 0
    return capsys.readouterr().out


YAML = textwrap.dedent("""\
    # @package _global_
    # what this file is for (the file's header, not a key's comment)
    # second header line

    # the learning rate, above its key
    lr: 0.1                 # and at the end of its line
                            # continued on the next line
    net:
      # hidden sizes
      hidden: [64, 64]
      note: "a # inside quotes"
    help: |
      text: that looks like a key   # but sits in a block scalar
    after: 1
    """)


def test_key_comments_reads_comments_above_at_the_end_and_continued() -> None:
    comments = key_comments(YAML, "trainer")
    assert comments["trainer.lr"] == Comment(["the learning rate, above its key"],
                                             ["and at the end of its line", "continued on the next line"])
    assert comments["trainer.net.hidden"] == Comment(["hidden sizes"], [])
    assert "trainer.net.note" not in comments, "a # inside quotes is not a comment"
    assert not any(key.startswith("trainer.help.") for key in comments), "a block scalar holds no keys"
    assert not any("header" in " ".join(c.above) for c in comments.values())


def test_annotate_writes_the_comments_back_next_to_the_composed_keys() -> None:
    text = annotate("lr: 0.2\nnet:\n  hidden:\n  - 8\n", {"lr": Comment([], ["the rate"]),
                                                            "net.hidden": Comment(["sizes"], [])})
    assert text.splitlines() == ["lr: 0.2  # the rate", "net:", "  # sizes", "  hidden:", "  - 8"]


def test_train_help_shows_the_config_with_comments_and_only_its_groups(capsys: pytest.CaptureFixture) -> None:
    text = help_of(capsys, "train", "experiment=workflow_actions", "--help")
    groups = text.split("== Configuration groups ==")[1].split("== Config ==")[0]
    assert "trainer: cpu, ddp, default, gpu  (chosen: default)" in groups
    assert "experiment: " in groups and "(chosen: workflow_actions)" in groups
    assert "k8s:" not in groups, "configs/k8s is not a group of cmsdl train"
    assert "hydra" not in groups and "launcher" not in groups
    assert "test: true  # evaluate the best checkpoint on the test split after fitting" in text
    assert "# data=workflows: " in text


def test_a_tool_help_has_its_comments_and_no_group_section(capsys: pytest.CaptureFixture) -> None:
    text = help_of(capsys, "predict", "model=m.onnx", "--help")
    assert "onnx: m.onnx  # the .onnx file written by `cmsdl export`" in text, "model= is predict's alias of onnx="
    assert "== Configuration groups ==" not in text


def test_a_wrong_override_in_help_is_one_error_line(capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["train", "model=mpl", "--help"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: cmsdl train: ") and "options: deepsets, mlp," in err


def test_hydra_error_line_keeps_the_first_paragraph_and_the_options() -> None:
    message = ("In 'train': Could not find 'model/x'\n\nAvailable options in 'model':\n\tmlp\n\tdeepsets\n"
               "Config search path:\n\tprovider=main")
    assert hydra_error_line(message) == "In 'train': Could not find 'model/x' (options: mlp, deepsets)"


def completions(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, line: str) -> set[str]:
    monkeypatch.setenv("COMP_LINE", line)
    assert cli.main(["-sc", "query=bash"]) == 0
    return set(capsys.readouterr().out.split())


def test_completion_of_the_command_name(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    assert completions(capsys, monkeypatch, "cmsdl si") == {"simulate", "simulate-top", "simulate-workflows",
                                                             "simulate-popularity", "simulate-transfers"}
    assert completions(capsys, monkeypatch, "cmsdl ") == set(cli.COMMANDS)
    assert completions(capsys, monkeypatch, "cmsdl nosuch ") == set()


def test_a_missing_extra_is_named_with_its_pip_install(capsys: pytest.CaptureFixture,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    assert cli.main(["train", "trainer.max_epochs=1"]) == 2
    err = capsys.readouterr().err
    assert err == "error: cmsdl train needs the training extra: pip install 'cmsdl[train]' (torch not installed)\n"
    assert cli.missing_extra("predict") is None and cli.missing_extra("serve") is None
    assert cli.main(["train", "--cfg", "job"]) == 0, "printing the config needs no extra"
    assert "seed: 12345" in capsys.readouterr().out


def test_a_missing_optional_package_names_its_extra() -> None:
    """A package imported where an option uses it (pyarrow for format=parquet) → one line naming the extra."""

    def needs(module: str) -> Callable[[DictConfig], None]:
        def run(cfg: DictConfig) -> None:
            raise ModuleNotFoundError(f"No module named '{module}'", name=module)
        return run

    with pytest.raises(CmsdlError, match=r"^pyarrow is not installed; it comes with the parquet extra: "
                                         r"pip install 'cmsdl\[parquet\]'$"):
        call_naming_extras(needs("pyarrow.parquet"), OmegaConf.create())
    with pytest.raises(CmsdlError, match=r"pip install 'cmsdl\[remote\]'$"):
        call_naming_extras(needs("XRootD"), OmegaConf.create())
    with pytest.raises(ModuleNotFoundError):  # not a package of an extra: a real bug, shown as it is
        call_naming_extras(needs("no_such_module"), OmegaConf.create())


@pytest.mark.slow
def test_help_completion_and_config_errors_import_no_torch(tmp_path: Path) -> None:
    """In a fresh interpreter: every command's help, completion queries and a refused value load none of HEAVY
    (run outside the checkout, as a user would: there Hydra's plugin scan would also find ./hydra_plugins)."""
    code = textwrap.dedent(f"""
        import contextlib, io, os, sys
        from cmsdl import cli
        import cmsdl.commands
        for command in cli.COMMANDS:
            __import__("cmsdl.commands." + cli.config_name(command))
            with contextlib.redirect_stdout(io.StringIO()):
                assert cli.main([command, "--help"]) == 0, command
        for line in ("cmsdl train model=", "cmsdl train experiment=wor", "cmsdl predict model="):
            os.environ["COMP_LINE"] = line
            with contextlib.redirect_stdout(io.StringIO()) as out:
                cli.main(["-sc", "query=bash"])
            print("completion:", line, "->", " ".join(sorted(out.getvalue().split())))
        try:
            cli.main(["train", "seed=-1", "hydra.run.dir=" + sys.argv[1], "hydra.output_subdir=null"])
        except SystemExit as stop:
            assert stop.code == 2, stop.code
        else:
            raise AssertionError("seed=-1 was not refused")
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})
        assert not loaded, loaded
        """)
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "seed: expected an integer from 0 to 2**32 - 1, got -1" in proc.stderr
    completed = dict(line.removeprefix("completion: ").split(" -> ") for line in proc.stdout.splitlines()
                     if line.startswith("completion: "))
    assert {"model=mlp", "model=resnet50"} <= set(completed["cmsdl train model="].split())
    assert completed["cmsdl train experiment=wor"].split() == ["experiment=workflow_actions"]
    assert "model=mlp" not in completed["cmsdl predict model="], "model= is predict's alias of onnx=, a file"


@pytest.mark.slow
def test_the_installed_command_help_imports_no_torch(tmp_path: Path) -> None:
    """`cmsdl train --help` through the console script, as measured with -X importtime."""
    cmsdl = Path(sys.executable).with_name("cmsdl")
    proc = subprocess.run([sys.executable, "-X", "importtime", str(cmsdl), "train", "--help"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "== Config ==" in proc.stdout, proc.stderr[-2000:]
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "omegaconf" in imported, "the -X importtime listing was read"
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_completes_cmsdl_train_through_the_installed_script(tmp_path: Path) -> None:
    """The script of `cmsdl -sc install=bash`, sourced in bash, completes `cmsdl train model=res<TAB>`."""
    script = textwrap.dedent("""\
        eval "$(cmsdl -sc install=bash)"
        COMP_LINE="cmsdl train model=res"; COMP_WORDS=(cmsdl train model=res); COMP_CWORD=2
        COMP_POINT=${#COMP_LINE}
        hydra_bash_completion
        printf '%s\\n' "${COMPREPLY[@]}"
        """)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["model=resnet34", "model=resnet50", "model=resnet50_modified"], proc.stderr
