"""README's command blocks, read as the tests that run them need them."""
from __future__ import annotations

import re
from pathlib import Path

README_PATH = Path(__file__).resolve().parents[1] / "README.md"


def readme_commands(heading: str) -> list[str]:
    """The commands of the first ```bash block after ``heading`` in README.md: continuation lines joined,
    whitespace collapsed, comment lines and trailing ``# comments`` dropped."""
    section = README_PATH.read_text(encoding="utf-8").split(heading, 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1).replace("\\\n", " ")
    lines = (re.sub(r"(^|\s)#.*$", "", line) for line in block.splitlines())
    return [" ".join(line.split()) for line in lines if line.strip()]
