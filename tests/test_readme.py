"""README promises: the two fresh-machine commands, CI running exactly the test command, the demo
end to end at a reduced size, and a code-layout section that names files that exist."""
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from readme_helpers import readme_commands

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def fresh_machine_commands() -> list[str]:
    """The commands of the first code block under 'Two commands on a fresh machine'."""
    return readme_commands("## Two commands on a fresh machine")


def test_readme_has_two_commands_near_the_top():
    assert README.index("## Two commands on a fresh machine") < 600
    assert fresh_machine_commands() == ["bash scripts/run_demo.sh", "bash scripts/run_tests.sh"]


def test_ci_runs_exactly_the_readme_test_command():
    test_command = fresh_machine_commands()[1]
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
                if line.strip() and not line.strip().startswith("#")]
    assert test_command in ci_lines
    script = (ROOT / "scripts" / "run_tests.sh").read_text()
    assert "scripts/setup_env.sh --dev" in script and "pytest tests" in script


def test_readme_code_layout_names_existing_paths():
    section = README.split("## Code layout", 1)[1].split("\n## ", 1)[0]
    paths = re.findall(r"^\| `([^`]+)`", section, re.M)
    assert paths, "the code-layout table is empty"
    for entry in paths:
        for name in entry.split("`, `"):
            assert (ROOT / name.rstrip("/")).exists(), f"README code layout names {name}, which does not exist"
    for package in sorted(p for p in (ROOT / "src").iterdir() if p.is_dir() and p.name != "__pycache__"):
        assert f"`src/{package.name}/" in section, f"src/{package.name}/ is missing from the README layout"


def test_readme_config_files_exist():
    for name in sorted(set(re.findall(r"config/[\w.]+\.yaml", README))):
        assert (ROOT / name).is_file(), f"README mentions {name}, which does not exist"


@pytest.mark.slow
def test_demo_script_end_to_end_at_reduced_size(tmp_path):
    """scripts/run_demo.sh itself (set-up check, digits build, train, eval) with a short schedule."""
    env = dict(os.environ, DEMO_DATA=str(tmp_path / "digits"), DEMO_OUTPUT=str(tmp_path / "run"))
    result = subprocess.run(
        ["bash", "scripts/run_demo.sh", "--epoch_size", "1", "--train_steps_per_epoch", "4",
         "--train_image_size", "32", "--eval_image_size", "32", "--batch_size", "8", "--log_interval", "2"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    counts = sorted(len(list((tmp_path / "digits" / split).rglob("*.png"))) for split in ("train", "val"))
    assert counts == [360, 1437] and sum(counts) == 1797
    run = tmp_path / "run"
    for name in ("config.yaml", "class_indices.json", "metrics.jsonl", "metrics.png", "eval_results.json"):
        assert (run / name).is_file(), name
    results = json.loads((run / "eval_results.json").read_text())
    assert results["count"] == 360 and 0.0 <= results["top1"] <= results["top5"] <= 1.0
    assert re.search(r"top-1 \d+\.\d\d%", result.stdout + result.stderr)
    assert "demo done: checkpoint" in result.stdout
