"""The documentation site builds with warnings as errors, and what it generates from the code
covers every registered tool, config key and dataset; the README's tool table matches the tools."""
from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from autoseg.cli import TOOLS
from autoseg.config import RetrainConfig, SearchConfig
from autoseg.data import list_datasets
from autoseg.losses import LOSSES
from autoseg.search.methods import SEARCH_METHODS

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs" / "_ext"))
import autoseg_docs  # noqa: E402  (the docs extension, found beside the site's sources)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built once for the module with warnings as errors."""
    out = tmp_path_factory.mktemp("site")
    built = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-j", "1", "-b", "html",
                            "-d", str(out / "doctrees"), str(ROOT / "docs"), str(out / "html")],
                           capture_output=True, text=True, cwd=ROOT)
    assert built.returncode == 0, built.stderr[-4000:]
    return out / "html"


def page_text(path: Path) -> str:
    """The text of a built HTML page, tags removed."""
    return re.sub(r"<[^>]+>", " ", path.read_text())


def test_every_tool_has_a_page_with_every_option(site: Path):
    for tool in TOOLS:
        page = site / "tools" / f"{tool}.html"
        assert page.is_file(), f"no page for autoseg {tool}"
        text = page_text(page)
        for action in autoseg_docs.tool_parser(tool)._actions:
            for option in action.option_strings:
                assert option in text, f"autoseg {tool}: {option} missing from its page"


def config_keys(cls: type) -> list[str]:
    """Every dotted key of a config class (both search spaces' model sections)."""
    return [key for key, _, _ in autoseg_docs.config_keys(cls)]


def test_every_config_key_method_setting_and_loss_option_is_in_the_reference(site: Path):
    text = page_text(site / "configuration.html")
    keys = config_keys(SearchConfig) + config_keys(RetrainConfig)
    assert "model.levels" in keys and "model.multiplier" in keys and "loss.options" in keys
    keys += [f"method_options.{item.name}" for method in SEARCH_METHODS.values()
             for item in dataclasses.fields(method.Settings)]
    keys += [f"loss.options.{item.name}" for loss in LOSSES.values() for item in dataclasses.fields(loss.Options)]
    assert "loss.options.gamma" in keys
    missing = [key for key in keys if key not in text]
    assert not missing, missing


def test_every_registered_dataset_is_listed(site: Path):
    text = page_text(site / "datasets.html")
    assert all(f" {name} " in text for name in list_datasets())


def test_the_dataset_help_lists_every_registered_dataset():
    shown = subprocess.run([sys.executable, "-m", "autoseg.cli", "search", "--help"], capture_output=True,
                           text=True, cwd=ROOT, check=True).stdout
    assert all(name in " ".join(shown.split()) for name in list_datasets())


def test_the_readme_tool_table_lists_every_tool_and_stays_short():
    readme = (ROOT / "README.md").read_text()
    rows = re.findall(r"^\| \[?`autoseg (\w+)`\]?[^|]* \| (.+) \|$", readme, flags=re.MULTILINE)
    assert rows == list(TOOLS.items())
    assert len(readme.splitlines()) <= 250
    assert "pip install -e . && python tools/search.py --dataset synthetic" in readme
    assert 'pip install -e ".[test]" && python -m pytest -q' in readme
