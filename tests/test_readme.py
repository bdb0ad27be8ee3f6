"""Every shell block of README.md, run in order in an empty directory, as a new user would type them.

Sizes are shrunk only through documented overrides appended to a command (SHRINK); commands that need a GPU, a
cluster, a remote host, or files of the user's own are listed in SKIPPED with the reason; the REST service runs in
the background while the blocks after it query it. No `paths.*` override is added anywhere.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"

# command pattern → why the test does not run it
SKIPPED: dict[str, str] = {
    r"^make (demo|test)\b": "the Makefile's own targets: CI runs `make test` (this test is part of it) and the demo "
                            "script is run by test_demo_script",
    r"trainer=gpu": "needs a CUDA GPU",
    r"^cmsdl hits2png (input='runs/|input=flat\.root|\.\.\.)": "illustrates the branch mapping for ROOT files of the "
                                                               "user's own (runs/**/*.root, flat.root)",
    r"root://eos": "needs a remote XRootD server (tests/test_hits2png_formats.py reads root:// from a local one)",
    r"^cmsdl k8s (submit|status|logs|delete)\b": "needs a Kubernetes API server",
    r"hydra/launcher=k8s": "needs a Kubernetes API server (tests/test_user_paths.py runs it against a stand-in)",
    r"^kubectl (?!kustomize)": "needs a Kubernetes cluster",
    r"kustomize edit": "needs the kustomize binary and rewrites the overlay in the checkout",
    r"^docker ": "needs a Docker engine",
    r"^pip install ": "installs into the running environment (tests/test_install.py installs the base package into a "
                      "fresh venv and runs predict and serve there)",
    r"^cmsdl serve models=models port=8083": "long-running; the serve section's block starts the service "
                                             "in the background",
    r"^cmsdl serve .*read_only=true": "a second, read-only service on the same port as the first",
    r"engine=spark": "starts a JVM (minutes on 2 shared cores); tests/test_spark_engine.py runs the Spark path and "
                     "checks its tables and AUCs against the local engine's",
}
# commands started in the background (long-running services) → the URL that answers once they are ready
BACKGROUND: dict[str, str] = {r"^cmsdl serve models=models host=0\.0\.0\.0 port=8083": "http://127.0.0.1:8083/ready"}
# subcommand or script → documented overrides appended so that the whole README runs in CI's time
SHRINK: dict[str, str] = {
    "simulate-workflows": "n_workflows=400",
    "simulate": "n_events=40",
    "simulate-top": "n_events=600 events_per_file=300",
    "simulate-popularity": "n_datasets=300 n_weeks=36",
    "popularity": "max_windows=2",
    "simulate-transfers": "n_transfers=1500",
    "train": "trainer.max_epochs=1 callbacks.progress_bar.refresh_rate=0",
    "top_sb.py": "--events 600 -- trainer.max_epochs=1",
}
OPTUNA_SHRINK = "hydra.sweeper.n_trials=2"


def shell_commands(text: str) -> list[str]:
    """The commands of every ```bash block in order, backslash continuations joined, comments dropped."""
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M):
        for command in re.sub(r"\s*\\\n\s*", " ", block).splitlines():
            command = strip_comment(command).strip()
            if command:
                commands.append(command)
    return commands


def strip_comment(line: str) -> str:
    """The line without a trailing `# ...` comment; a # inside quotes stays."""
    if line.lstrip().startswith("#"):
        return ""
    for match in re.finditer(r"\s#", line):
        try:
            shlex.split(line[:match.start()])
        except ValueError:
            continue  # inside quotes
        return line[:match.start()]
    return line


def skip_reason(command: str) -> str | None:
    for pattern, reason in SKIPPED.items():
        if re.search(pattern, command):
            return reason
    if command.startswith("kubectl kustomize") and shutil.which("kubectl") is None:
        return "kubectl is not installed"
    return None


