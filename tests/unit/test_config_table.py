"""The README's configuration table is the one ``scripts/config_table.py`` generates from ``Settings``."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path
from types import ModuleType

from wirthforge_ws.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("config_table", ROOT / "scripts" / "config_table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


config_table = _script()


def test_the_readme_table_is_the_generated_one() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert config_table.readme_table(readme) == config_table.render(), (
        "README.md's settings table differs from Settings: run `python scripts/config_table.py --write`"
    )


def test_every_setting_has_one_row_with_its_flag_and_variable() -> None:
    rows = config_table.render().splitlines()[2:]
    assert len(rows) == len(dataclasses.fields(Settings))
    for row, f in zip(rows, dataclasses.fields(Settings)):
        assert row.startswith(f"| `--{f.name.replace('_', '-')}` | `WF_{f.name.upper()}` |"), row
        assert f.metadata["help"] in row


def test_a_changed_setting_shows_as_a_difference() -> None:
    """The check can fail: a README with another default or meaning is not the generated table."""
    table = config_table.render()
    readme = f"intro\n{config_table.BEGIN}\n{table}{config_table.END}\nrest\n"
    assert config_table.readme_table(readme) == table
    edited = readme.replace("| `8145` | TCP port |", "| `9000` | TCP port |")
    assert edited != readme and config_table.readme_table(edited) != table
    assert config_table.with_table(edited, table) == readme


def test_defaults_are_shown_by_kind() -> None:
    shown = config_table.shown_default
    assert (shown(True), shown(False), shown(()), shown(""), shown(None)) == ("on", "off", "none", "none", "none")
    assert (shown(60.0), shown(16.67), shown(8145), shown(("a", "b"))) == ("`60`", "`16.67`", "`8145`", "`a,b`")
    assert shown("", "user data dir") == "user data dir"
