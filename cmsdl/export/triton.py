"""Triton Inference Server model repositories: written by `cmsdl export format=triton`, read by `cmsdl serve`.

    <repo>/<name>/config.pbtxt        platform "onnxruntime_onnx", tensors, batching, instance group
    <repo>/<name>/1/model.onnx        the self-contained graph, with the cmsdl contract in its metadata
    <repo>/<name>/1/export.json       the export report (parity figures, contract, options)
    <repo>/<name>/2/...               a later export of the same name: the next version

Following Triton's conventions, with ``max_batch_size > 0`` the tensors' ``dims`` leave out the batch axis (Triton
adds it, and batches requests with ``dynamic_batching``); with ``max_batch_size: 0`` they include it as -1. The
versions of a model share its config, so a new version must take and give the same tensors as the config says.
Imports no torch (`cmsdl serve` reads repositories with `read_triton_config` and `latest_version`).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cmsdl.errors import ConfigError, InputFormatError, closest
from cmsdl.export.pbtxt import Enum, PbtxtError, dumps, parse
from cmsdl.inference.metadata import ModelContract, TensorSpec
from cmsdl.io import write_files_atomic

PLATFORM = "onnxruntime_onnx"
CONFIG_FILE = "config.pbtxt"
MODEL_FILE = "model.onnx"
REPORT_FILE = "export.json"
MAX_CONFIG_BYTES = 1 << 20
NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
# cmsdl contract dtypes → Triton's DataType enum, and that enum's numbers (a config may write either).
TRITON_DTYPES = {"bool": "TYPE_BOOL", "uint8": "TYPE_UINT8", "int8": "TYPE_INT8", "int32": "TYPE_INT32",
                 "int64": "TYPE_INT64", "float16": "TYPE_FP16", "float32": "TYPE_FP32", "float64": "TYPE_FP64"}
DATA_TYPE_NUMBERS = ("TYPE_INVALID", "TYPE_BOOL", "TYPE_UINT8", "TYPE_UINT16", "TYPE_UINT32", "TYPE_UINT64",
                     "TYPE_INT8", "TYPE_INT16", "TYPE_INT32", "TYPE_INT64", "TYPE_FP16", "TYPE_FP32", "TYPE_FP64",
                     "TYPE_STRING", "TYPE_BF16")
KIND_NUMBERS = ("KIND_AUTO", "KIND_GPU", "KIND_CPU", "KIND_MODEL")
INSTANCE_KINDS = {"cpu": "KIND_CPU", "gpu": "KIND_GPU"}
# ModelConfig's fields (model_config.proto) and, at any depth, those that are repeated.
CONFIG_FIELDS = ("name", "platform", "backend", "runtime", "version_policy", "max_batch_size", "input", "output",
                 "batch_input", "batch_output", "optimization", "dynamic_batching", "sequence_batching",
                 "ensemble_scheduling", "instance_group", "default_model_filename", "cc_model_filenames",
                 "metric_tags", "parameters", "model_warmup", "model_operations", "model_transaction_policy",
                 "model_repository_agents", "response_cache", "model_metrics")
REPEATED = ("input", "output", "batch_input", "batch_output", "instance_group", "dims", "shape", "gpus", "profile",
            "secondary_devices", "preferred_batch_size", "versions", "model_warmup", "parameters",
            "cc_model_filenames", "metric_tags", "priority_queue_policy", "step", "control_input", "control",
            "state", "initial_state", "source_input", "target_name", "agents", "metric_control")


class TritonConfigError(InputFormatError):
    """A config.pbtxt that cannot be read, is not text-format protobuf, or lacks what Triton needs."""


@dataclass(frozen=True)
class TritonSettings:
    """How Triton runs the model: batching and instances (`triton.*` in configs/export.yaml)."""

    max_batch_size: int = 64
    dynamic_batching: bool = True
    max_queue_delay_microseconds: int = 100
    instance_kind: str = "cpu"
    instance_count: int = 1
    gpus: list[int] = field(default_factory=list)


def is_count(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and minimum <= value < 1 << 31


def triton_settings(options: Mapping[str, Any]) -> TritonSettings:
    """`triton.*` options checked one by one; ConfigError names the key and what was expected."""
    group = options.get("instance_group") or {}
    if not isinstance(group, Mapping):
        raise ConfigError(f"triton.instance_group: got {group!r}, expected {{kind: cpu|gpu, count: n, gpus: [...]}}")
    gpus = group.get("gpus") or []
    settings = TritonSettings(
        max_batch_size=options.get("max_batch_size", 64),
        dynamic_batching=options.get("dynamic_batching", True),
        max_queue_delay_microseconds=options.get("max_queue_delay_microseconds", 100),
        instance_kind=group.get("kind", "cpu"),
        instance_count=group.get("count", 1),
        gpus=list(gpus) if isinstance(gpus, list) else [gpus],
    )
    checks = [
        ("max_batch_size", settings.max_batch_size, is_count(settings.max_batch_size, 0), "an integer >= 0"),
        ("dynamic_batching", settings.dynamic_batching, isinstance(settings.dynamic_batching, bool), "true or false"),
        ("max_queue_delay_microseconds", settings.max_queue_delay_microseconds,
         is_count(settings.max_queue_delay_microseconds, 0), "an integer >= 0"),
        ("instance_group.kind", settings.instance_kind, settings.instance_kind in INSTANCE_KINDS,
         " or ".join(INSTANCE_KINDS)),
        ("instance_group.count", settings.instance_count, is_count(settings.instance_count, 1), "an integer >= 1"),
        ("instance_group.gpus", settings.gpus, all(is_count(g, 0) for g in settings.gpus),
         "a list of GPU indices (integers >= 0)"),
    ]
    for key, value, ok, expected in checks:
        if not ok:
            raise ConfigError(f"triton.{key}: got {value!r}, expected {expected}")
    if settings.dynamic_batching and settings.max_batch_size == 0:
        raise ConfigError("triton.dynamic_batching: Triton batches requests only for a model with max_batch_size > 0; "
                          "set triton.max_batch_size or triton.dynamic_batching=false")
    if settings.gpus and settings.instance_kind != "gpu":
        raise ConfigError(f"triton.instance_group.gpus: got {settings.gpus}, but GPUs apply to kind=gpu only")
    return settings


def check_model_name(name: Any) -> str:
    """A model's directory name in the repository: letters, digits, _ . - (not starting with . or -)."""
    if not isinstance(name, str) or not NAME.match(name):
        raise ConfigError(f"name: got {name!r}, expected a model name of letters, digits, '_', '.' and '-' "
                          "(a directory of the repository)")
    return name


