"""The README is the reference: every SQL function, CLI command and config key is in it."""

from pathlib import Path

from jammi_sql.config import options_table
from jammi_sql.defaults import shape_table
from jammi_sql.functions import declarations as functions

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()

PUBLIC = [fn for fn in functions.FUNCTIONS if fn.public]


def between(marker: str) -> str:
    return README.split(f"<!-- {marker}:start -->\n", 1)[1].split(f"\n<!-- {marker}:end -->", 1)[0]


def test_every_public_sql_function_is_installed_in_a_connection(db):
    installed = {
        r[0]
        for r in db.con.execute(
            "SELECT function_name FROM duckdb_functions() WHERE function_type IN "
            "('scalar', 'macro', 'table_macro')"
        ).fetchall()
    }
    assert {fn.name for fn in PUBLIC} <= installed
    assert {fn.udf_name for fn in functions.FUNCTIONS if fn.impl} <= installed


def test_the_contract_functions_are_all_in_the_registry():
    contract = (Path(__file__).resolve().parents[2] / "shared" / "SQL_API.md").read_text()
    table = contract.split("## SQL functions", 1)[1].split("`fine_tune` arguments", 1)[0]
    named = {
        line.split("`")[1].split("(")[0] for line in table.splitlines() if line.startswith("| `")
    }
    assert named and named <= {fn.name for fn in PUBLIC}


def test_the_readme_function_reference_is_generated_from_the_registry():
    assert between("sql-reference") == functions.reference_table()


def test_every_sql_function_appears_in_a_readme_example():
    examples = "\n".join(
        README.split("```sql")[i].split("```")[0] for i in range(1, README.count("```sql") + 1)
    )
    for fn in PUBLIC:
        assert f"{fn.name}(" in examples, fn.name


def test_every_cli_command_is_documented_in_the_readme():
    for command in ("jammi-sql [DB]", '-c "SQL"', "-f file.sql", "jammi-sql demo"):
        assert command in README, command


def test_the_readme_config_table_is_generated_from_the_dataclass():
    assert between("config-table") == options_table()


def test_the_readme_defaults_by_shape_are_generated_from_the_table():
    assert between("shape-defaults") == shape_table()


def test_the_readme_starts_with_the_two_commands():
    first = README.index("make demo")
    assert first < README.index("## SQL") and README.index("make test") < README.index("## SQL")


def regenerate(text: str) -> str:
    """The README with both generated sections rewritten (``make docs``)."""
    for marker, body in (
        ("sql-reference", functions.reference_table()),
        ("config-table", options_table()),
        ("shape-defaults", shape_table()),
    ):
        head, rest = text.split(f"<!-- {marker}:start -->\n", 1)
        text = (
            f"{head}<!-- {marker}:start -->\n{body}\n<!-- {marker}:end -->"
            + rest.split(f"\n<!-- {marker}:end -->", 1)[1]
        )
    return text


if __name__ == "__main__":
    path = Path(__file__).resolve().parents[1] / "README.md"
    path.write_text(regenerate(path.read_text()))


def test_every_public_python_api_function_has_a_docstring_that_help_shows():
    import inspect
    import pydoc

    from jammi_sql.api import database
    from jammi_sql.api.job_handle import Job

    members = [(f"database.{n}", f) for n, f in vars(database).items() if inspect.isfunction(f)]
    members = [(n, f) for n, f in members if f.__module__ == database.__name__]
    for cls in (database.Database, Job):
        for name, member in vars(cls).items():
            fn = member.fget if isinstance(member, property) else member
            if callable(fn):
                members.append((f"{cls.__name__}.{name}", fn))
    public = [(n, f) for n, f in members if not n.split(".")[-1].startswith("_")]
    assert len(public) > 25
    undocumented = [n for n, f in public if not inspect.getdoc(f)]
    assert undocumented == []
    shown = pydoc.render_doc(database.Database, renderer=pydoc.plaintext)
    for name in ("add_source", "register_model", "wait_job", "evaluate_similarity"):
        doc = inspect.getdoc(getattr(database.Database, name)).splitlines()[0]
        assert doc in shown, name
