"""The README and the docs pages: their Python examples run as pasted, their links lead somewhere, and the README
stays a front door.

Each Python block runs alone, in a fresh interpreter (so no block leans on names another defined), offline, in page
order and in one folder per page (files an earlier block of the same page wrote, such as the trained adapter, are
there, as they would be for a reader following along; no page needs another page's files). The README's shell
examples that are `dpo-ext` commands run too, after its Python blocks, as a reader would paste them."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
# Pages whose examples are run; a docs page or recipe README without Python blocks has nothing to run.
PAGES = [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "recipes" / "sentiment" / "README.md"]
MAX_README_LINES = 220  # issue 22: a front door (TRL's is 230 lines), the manual lives in docs/


def fenced_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def python_blocks(text: str) -> list[str]:
    return fenced_blocks(text, "python")


def dpo_ext_shell_blocks(text: str) -> list[str]:
    """Shell blocks made only of `dpo-ext` commands and `python -m dpo_ext.testing` (which writes the toy base the
    commands train on), continuation lines and comments aside: the runnable ones."""
    runnable = []
    for block in fenced_blocks(text, "bash"):
        commands = [line for line in block.splitlines() if line.strip() and not line.startswith((" ", "#"))]
        if commands and all(line.startswith(("dpo-ext ", "python -m dpo_ext.testing ")) for line in commands):
            runnable.append(block)
    return runnable


def run_block(kind: str, code: str, folder: Path, env: dict, label: str) -> subprocess.CompletedProcess:
    script = folder / f"{label}.{'py' if kind == 'python' else 'sh'}"
    script.write_text(code)
    command = [sys.executable, str(script)] if kind == "python" else ["bash", "-e", str(script)]
    result = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        pytest.fail(f"{label} (starting {code.splitlines()[0]!r}) fails when run alone:\n{result.stderr[-4000:]}")
    return result


def shell_blocks_to_run(page: Path) -> list[str]:
    """The README's quick start is run in the shell too; the docs' shell lines name placeholders (ADAPTER, MODEL)."""
    return dpo_ext_shell_blocks(page.read_text()) if page == README else []


PAGES_WITH_CODE = [page for page in PAGES if python_blocks(page.read_text()) or shell_blocks_to_run(page)]


@pytest.mark.parametrize("page", PAGES_WITH_CODE, ids=[str(page.relative_to(ROOT)) for page in PAGES_WITH_CODE])
def test_examples_run_each_alone(page, tmp_path):
    text = page.read_text()
    # `dpo-ext` of this interpreter's environment, as after `pip install .`
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "TQDM_DISABLE": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    name = page.relative_to(ROOT).as_posix().replace("/", "_")
    if page == README:  # its quick start runs at the root of a clone, which holds the shipped examples/
        shutil.copytree(ROOT / "examples", tmp_path / "examples", ignore=shutil.ignore_patterns("__pycache__"))
    for number, block in enumerate(python_blocks(text), start=1):
        result = run_block("python", block, tmp_path, env, f"{name}_python_block_{number}")
        if 'main(["train"' in block:  # `dpo-ext train` in Python: exit 0 and a preference accuracy, printed
            code, accuracy = result.stdout.split()[-2:]
            assert code == "0" and 0.0 <= float(accuracy) <= 1.0, result.stdout[-2000:]
    for number, block in enumerate(shell_blocks_to_run(page), start=1):
        run_block("bash", block, tmp_path, env, f"{name}_shell_block_{number}")


def test_readme_is_a_front_door():
    """Short, with the quick start's first example near the top (issue 22: it was at line ~190 of 618)."""
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; move detail to a docs/ page"
    first_example = next(number for number, line in enumerate(lines, start=1) if line == "```python")
    assert first_example <= 80, f"the README's first Python example is at line {first_example}"
    text = README.read_text()
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"](docs/{page.name}" in text, f"README.md does not link to docs/{page.name}"


def anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # a `# comment` in a code block is no heading
    return {anchor(match) for match in re.findall(r"^#{1,6} (.+)$", text, flags=re.M)}


LINKED_PAGES = [*PAGES, *sorted((ROOT / "recipes").glob("*/README.md"))]


@pytest.mark.parametrize("page", LINKED_PAGES, ids=[str(page.relative_to(ROOT)) for page in LINKED_PAGES])
def test_relative_links_and_anchors_resolve(page):
    """Every relative link (file and #anchor) of the front door, the docs and the recipe READMEs leads somewhere."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):  # https://..., mailto:...
            continue
        path, _, fragment = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target} (no such file)")
        elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
            broken.append(f"{target} (no heading with that anchor)")
    assert not broken, f"{page.relative_to(ROOT)}: broken links: {broken}"