def shrunk(command: str) -> str:
    """Each `cmsdl <sub>` or `python scripts/<x>` part of the command with SHRINK's overrides appended."""
    parts = []
    for part in command.split(" && "):
        match = re.match(r"^(?:\S+=\S+ )*(?:cmsdl (\S+)|python scripts/(\S+))", part)
        name = match and (match.group(1) or match.group(2))
        extra = SHRINK.get(name, "") if name else ""
        if name == "train" and "hparams_search=" in part:
            extra += " " + OPTUNA_SHRINK
        parts.append(f"{part} {extra}".rstrip())
    return " && ".join(parts)


def readme_script(commands: list[str]) -> tuple[str, list[tuple[str, str]]]:
    """A bash script running the commands in order (stopping at the first failure), and the skipped ones."""
    lines = ["set -eo pipefail", "pids=()", 'trap \'for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done\' EXIT']
    skipped = []
    for command in commands:
        reason = skip_reason(command)
        if reason:
            skipped.append((command, reason))
            continue
        assert not re.search(r"<[a-z_ ]+>|\s\.\.\.(\s|$)", command), f"placeholder in a README command: {command}"
        run = shrunk(command)
        lines.append(f"echo {shlex.quote('+ ' + run)}")
        url = next((u for p, u in BACKGROUND.items() if re.search(p, command)), None)
        if url:
            lines += [f"{run} > background.log 2>&1 & pids+=($!)",
                      f"for i in $(seq 1 180); do curl -sf {url} >/dev/null && break; sleep 1; done",
                      f"curl -sf {url} >/dev/null || {{ cat background.log; exit 1; }}"]
        elif command.startswith("curl ") and "|" not in command:  # a piped curl runs as written (pipefail)
            lines.append(f"{run} -sS -w '\\nhttp status %{{http_code}}\\n'")
        else:
            lines.append(run)
    return "\n".join(lines) + "\n", skipped


def test_readme_commands_are_parsed_and_shrunk() -> None:
    commands = shell_commands("```bash\ncmsdl train experiment=x run_name=a   # a comment\n"
                              "cmsdl simulate out=d n_events=9 && cmsdl hits2png input='d/*.root' \\\n  size=8\n```\n")
    assert commands == ["cmsdl train experiment=x run_name=a", "cmsdl simulate out=d n_events=9 && "
                        "cmsdl hits2png input='d/*.root' size=8"]
    assert shrunk(commands[1]) == "cmsdl simulate out=d n_events=9 n_events=40 && cmsdl hits2png input='d/*.root' size=8"
    assert skip_reason("cmsdl train experiment=event_3class trainer=gpu") == "needs a CUDA GPU"
    assert strip_comment("curl -d '{\"a\": \"#x\"}'  # note") == "curl -d '{\"a\": \"#x\"}' "


@pytest.mark.slow
def test_every_readme_block_runs_in_order(tmp_path: Path) -> None:
    for folder in ("scripts", "k8s", "docs"):
        shutil.copytree(REPO / folder, tmp_path / folder)
    script, skipped = readme_script(shell_commands(README.read_text()))
    (tmp_path / "readme.sh").write_text(script)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONWARNINGS": "ignore", "HYDRA_FULL_ERROR": "0"}
    env.pop("CMSDL_SERVE_TOKEN", None)
    proc = subprocess.run(["bash", "readme.sh"], cwd=tmp_path, env=env, text=True, capture_output=True, timeout=3600)
    output = proc.stdout + proc.stderr
    if os.environ.get("CMSDL_README_TRANSCRIPT"):  # where to keep what every command printed
        Path(os.environ["CMSDL_README_TRANSCRIPT"]).write_text(output)
    assert proc.returncode == 0, f"a README command failed:\n{output[-6000:]}"
    statuses = re.findall(r"http status (\d+)", output)
    assert statuses and all(s.startswith("2") for s in statuses), f"curl answers: {statuses}\n{output[-3000:]}"
    assert "Traceback" not in output
    print("skipped README commands:\n" + "\n".join(f"  {c}  ({r})" for c, r in skipped))
    reasons = {reason for _, reason in skipped}
    assert all(reason in reasons for reason in SKIPPED.values()), "every skip rule still matches a README command"


@pytest.mark.slow
def test_demo_script(tmp_path: Path) -> None:
    """What `make demo` runs after installing, in an empty directory."""
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "demo.py")], cwd=tmp_path, text=True,
                          capture_output=True, timeout=1800)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
