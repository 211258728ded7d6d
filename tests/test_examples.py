"""The SQL examples in sql/examples run as they are, through the jammi-sql command."""

import os

import pytest

from jammi_sql.catalog.tables import sql_dir
from jammi_sql.cli import main

EXAMPLES = sorted((sql_dir() / "examples").glob("*.sql"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_sql_example_runs(path, tmp_path, capsys):
    assert main([str(tmp_path / "example.duckdb"), "-f", str(path)]) == 0
    out = capsys.readouterr()
    assert "Error" not in out.err
    assert out.out.strip()


def test_an_example_runs_from_another_folder(tmp_path, capsys, monkeypatch):
    # its sample paths are relative to the example's own folder, not to the current one
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    example = sql_dir() / "examples" / "03_hard_negatives.sql"
    assert main(["example.duckdb", "-f", os.path.relpath(example)]) == 0
    out = capsys.readouterr()
    assert "Error" not in out.err and "helpdesk-hard" in out.out