def tensor_config(spec: TensorSpec, batched: bool) -> dict[str, Any]:
    dims = [int(size) for size in spec.shape[1:]]
    return {"name": spec.name, "data_type": Enum(TRITON_DTYPES[spec.dtype]), "dims": dims if batched else [-1, *dims]}


def model_config(name: str, contract: ModelContract, settings: TritonSettings) -> dict[str, Any]:
    """The config.pbtxt of an exported model, as a dict (enum values marked for pbtxt.dumps)."""
    batched = settings.max_batch_size > 0
    config: dict[str, Any] = {
        "name": name,
        "platform": PLATFORM,
        "max_batch_size": settings.max_batch_size,
        "version_policy": {"latest": {"num_versions": 1}},
        "input": [tensor_config(spec, batched) for spec in contract.inputs],
        "output": [tensor_config(spec, batched) for spec in contract.outputs],
    }
    if settings.dynamic_batching:
        config["dynamic_batching"] = {"max_queue_delay_microseconds": settings.max_queue_delay_microseconds}
    group: dict[str, Any] = {"count": settings.instance_count, "kind": Enum(INSTANCE_KINDS[settings.instance_kind])}
    if settings.gpus:
        group["gpus"] = settings.gpus
    config["instance_group"] = [group]
    return config


def config_text(config: dict[str, Any], contract: ModelContract) -> str:
    header = (f"# Written by `cmsdl export format=triton` (cmsdl {contract.version}). The model's cmsdl contract is\n"
              f"# in each version's {MODEL_FILE} (ONNX metadata cmsdl.*).\n")
    return header + dumps(config)


