"""`cmsdl <command> --help`: the composed config with the comments of the YAML files it came from, and only the
config groups that the command uses. Imports Hydra and OmegaConf only (no torch): help answers in well under 1 s.
"""

from __future__ import annotations

import itertools
import re
import string
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from cmsdl.errors import ConfigError

KEY_LINE = re.compile(r"^(?P<indent>\s*)(?P<key>[\w\-./]+|'[^']*'|\"[^\"]*\"):(?P<value>\s.*|)$")
PACKAGE_LINE = re.compile(r"^#\s*@package\s+(\S+)")
BLOCK_SCALAR = re.compile(r"^\s*[|>][-+0-9]*\s*(#.*)?$")
FLAGS_HELP = ("--help: this text | --cfg job [--resolve]: the composed config | -m: sweep | "
              "--hydra-help: Hydra's options")


@dataclass
class Comment:
    """Comment lines written above a key, and the comment at the end of its line (with its continuation lines)."""

    above: list[str] = field(default_factory=list)
    trailing: list[str] = field(default_factory=list)


def trailing_comment(line: str) -> tuple[int, str] | None:
    """(column, text) of the `# ...` at the end of a YAML line, outside quotes; None if there is none."""
    quote = None
    for i, char in enumerate(line):
        if char in "'\"" and quote in (None, char):
            quote = None if quote else char
        elif char == "#" and quote is None and i > 0 and line[i - 1].isspace():
            return i, line[i + 1:].strip()
    return None


def file_package(text: str, group: str) -> str:
    """Where a config file's keys land: its `# @package` header, else its group (data/x.yaml → data)."""
    for line in text.splitlines()[:5]:
        match = PACKAGE_LINE.match(line.strip())
        if match:
            package = match.group(1).replace("_group_", group.replace("/", "."))
            return package.removeprefix("_global_").lstrip(".")
    return group.replace("/", ".")


def header_lines(lines: list[str]) -> list[str]:
    """The comment lines at the top of a file: what the file is for, not a comment on its first key."""
    count = next((i for i, line in enumerate(lines) if not line.startswith("#")), len(lines))
    return lines[:count]


def header_comment(text: str) -> list[str]:
    """The header of a file as text lines, `# @package` left out."""
    return [line.lstrip("#").strip() for line in header_lines(text.splitlines()) if not PACKAGE_LINE.match(line)]


def key_comments(text: str, package: str = "") -> dict[str, Comment]:
    """{dotted key: its comments} of one YAML file whose keys land under `package`."""
    comments: dict[str, Comment] = {}
    stack: list[tuple[int, str]] = []
    pending: list[str] = []
    last: tuple[int, Comment] | None = None  # column of the previous line's end comment, for continuation lines
    block_indent: int | None = None
    lines = text.splitlines()
    for line in lines[len(header_lines(lines)):]:
        indent = len(line) - len(line.lstrip())
        if block_indent is not None and (not line.strip() or indent > block_indent):
            continue
        block_indent = None
        stripped = line.strip()
        if not stripped:
            pending, last = [], None
        elif stripped.startswith("#"):
            if last and indent == last[0]:
                last[1].trailing.append(stripped.lstrip("#").strip())
            elif not PACKAGE_LINE.match(stripped):
                pending, last = [*pending, stripped.lstrip("#").strip()], None
        elif match := KEY_LINE.match(line):
            while stack and stack[-1][0] >= indent:
                stack.pop()
            stack.append((indent, match.group("key").strip("'\"")))
            path = ".".join([package, *(key for _, key in stack)]).lstrip(".")
            after = trailing_comment(line)
            comment = Comment(pending, [after[1]] if after else [])
            if comment.above or comment.trailing:
                comments[path] = comment
            pending, last = [], ((after[0], comment) if after else None)
            if BLOCK_SCALAR.match(match.group("value")):
                block_indent = indent
        else:
            pending, last = [], None
    return comments


def annotate(yaml_text: str, comments: dict[str, Comment]) -> str:
    """The YAML text with each key's comments written back above it and at the end of its line."""
    out: list[str] = []
    stack: list[tuple[int, str]] = []
    for line in yaml_text.splitlines():
        match = KEY_LINE.match(line)
        if not match:
            out.append(line)
            continue
        indent = len(match.group("indent"))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match.group("key").strip("'\"")))
        comment = comments.get(".".join(key for _, key in stack))
        if comment is None:
            out.append(line)
            continue
        out += [f"{' ' * indent}# {text}".rstrip() for text in comment.above]
        out.append(f"{line}  # {' '.join(comment.trailing)}" if comment.trailing else line)
    return "\n".join(out)


def used_groups(cfg: DictConfig) -> dict[str, str | None]:
    """{group: chosen option} of every config group in the command's defaults list, Hydra's own left out."""
    choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
    return {group: choice for group, choice in choices.items() if group != "hydra" and not group.startswith("hydra/")}


def groups_text(groups: dict[str, str | None], options: dict[str, list[str]]) -> str:
    """One line per group: its options and the chosen one."""
    lines = []
    for group in sorted(groups):
        chosen = f"chosen: {groups[group]}" if groups[group] else "none chosen"
        lines.append(f"{group}: {', '.join(options.get(group, []))}  ({chosen})")
    return "\n".join(lines) or "(this command has no config groups)"


def config_comments(config_root: Path, config_name: str, groups: dict[str, str | None]) -> dict[str, Comment]:
    """The comments of the command's config file and of each chosen group file, later files winning."""
    primary = (config_root / f"{config_name}.yaml").read_text()
    comments = key_comments(primary, file_package(primary, ""))
    for group, choice in groups.items():
        path = config_root / group / f"{choice}.yaml"
        if choice is None or not path.is_file():
            continue
        text = path.read_text()
        package = file_package(text, group)
        comments.update(key_comments(text, package))
        about = header_comment(text)
        if package:
            comments[package] = Comment([f"{group}={choice}" + (f": {about[0]}" if about else ""), *about[1:]])
    return comments


def hydra_error_line(message: str) -> str:
    """Hydra's multi-line composition error as one line: its first paragraph, and the options it lists."""
    paragraphs = [p.splitlines() for p in message.strip().split("\n\n")]
    line = " ".join(text.strip() for text in paragraphs[0] if not text.startswith((" ", "\t")))
    options = [text.strip() for p in paragraphs[1:] if p and p[0].startswith("Available options")
               for text in itertools.takewhile(lambda text: text.startswith("\t"), p[1:])]
    return line + (f" (options: {', '.join(options)})" if options else "")


def command_help(config_root: Path, config_name: str, overrides: list[str]) -> str:
    """The help of one command: configs/<config_name>.yaml composed with `overrides`, shown through the
    command's `hydra.help.template` ($APP_CONFIG_GROUPS and $CONFIG are cmsdl's own, with comments)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_root), version_base="1.3"):
            cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
            groups = used_groups(cfg)
            loader = GlobalHydra.instance().config_loader()
            options = {group: loader.get_group_options(group) for group in groups}
        template = cfg.hydra.help.template
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(f"cmsdl {config_name.replace('_', '-')}: {hydra_error_line(str(err))}") from None
    finally:
        GlobalHydra.instance().clear()
    job = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
    config = annotate(OmegaConf.to_yaml(job).rstrip(), config_comments(config_root, config_name, groups))
    return string.Template(template).safe_substitute(
        APP_CONFIG_GROUPS=groups_text(groups, options), CONFIG=config, FLAGS_HELP=FLAGS_HELP,
        HYDRA_CONFIG_GROUPS="(see --hydra-help)").rstrip()
