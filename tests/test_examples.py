"""The SQL examples in sql/examples run as they are, through the jammi-sql command."""

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