def read_triton_config(path: str | os.PathLike) -> dict[str, Any]:
    """A Triton config.pbtxt as a dict: fields as in model_config.proto, repeated ones as lists, enum values as
    their names (data_type "TYPE_FP32", kind "KIND_CPU"), and max_batch_size, input and output always present
    (0, [], []). A file that cannot be read, is not text-format protobuf, has an unknown top-level field or
    tensors without name, data_type and dims raises TritonConfigError, one line starting with the path."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            content = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as err:
        raise TritonConfigError(f"{path}: cannot be read ({err.strerror or err})") from None
    if len(content) > MAX_CONFIG_BYTES:
        raise TritonConfigError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes; not a model configuration")
    try:
        config = parse(content.decode("utf-8"), REPEATED)
    except UnicodeDecodeError as err:
        raise TritonConfigError(f"{path}: not UTF-8 text (byte {err.start})") from None
    except PbtxtError as err:
        raise TritonConfigError(f"{path}: {err}") from None
    return checked_config(config, str(path))


def checked_config(config: dict[str, Any], where: str) -> dict[str, Any]:
    """The parsed config with defaults filled in and enum numbers named; TritonConfigError for what Triton refuses."""
    unknown = [key for key in config if key not in CONFIG_FIELDS]
    if unknown:
        hint = closest(unknown[0], CONFIG_FIELDS)
        raise TritonConfigError(f"{where}: unknown field {unknown[0]!r}" + (f" (did you mean {hint[0]!r}?)" if hint
                                                                             else ""))
    for key in ("name", "platform", "backend", "default_model_filename"):
        if key in config and not isinstance(config[key], str):
            raise TritonConfigError(f"{where}: {key} must be a string, got {config[key]!r}")
    config.setdefault("max_batch_size", 0)
    if not is_count(config["max_batch_size"], 0):
        raise TritonConfigError(f"{where}: max_batch_size must be an integer >= 0, got {config['max_batch_size']!r}")
    for role in ("input", "output"):
        config[role] = [checked_tensor(tensor, f"{where}: {role}[{i}]")
                        for i, tensor in enumerate(config.get(role, []))]
    for key in ("dynamic_batching", "version_policy", "optimization"):
        if key in config and not isinstance(config[key], dict):
            raise TritonConfigError(f"{where}: {key} must be a message {{ ... }}, got {config[key]!r}")
    for i, group in enumerate(config.get("instance_group", [])):
        if not isinstance(group, dict):
            raise TritonConfigError(f"{where}: instance_group[{i}] must be a message {{ ... }}, got {group!r}")
        group["kind"] = enum_name(group.get("kind", "KIND_AUTO"), KIND_NUMBERS, f"{where}: instance_group[{i}].kind")
    return config


def checked_tensor(tensor: Any, where: str) -> dict[str, Any]:
    """One input or output: a name, a data_type (TYPE_*), dims (integers >= -1)."""
    if not isinstance(tensor, dict):
        raise TritonConfigError(f"{where}: expected a message {{ name, data_type, dims }}, got {tensor!r}")
    missing = [key for key in ("name", "data_type", "dims") if key not in tensor]
    if missing:
        raise TritonConfigError(f"{where}: missing {', '.join(missing)}")
    if not isinstance(tensor["name"], str) or not tensor["name"]:
        raise TritonConfigError(f"{where}.name: expected a non-empty string, got {tensor['name']!r}")
    tensor["data_type"] = enum_name(tensor["data_type"], DATA_TYPE_NUMBERS, f"{where}.data_type")
    if tensor["data_type"] == "TYPE_INVALID" or not all(isinstance(d, int) and not isinstance(d, bool) and d >= -1
                                                        for d in tensor["dims"]):
        raise TritonConfigError(f"{where} ({tensor['name']!r}): expected a data type and dims of sizes or -1, got "
                                f"{tensor['data_type']} {tensor['dims']}")
    return tensor


def enum_name(value: Any, names: tuple[str, ...], where: str) -> str:
    """An enum value as its name, whether the file gave the name or the number."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(names):
        return names[value]
    if value not in names:
        raise TritonConfigError(f"{where}: got {value!r}, expected one of {', '.join(names)}")
    return value


