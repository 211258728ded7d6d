"""The README is the reference: every SQL function, CLI command and config key is in it."""

from pathlib import Path

from jammi_sql import functions
from jammi_sql.catalog import sql_dir
from jammi_sql.config import options_table

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()

PUBLIC_SQL = [
    "add_source",
    "remove_source",
    "register_model",
    "fine_tune",
    "wait_job",
    "cancel_job",
    "resume_job",
    "embed",
    "embed_query",
    "generate_text_embeddings",
    "semantic_search",
    "evaluate_similarity",
    "evaluate_retrieval",
]


def test_every_public_sql_function_is_installed():
    from jammi_sql import evaluation  # noqa: F401

    udfs = {f.name for f in functions.FUNCTIONS}
    macros = (sql_dir() / "macros.sql").read_text()
    for name in PUBLIC_SQL:
        assert name in udfs or f"MACRO {name}(" in macros, name


def test_every_sql_function_is_documented_in_the_readme():
    for name in PUBLIC_SQL:
        assert f"{name}(" in README, name


def test_every_cli_command_is_documented_in_the_readme():
    for command in ("jammi-sql [DB]", '-c "SQL"', "-f file.sql", "jammi-sql demo"):
        assert command in README, command


def test_the_readme_config_table_is_generated_from_the_dataclass():
    table = README.split("<!-- config-table:start -->\n", 1)[1].split(
        "\n<!-- config-table:end -->", 1
    )[0]
    assert table == options_table()


def test_the_readme_starts_with_the_two_commands():
    first = README.index("make demo")
    assert first < README.index("## SQL") and README.index("make test") < README.index("## SQL")
