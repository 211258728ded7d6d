"""The SQL examples in sql/examples run as they are, through the jammi-sql command, from any
folder: their sample paths are relative to the example's own folder, not to the current one."""

import os

import pytest

from jammi_sql.catalog.tables import sql_dir
from jammi_sql.cli import main

EXAMPLES = sorted((sql_dir() / "examples").glob("*.sql"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_sql_example_runs_from_another_folder(path, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the repository, nor the examples' folder
    assert main(["example.duckdb", "-f", os.path.relpath(path)]) == 0
    out = capsys.readouterr()
    assert "Error" not in out.err
    assert out.out.strip()
    if path.name == "03_hard_negatives.sql":
        assert "helpdesk-hard" in out.out