def versions(model_dir: str | os.PathLike) -> list[int]:
    """The version numbers of a model directory: its subdirectories named by a positive integer, in order."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return []
    return sorted(int(entry.name) for entry in model_dir.iterdir()
                  if entry.is_dir() and entry.name.isdigit() and entry.name.isascii() and int(entry.name) > 0)


def latest_version(model_dir: str | os.PathLike, model_file: str = MODEL_FILE) -> tuple[int, Path] | None:
    """The newest version that holds `model_file` (a version being written does not yet): (number, model path)."""
    for version in reversed(versions(model_dir)):
        path = Path(model_dir) / str(version) / model_file
        if path.is_file():
            return version, path
    return None


def tensor_shapes(config: dict[str, Any]) -> dict[str, list[tuple[str, str, list[int]]]]:
    """Inputs and outputs as (name, data type, full shape with -1 for the batch axis), comparable across configs."""
    batch = [-1] if config["max_batch_size"] > 0 else []
    return {role: [(t["name"], t["data_type"], [*batch, *t["dims"]]) for t in config[role]]
            for role in ("input", "output")}


def check_same_tensors(existing: dict[str, Any], new: dict[str, Any], path: Path) -> None:
    """The new version takes and gives the tensors the model's config (shared by all versions) declares."""
    before, after = tensor_shapes(existing), tensor_shapes(new)
    for role in ("input", "output"):
        if before[role] != after[role]:
            raise ConfigError(f"{path}: declares {role} {describe(before[role])}, the new model has "
                              f"{describe(after[role])}; every version of a model shares its config: export under "
                              "another name=, or remove that model from the repository first")


def describe(tensors: list[tuple[str, str, list[int]]]) -> str:
    return ", ".join(f"{name!r} {data_type} {dims}" for name, data_type, dims in tensors) or "none"


@dataclass(frozen=True)
class RepositoryModel:
    """Where `cmsdl export format=triton` writes: <repo>/<name>, and the config found there (None when new)."""

    repo: Path
    name: str
    existing: dict[str, Any] | None

    @property
    def directory(self) -> Path:
        return self.repo / self.name

    @property
    def config_path(self) -> Path:
        return self.directory / CONFIG_FILE


def repository_model(repo: Any, name: Any) -> RepositoryModel:
    """The repository entry to export into, checked before any work: a repo path, a valid name, and an existing
    config.pbtxt that can be read (a broken one is reported, never overwritten)."""
    if not isinstance(repo, str) or not repo:
        raise ConfigError(f"repo: got {repo!r}, expected the model repository directory (format=triton)")
    target = RepositoryModel(Path(repo), check_model_name(name), None)
    if target.repo.exists() and not target.repo.is_dir():
        raise ConfigError(f"repo: {repo} exists and is not a directory")
    if target.config_path.exists():
        return RepositoryModel(target.repo, target.name, read_triton_config(target.config_path))
    return target


@contextlib.contextmanager
def new_version(model_dir: Path) -> Iterator[tuple[int, Path]]:
    """Claim the next version directory (created exclusively, so concurrent exports never share one); it is
    removed again if the block fails before anything was written into it."""
    model_dir.mkdir(parents=True, exist_ok=True)
    version = (versions(model_dir) or [0])[-1] + 1
    while True:
        try:
            (model_dir / str(version)).mkdir()
            break
        except FileExistsError:
            version += 1
    directory = model_dir / str(version)
    try:
        yield version, directory
    except BaseException:
        with contextlib.suppress(OSError):
            directory.rmdir()
        raise


def write_repository_version(target: RepositoryModel, contract: ModelContract, settings: TritonSettings,
                             model_bytes: bytes, report: dict[str, Any],
                             report_json: Callable[[dict[str, Any]], bytes]) -> dict[str, Any]:
    """Write config.pbtxt and the next version's model.onnx and export.json, all or none (model last); returns
    the report with the paths written. `report_json(report) -> bytes` serialises the report."""
    config = model_config(target.name, contract, settings)
    if target.existing is not None:
        check_same_tensors(target.existing, config, target.config_path)
    with new_version(target.directory) as (version, directory):
        model_path = directory / MODEL_FILE
        report = report | {"model": str(model_path),
                           "triton": {"repository": str(target.repo), "name": target.name, "version": version,
                                      "config": str(target.config_path)}}
        write_files_atomic({target.config_path: config_text(config, contract).encode(),
                            directory / REPORT_FILE: report_json(report),
                            model_path: model_bytes})
    return report
