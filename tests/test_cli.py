"""The jammi-sql command line: run-and-print, errors, the shell, and its pure helpers."""

from __future__ import annotations

import _thread
import io
import json
import re
import subprocess
import sys
import threading
import time

import pytest

import jammi_sql
from jammi_sql import cli, progress


@pytest.fixture
def db(tmp_path):
    database = jammi_sql.connect(":memory:", home=str(tmp_path / "home"))
    yield database
    database.close()


def run(tmp_path, *args: str) -> int:
    return cli.main([":memory:", "--home", str(tmp_path / "home"), *args])


def run_process(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jammi_sql.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


# --- run and print ---------------------------------------------------------------------


def test_command_prints_an_aligned_table(tmp_path, capsys):
    assert run(tmp_path, "-c", "SELECT 1 AS id, 'cat' AS name UNION ALL SELECT 10, 'dog'") == 0
    assert capsys.readouterr().out.splitlines() == [
        " id | name",
        "----+------",
        "  1 | cat",
        " 10 | dog",
        "(2 rows)",
    ]


def test_file_runs_every_statement_and_prints_those_that_return_rows(tmp_path, capsys):
    script = tmp_path / "script.sql"
    script.write_text(
        "CREATE TABLE t (id INT, note VARCHAR);  -- a comment; with a semicolon\n"
        "INSERT INTO t VALUES (1, 'a;b'), (2, 'c');\n"
        "SELECT count(*) AS n FROM t;\n"
        "SELECT note FROM t ORDER BY id\n"
    )
    assert run(tmp_path, "-f", str(script)) == 0
    out = capsys.readouterr().out
    assert "Count" not in out  # CREATE and INSERT print nothing
    assert " n\n---\n 2\n(1 row)\n" in out
    assert " a;b\n c\n(2 rows)" in out


def test_sql_on_stdin_runs_when_stdin_is_not_a_terminal(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("SELECT 40 + 2 AS answer;"))
    assert run(tmp_path) == 0
    assert "answer" in capsys.readouterr().out


def test_python_dash_m_reads_stdin_and_exits_zero(tmp_path):
    result = run_process(":memory:", "--home", str(tmp_path), stdin="SELECT 'piped' AS how;\n")
    assert result.returncode == 0, result.stderr
    assert "piped" in result.stdout


def test_bad_sql_exits_1_with_duckdb_message_on_stderr(tmp_path, capsys):
    assert run(tmp_path, "-c", "SELEC 1") == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("Error: Parser Error: syntax error")
    assert captured.out == ""


def test_jammi_errors_show_only_the_jammi_message(tmp_path, capsys):
    assert run(tmp_path, "-c", "SELECT wait_job('no-such-job')") == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: jammi: ")
    assert "Python exception" not in err and "Traceback" not in err
    assert run(tmp_path, "-c", "SELECT * FROM semantic_search('nope', 'tiny', 'x')") == 1
    err = capsys.readouterr().err  # a table function's error: without DuckDB's LINE 1 and carets
    assert err.startswith("Error: jammi: unknown source 'nope'") and "LINE 1" not in err


def test_the_first_error_stops_the_script(tmp_path, capsys):
    assert run(tmp_path, "-c", "SELECT 1 AS a; SELECT * FROM missing; SELECT 2 AS b") == 1
    captured = capsys.readouterr()
    assert " a\n" in captured.out and " b\n" not in captured.out
    assert captured.err.startswith("Error: Catalog Error:")


def test_an_unreadable_file_is_an_error(tmp_path, capsys):
    assert run(tmp_path, "-f", str(tmp_path / "nope.sql")) == 1
    assert capsys.readouterr().err.startswith("Error: cannot read")


def test_csv_and_json_formats_keep_full_values(tmp_path, capsys):
    sql = "SELECT 1 AS id, [0.5, 0.25, 0.125, 1.0, 2.0]::DOUBLE[] AS v, NULL AS x"
    assert run(tmp_path, "--csv", "-c", sql) == 0
    assert capsys.readouterr().out == 'id,v,x\n1,"[0.5, 0.25, 0.125, 1.0, 2.0]",\n'
    assert run(tmp_path, "--json", "-c", sql) == 0
    assert capsys.readouterr().out == '[{"id": 1, "v": [0.5, 0.25, 0.125, 1.0, 2.0], "x": null}]\n'


def test_version_names_the_package_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"jammi-sql {jammi_sql.__version__}"


def test_help_does_not_import_torch():
    code = (
        "import sys\nfrom jammi_sql.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "usage: jammi-sql" in result.stdout
    assert result.stdout.strip().endswith("NO-TORCH")


def test_demo_dispatches_to_the_demo_module(monkeypatch):
    from jammi_sql import demo

    monkeypatch.setattr(demo, "main", lambda argv=None: 7 if argv == [] else 0)
    assert cli.main(["demo"]) == 7


# --- running statements --------------------------------------------------------------------


def test_ctrl_c_interrupts_the_query_and_frees_the_connection(db, capsys):
    threading.Timer(0.5, _thread.interrupt_main).start()
    started = time.monotonic()
    assert cli.run_sql(db, "SELECT count(*) FROM range(10000000000000)") == 130
    assert time.monotonic() - started < 10
    assert "Interrupted" in capsys.readouterr().err
    assert db.con.execute("SELECT 42").fetchall() == [(42,)]


def test_progress_bars_are_drawn_for_running_tasks_when_forced(db, capsys):
    def slow(n: int) -> int:
        with progress.start("embedding test rows", n) as task:
            for _ in range(n):
                time.sleep(0.05)
                task.advance()
        return n

    db.con.create_function("slow_task", slow, ["BIGINT"], "BIGINT", side_effects=True)
    assert cli.run_sql(db, "SELECT slow_task(8) AS n", progress="always") == 0
    captured = capsys.readouterr()
    assert "embedding test rows" in captured.err
    assert " 8\n" in captured.out
    assert progress.active() == []


def test_bars_fit_80_columns_and_a_fraction_shows_no_counts(db, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")

    def slow(counted: bool) -> int:
        name = "embedding a_source_with_a_long_name with a/model-with-a-long-name-too"
        with progress.start(name if counted else "training ft", 4, counted=counted) as task:
            for _ in range(4):
                time.sleep(0.1)
                task.advance()
        return 4

    db.con.create_function("slow_task", slow, ["BOOLEAN"], "BIGINT", side_effects=True)
    assert cli.run_sql(db, "SELECT slow_task(true) AS n", progress="always") == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "embedding" in line]
    drawn = [re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", line).strip("\r") for line in lines]
    assert drawn and all(len(line.split("\r")[-1]) <= 80 for line in drawn)
    assert "…" in drawn[-1] and "/4 " in drawn[-1]  # cut description, counts kept
    assert cli.run_sql(db, "SELECT slow_task(false) AS n", progress="always") == 0
    training = [line for line in capsys.readouterr().err.splitlines() if "training ft" in line]
    assert training and "/s" not in training[-1] and "/4" not in training[-1]


def test_embed_over_a_query_shows_a_running_count_of_texts(db, tiny_model, capsys):
    db.register_model("tiny", tiny_model)
    db.con.execute("CREATE TABLE t AS SELECT 'text number ' || i AS body FROM range(30000) r(i)")
    sql = "SELECT count(embed('tiny', body)) AS n FROM t"
    assert cli.run_sql(db, sql, progress="always") == 0
    captured = capsys.readouterr()
    assert "30000" in captured.out
    assert "embedding with tiny" in captured.err and " texts " in captured.err
    assert progress.active() == []  # the count ended with the statement
    assert cli.run_sql(db, sql, progress="never") == 0
    assert "embedding with" not in capsys.readouterr().err


def test_the_shell_shows_40_rows_and_counts_the_rest(db, capsys):
    assert cli.run_sql(db, "SELECT * FROM range(100)", shell=True) == 0
    out = capsys.readouterr().out
    assert "\n    39\n" in out and "\n    40\n" not in out
    assert "(100 rows, 40 shown, " in out


def test_the_shell_runs_multiline_statements_and_dot_commands(db, capsys):
    from prompt_toolkit.history import InMemoryHistory
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput

    with create_pipe_input() as keys:
        keys.send_text("SELECT 1 AS first,\r'x;y' AS second\r;\rSELEC 2;\r.jobs\r.nope\r")
        keys.send_text("SELECT 3 AS after_errors;\r.quit\r")
        session = cli.prompt_session(input=keys, output=DummyOutput(), history=InMemoryHistory())
        assert cli.shell(db, session, progress="never") == 0
    captured = capsys.readouterr()
    assert " first | second\n" in captured.out and "     1 | x;y\n" in captured.out
    assert "job_id | status | progress" in captured.out
    assert "after_errors" in captured.out  # errors keep the shell
    assert "Error: Parser Error" in captured.err
    assert "Error: unknown command .nope; try .help" in captured.err


def test_ctrl_d_leaves_the_shell(db):
    from prompt_toolkit.history import InMemoryHistory
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput

    with create_pipe_input() as keys:
        keys.send_text("\x04")
        session = cli.prompt_session(input=keys, output=DummyOutput(), history=InMemoryHistory())
        assert cli.shell(db, session) == 0


# --- pure helpers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "complete"),
    [
        ("SELECT 1;", True),
        ("SELECT 1", False),
        ("SELECT 1;\n", True),
        ("SELECT ';'", False),
        ("SELECT 'it''s';", True),
        ("SELECT 'unclosed;", False),
        ('SELECT "a;b";', True),
        ("SELECT 1; -- done", True),
        ("SELECT 1 -- not yet;", False),
        ("/* ; */ SELECT 1", False),
        ("SELECT 1 /* open;", False),
        ("SELECT $$ ; $$", False),
        ("SELECT $tag$ ;$$ $tag$;", True),
        ("SELECT 1; SELECT 2;", True),
        ("SELECT 1; SELECT 2", False),
    ],
)
def test_statement_complete_finds_the_final_semicolon(text, complete):
    assert cli.statement_complete(text) is complete


def test_enter_submits_blank_lines_dot_commands_and_complete_statements():
    assert cli.input_complete("")
    assert cli.input_complete("  .tables")
    assert cli.input_complete("SELECT 1;")
    assert not cli.input_complete("SELECT 1")


def test_long_vectors_are_abbreviated_with_their_length():
    vector = [0.0134, -0.0521, 0.1] + [0.0] * 381
    assert cli.format_value(vector) == "[0.013, -0.052, 0.100, …] (384)"
    assert cli.format_value((1.0, 2.0)) == "[1.000, 2.000]"
    assert cli.format_value([1, 2, 3, 4]) == "[1, 2, 3, 4]"


def test_cells_show_null_booleans_structs_and_short_floats():
    assert cli.format_value(None) == "NULL"
    assert cli.format_value(True) == "true"
    assert cli.format_value(0.30000001192092896) == "0.3"
    assert cli.format_value({"spearman": 0.5, "n": 3}) == "{spearman: 0.500, n: 3}"
    assert cli.format_value(["a", "b"]) == "['a', 'b']"
    assert cli.format_value("two\nlines") == "two\\nlines"


def test_format_table_aligns_numbers_right_and_cuts_long_cells():
    lines = cli.format_table(["n", "text"], [(1, "short"), (100, "x" * 20)], max_width=8)
    assert lines == [" n   | text", "-----+----------", "   1 | short", " 100 | xxxxxxx…"]


def test_the_shell_warns_when_generate_text_embeddings_cuts_texts(tmp_path, tiny_model, capsys):
    long = " ".join(["the cat plays piano"] * 40)
    sql = (
        f"SELECT register_model('tiny', '{tiny_model}'); "
        f"CREATE TABLE t AS SELECT 1 AS id, '{long}' AS body UNION ALL SELECT 2, 'a dog'; "
        "SELECT add_source('t', 't'); "
        "SELECT generate_text_embeddings('t', 'tiny', ['body'], 'id') AS n;"
    )
    assert (
        cli.main([":memory:", "--home", str(tmp_path / "h"), "--precision", "fp32", "-c", sql]) == 0
    )
    captured = capsys.readouterr()
    assert "Warning: jammi: 1 of 2 texts were longer than model 'tiny' takes (64 tokens)" in (
        captured.err
    )
    assert "chunk_tokens" in captured.err and progress.take_warnings() == []


def test_json_output_nests_json_struct_and_list_values_instead_of_escaping_them(tmp_path, capsys):
    sql = (
        "SELECT '{\"a\": [1, 2]}'::JSON AS j, {'kept': 'x', 'why': '{\"n\": 3}'::JSON} AS s, "
        "['[1]'::JSON, NULL] AS l, MAP {'k': 'true'::JSON} AS m, 'not json' AS t"
    )
    assert run(tmp_path, "--json", "-c", sql) == 0
    assert json.loads(capsys.readouterr().out) == [
        {
            "j": {"a": [1, 2]},
            "s": {"kept": "x", "why": {"n": 3}},
            "l": [[1], None],
            "m": {"k": True},
            "t": "not json",
        }
    ]
    assert run(tmp_path, "--csv", "-c", sql) == 0  # a JSON column is its text; nested, JSON
    assert capsys.readouterr().out.splitlines()[1] == (
        '"{""a"": [1, 2]}","{""kept"": ""x"", ""why"": {""n"": 3}}","[[1], null]",'
        '"{""k"": true}",not json'
    )


def test_the_shell_has_schema_mode_timer_and_read(db, tmp_path, capsys):
    from prompt_toolkit.history import InMemoryHistory
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput

    script = tmp_path / "script.sql"
    script.write_text("SELECT 7 AS from_file, 'x' AS letter;\n")
    with create_pipe_input() as keys:
        keys.send_text("CREATE TABLE pets (id INT, name VARCHAR);\r.schema\r.schema PETS\r")
        keys.send_text(".schema nope\r.mode csv\r.timer off\rSELECT 1 AS a, 2 AS b;\r")
        keys.send_text(f".mode line\r.read {script}\r.mode\r.timer\r.mode yaml\r.read\r")
        keys.send_text(".timer on\r.mode table\rSELECT 3 AS c;\r.quit\r")
        session = cli.prompt_session(input=keys, output=DummyOutput(), history=InMemoryHistory())
        assert cli.shell(db, session, progress="never") == 0
    captured = capsys.readouterr()
    out, err = captured.out, captured.err
    assert out.count('CREATE TABLE pets(id INTEGER, "name" VARCHAR);') == 2
    assert "jammi.jobs" not in out  # .schema alone: your tables, not jammi's catalog
    assert "Error: no table or view matches 'nope'; .tables lists them" in err
    assert "a,b\n1,2\n" in out and "a,b\n1,2\n(" not in out  # csv, and no timing with .timer off
    assert "from_file = 7\n   letter = x\n(1 row)\n" in out  # line mode, rows counted
    assert "\nline\noff\n" in out  # .mode and .timer alone say what is set
    assert "Error: usage: .mode [MODE]; .help lists the commands" in err
    assert "Error: usage: .read FILE" in err
    assert re.search(r" c\n---\n 3\n\(1 row, \d+\.\d{3} s\)", out)


def test_dot_commands_in_the_shell_are_in_help_and_in_the_readme(db, capsys):
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    shell_section = readme.split("## The shell", 1)[1].split("\n## ", 1)[0]
    assert cli.dot_command(db, ".help", cli.ShellSettings())
    shown = capsys.readouterr().out
    for command, _ in cli.DOT_COMMANDS:
        name = command.split(" ")[0]
        if name:
            assert f"  {name}" in shown, name
            assert f"`{name}" in shell_section, name
    for name in (".schema", ".mode", ".timer", ".read"):
        assert name in shown
    assert not cli.dot_command(db, ".exit", cli.ShellSettings())


def test_line_format_prints_column_equals_value(tmp_path, capsys):
    assert (
        run(tmp_path, "--line", "-c", "SELECT 1 AS id, 'cat' AS name UNION ALL SELECT 2, 'x'") == 0
    )
    assert capsys.readouterr().out == "  id = 1\nname = cat\n\n  id = 2\nname = x\n(2 rows)\n"


def test_relative_paths_in_a_script_are_found_beside_it_when_the_current_folder_lacks_them(
    db, tmp_path, capsys, monkeypatch
):
    scripts, here = tmp_path / "scripts", tmp_path / "here"
    (scripts / "data").mkdir(parents=True)
    here.mkdir()
    (scripts / "data" / "pets.csv").write_text("id,name\n1,cat\n2,dog\n")
    (here / "data").mkdir()
    (here / "data" / "both.csv").write_text("where\ncurrent folder\n")
    (scripts / "data" / "both.csv").write_text("where\nscript folder\n")
    (scripts / "load.sql").write_text(
        "SELECT count(*) AS pets FROM read_csv('data/pets.csv');\n"
        "SELECT add_source('pets', 'data/pets.csv') AS added;\n"
        "SELECT * FROM read_csv('data/both.csv');\n"
    )
    monkeypatch.chdir(here)
    assert cli.run_script(db, str(scripts / "load.sql")) == 0
    out = capsys.readouterr().out
    assert " pets\n------\n    2\n" in out and "source 'pets' added" in out
    assert "current folder" in out  # the current folder comes first, as in DuckDB
    url = db.sql("SELECT url FROM jammi.sources WHERE name = 'pets'").fetchall()[0][0]
    assert url == str(scripts / "data" / "pets.csv")  # stored absolute: it reads from anywhere
    script = scripts / "load.sql"
    code = cli.main([str(tmp_path / "f.duckdb"), "--home", str(tmp_path / "h"), "-f", str(script)])
    assert code == 0 and "source 'pets' added" in capsys.readouterr().out
