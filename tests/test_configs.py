"""Every config composes, and its data, model and trainer build: a renamed key breaks a test, not a run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from cmsdl.config import compose_run_config, config_dir
from cmsdl.config_help import command_help, config_comments
from cmsdl.train import complete_model_config

CONFIGS = Path(config_dir())
# event_* experiments need an image set: tests/test_event_images.py builds them
EXPERIMENTS = sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml") if not p.stem.startswith("event_"))
TRAINERS = sorted(p.stem for p in (CONFIGS / "trainer").glob("*.yaml"))
TOP_LEVEL = sorted(p.stem for p in CONFIGS.glob("*.yaml"))  # one per command: none can be left out
# values each command needs from its command line (`???`); train's are filled from the data (complete_model_config)
MANDATORY = {"eval": ["ckpt=x.ckpt"], "export": ["ckpt=x.ckpt"], "predict": ["onnx=m.onnx", "input=x.json"],
             "train": ["model.net.in_features=4", "model.net.out_features=1", "model.class_names=[a,b]"]}


@pytest.fixture
def composer(tmp_path: Path) -> Iterator:
    """compose(config, overrides) as `cmsdl` would, writing under tmp_path; Hydra's state cleared afterwards."""

    def _compose(name: str, overrides: list[str]) -> DictConfig:
        extra = [f"paths.log_dir={tmp_path / 'logs'}"] if name in ("train", "eval") else []
        return compose_run_config(name, [*overrides, *extra], output_dir=tmp_path / "run")

    yield _compose
    GlobalHydra.instance().clear()


def test_configs_ship_with_the_package() -> None:
    assert (CONFIGS / "train.yaml").is_file() and "workflow_actions" in EXPERIMENTS
    assert {"cpu", "gpu", "ddp"} <= set(TRAINERS)


@pytest.fixture(scope="module")
def experiment_data(tmp_path_factory: pytest.TempPathFactory, workflows_file: Path) -> dict[str, Path]:
    """A small data file for each tabular experiment (workflows are the default)."""
    from cmsdl.features.popularity.records import write_popularity
    from cmsdl.sim.nanoaod import simulate_events, write_root
    from cmsdl.sim.popularity import simulate_popularity
    from cmsdl.sim.transfers import simulate_transfers, write_log

    root = tmp_path_factory.mktemp("experiment_data")
    for i, process in enumerate(("ttbar", "qcd")):
        write_root(root / "top" / f"{process}_000.root", simulate_events(process, 400, seed=i))
    popularity = write_popularity(root / "popularity.csv", simulate_popularity(n_datasets=300, n_weeks=16))
    transfers = write_log(root / "transfers.log", simulate_transfers(500)[0])
    return {"popularity": popularity, "transfer_class": transfers, "transfer_latency": transfers,
            "workflow_actions": workflows_file, "top_sb": root, "top_sb_deepsets": root}


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_builds_data_model_and_trainer(composer, experiment: str, experiment_data: dict[str, Path]) -> None:
    data_file = experiment_data[experiment]
    data = f"paths.data_dir={data_file}" if experiment.startswith("top_sb") else f"data.source.path={data_file}"
    cfg = composer("train", [f"experiment={experiment}", "trainer=cpu", data])
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    complete_model_config(cfg, datamodule)
    model = instantiate(cfg.model)
    trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    batch = next(iter(datamodule.train_dataloader()))
    assert model(batch[0]).shape[0] == len(batch[1])
    assert trainer.max_epochs == cfg.trainer.max_epochs
    for name, entry in cfg.callbacks.items():
        instantiate(entry)


@pytest.mark.parametrize("trainer", TRAINERS)
def test_every_trainer_composes(composer, trainer: str) -> None:
    cfg = composer("train", [f"trainer={trainer}"])
    assert cfg.trainer._target_ == "pytorch_lightning.Trainer"
    assert cfg.trainer.accelerator == {"cpu": "cpu", "gpu": "gpu", "ddp": "gpu"}.get(trainer, "auto")


def test_every_command_has_a_top_level_config() -> None:
    assert {"train", "eval", "export", "predict", "serve", "simulate_popularity", "simulate_transfers"} <= set(TOP_LEVEL)


@pytest.mark.parametrize("name", TOP_LEVEL)
def test_top_level_config_composes_and_resolves(composer, name: str) -> None:
    """Every interpolation resolves and no mandatory value is left open once the command line gives MANDATORY."""
    cfg = composer(name, MANDATORY.get(name, []))
    resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    assert isinstance(resolved, dict) and resolved


@pytest.mark.parametrize("name", TOP_LEVEL)
def test_help_shows_each_config_with_the_comments_of_its_files(name: str) -> None:
    config = command_help(CONFIGS, name, MANDATORY.get(name, [])).split("== Config ==", 1)[1]
    assert "# " in config, f"cmsdl {name} --help shows no comment of configs/{name}.yaml"


@pytest.mark.parametrize("experiment", [None, *EXPERIMENTS])
def test_every_comment_of_the_train_config_files_lands_on_a_composed_key(composer, experiment: str | None) -> None:
    """cmsdl train --help writes each YAML comment next to its key: none may be lost to a wrong key path."""
    from hydra.core.hydra_config import HydraConfig

    cfg = composer("train", [f"experiment={experiment}"] if experiment else [])
    choices = {g: c for g, c in HydraConfig.get().runtime.choices.items() if not g.startswith("hydra")}
    missing = object()
    lost = [key for key in config_comments(CONFIGS, "train", choices)
            if key != "defaults" and OmegaConf.select(cfg, key, default=missing) is missing]
    assert not lost, f"comments on keys that the composed config does not have: {lost}"


def test_workflow_actions_is_the_seed_network(composer, workflows_file: Path) -> None:
    cfg = composer("train", ["experiment=workflow_actions", f"data.source.path={workflows_file}"])
    assert list(cfg.model.net.hidden) == [75] * 5
    assert cfg.model.net.dropout == 0.002 and cfg.model.net.activation == "relu"
    assert cfg.model.optimizer._target_ == "torch.optim.Adam" and cfg.model.optimizer.lr == 1e-3
    assert list(cfg.data.source.classes) == ["acdc", "clone"] and cfg.model.binary_head
