"""fine_tune as a job: queued at once, trained in the background, cancelled, resumed, and its
model registered when it succeeds."""

import time

import duckdb
import numpy as np
import pytest
from conftest import catalog_snapshot

import jammi_sql

WORDS = "cat dog car bike train plane man woman child guitar piano food".split()


@pytest.fixture
def pairs(db):
    """Scored pairs and anchor/positive pairs built from the tiny vocabulary."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(40):
        a, b = rng.choice(WORDS, 2, replace=False)
        rows.append(
            (f"the {a} plays", f"a {a} runs" if i % 2 else f"a {b} runs", 1.0 if i % 2 else 0.0)
        )
    db.con.execute("CREATE TABLE pairs (text_a VARCHAR, text_b VARCHAR, score DOUBLE)")
    db.con.executemany("INSERT INTO pairs VALUES (?, ?, ?)", rows)
    db.sql("SELECT add_source('pairs', 'pairs')").fetchall()
    db.sql(
        "CREATE TABLE qa AS SELECT text_a AS anchor, text_b AS positive, text_a || ' now' AS negative FROM pairs"
    ).fetchall()
    db.sql("SELECT add_source('qa', 'qa')").fetchall()
    return db


def long_job(db):
    """A full fine-tune that runs long enough to be caught while running."""
    return db.fine_tune(
        "pairs",
        "tiny",
        ["text_a", "text_b", "score"],
        method="full",
        epochs=200,
        warmup_steps=0,
        early_stopping_patience=1000,
    )


def fine_tune(db, sql_args: str) -> str:
    return db.sql(f"SELECT fine_tune({sql_args})").fetchall()[0][0]


def test_fine_tune_returns_a_queued_job_at_once_and_trains_in_the_background(pairs):
    start = time.monotonic()
    job_id = fine_tune(
        pairs,
        "'pairs', 'tiny', ['text_a', 'text_b', 'score'], config := {'epochs': 2, 'warmup_steps': 0}",
    )
    assert time.monotonic() - start < 2.0
    assert pairs.sql(f"SELECT wait_job('{job_id}', 120)").fetchall()[0][0] == "succeeded"
    status, progress, loss, model_id, metrics = pairs.sql(
        f"SELECT status, progress, loss, model_id, metrics FROM jammi.jobs WHERE job_id = '{job_id}'"
    ).fetchall()[0]
    assert (status, progress, loss) == ("succeeded", 1.0, "cosent")
    kind, base, adapter, dims, path = pairs.sql(
        f"SELECT kind, base_model_id, adapter_type, dimensions, artifact_path FROM jammi.models WHERE model_id = '{model_id}'"
    ).fetchall()[0]
    assert (kind, base, adapter, dims) == ("fine_tuned", "tiny", "encoder_adapters", 32)
    assert (pairs.home / "models" / model_id / "adapter.safetensors").exists()
    assert (
        pairs.sql(
            f"SELECT count(*) FROM jammi.job_metrics WHERE job_id = '{job_id}' AND name = 'loss'"
        ).fetchall()[0][0]
        > 0
    )
    vec = pairs.sql(f"SELECT embed('{model_id}', 'the cat plays')").fetchall()[0][0]
    assert len(vec) == 32


def test_python_fine_tune_with_encoder_adapters_returns_a_job(pairs):
    job = pairs.fine_tune(
        source="qa",
        base_model="tiny",
        columns=["anchor", "positive"],
        method="lora",
        target_modules=["query", "value"],
        epochs=1,
        warmup_steps=0,
    )
    job.wait(timeout=120)
    assert job.status == "succeeded" and job.progress == 1.0
    record = pairs.sql(
        f"SELECT adapter_type FROM jammi.models WHERE model_id = '{job.model_id}'"
    ).fetchall()
    assert record == [("encoder_adapters",)]
    assert pairs.encode_text_query(job.model_id, "a cat").shape == (32,)


def test_full_fine_tune_writes_a_complete_model_folder(pairs):
    job = pairs.fine_tune(
        "qa", "tiny", ["anchor", "positive", "negative"], method="full", epochs=1, warmup_steps=0
    )
    job.wait(timeout=120)
    folder = pairs.home / "models" / job.model_id
    assert (folder / "config.json").exists() and (folder / "model.safetensors").exists()
    assert pairs.sql(f"SELECT loss FROM jammi.jobs WHERE job_id = '{job.job_id}'").fetchall() == [
        ("multiple_negatives_ranking",)  # triplets: the negative joins the in-batch ones
    ]


def test_fine_tuned_models_work_in_generate_text_embeddings_and_search(pairs):
    job = pairs.fine_tune("pairs", "tiny", ["text_a", "text_b", "score"], epochs=1, warmup_steps=0)
    job.wait(timeout=120)
    pairs.sql(
        "CREATE TABLE docs AS SELECT row_number() OVER () AS id, text_a AS body FROM (SELECT DISTINCT text_a FROM pairs)"
    ).fetchall()
    pairs.sql("SELECT add_source('docs', 'docs')").fetchall()
    assert pairs.generate_text_embeddings("docs", job.model_id, ["body"], "id") > 0
    top = pairs.search("docs", job.model_id, "the cat plays", k=1)
    assert top.column("text").to_pylist() == ["the cat plays"]


def test_cancel_job_stops_a_running_job_and_registers_nothing(pairs):
    job = long_job(pairs)
    deadline = time.monotonic() + 60
    while job.status != "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert job.status == "running" and job.progress < 1.0
    assert pairs.sql(f"SELECT cancel_job('{job.job_id}')").fetchall()[0][0] == "cancelled"
    assert job.model_id is None
    assert (
        pairs.sql("SELECT count(*) FROM jammi.models WHERE kind = 'fine_tuned'").fetchall()[0][0]
        == 0
    )
    assert not (pairs.home / "jobs" / job.job_id).exists()


def test_a_job_left_running_by_a_dead_process_shows_as_interrupted_and_resumes(
    tiny_model, tmp_path
):
    path = str(tmp_path / "w.duckdb")
    db = jammi_sql.connect(path)
    db.register_model("tiny", tiny_model)
    db.sql(
        "CREATE TABLE pairs AS SELECT 'the cat ' || i AS text_a, 'a dog ' || i AS text_b, "
        "(i % 5) / 5 AS score FROM range(40) r(i)"
    ).fetchall()
    db.sql("SELECT add_source('pairs', 'pairs')").fetchall()
    job = db.fine_tune(
        "pairs",
        "tiny",
        ["text_a", "text_b", "score"],
        method="full",
        epochs=40,
        warmup_steps=0,
        early_stopping_patience=1000,
    )
    deadline = time.monotonic() + 60
    while (job.status != "running" or job.progress < 0.2) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert job.status == "running"
    db.close()  # the checkpoint stays on disk
    con = duckdb.connect(path)  # as if the process had died: the row still says running
    con.execute("UPDATE jammi.jobs SET status = 'running'")
    con.close()

    db = jammi_sql.connect(path)
    assert db.job(job.job_id).status == "interrupted"
    stopped_at = db.sql(f"SELECT step FROM jammi.jobs WHERE job_id = '{job.job_id}'").fetchall()[0][
        0
    ]
    assert stopped_at > 0
    assert db.sql(f"SELECT resume_job('{job.job_id}')").fetchall()[0][0] == job.job_id
    assert db.sql(f"SELECT wait_job('{job.job_id}', 120)").fetchall()[0][0] == "succeeded"
    step, total = db.sql(
        f"SELECT step, total_steps FROM jammi.jobs WHERE job_id = '{job.job_id}'"
    ).fetchall()[0]
    assert step == total
    first_logged = db.sql(
        f"SELECT min(step) FROM jammi.job_metrics WHERE job_id = '{job.job_id}' AND step > {stopped_at}"
    ).fetchall()[0][0]
    assert first_logged is not None  # training went on past where it stopped
    assert db.sql("SELECT kind FROM jammi.models WHERE job_id = ?", [job.job_id]).fetchall() == [
        ("fine_tuned",)
    ]
    db.close()


@pytest.mark.parametrize(
    "args, message",
    [
        ("'nope', 'tiny', ['text_a', 'text_b', 'score']", "unknown source 'nope'"),
        ("'pairs', 'nope', ['text_a', 'text_b', 'score']", "unknown model 'nope'"),
        (
            "'pairs', 'tiny', ['text_a', 'text_c', 'score']",
            "no column 'text_c'; its columns are text_a, text_b, score",
        ),
        ("'pairs', 'tiny', ['text_a']", "columns must name 2 or 3"),
        (
            "'pairs', 'tiny', ['text_a', 'text_b', 'score'], method := 'qlora'",
            "unknown method 'qlora'",
        ),
        (
            "'pairs', 'tiny', ['text_a', 'text_b', 'score'], task := 'rerank'",
            "unknown task 'rerank'",
        ),
        (
            "'pairs', 'tiny', ['text_a', 'text_b', 'score'], config := {'learnin_rate': 0.1}",
            "did you mean 'learning_rate'",
        ),
        (
            "'pairs', 'tiny', ['text_a', 'text_b', 'score'], config := {'epochs': 0}",
            "epochs = 0 is invalid",
        ),
        (
            "'pairs', 'tiny', ['text_a', 'text_b', 'score'], config := {'target_modules': ['qkv']}",
            "its linear modules are named",
        ),
        (
            "'pairs', 'tiny', ['text_a', 'text_b'], config := {'embedding_loss': 'cosent'}",
            "needs columns [text_a, text_b, score]",
        ),
        (
            "'pairs', 'tiny', ['text_a', 'score', 'text_b']",
            "column 'score' of source 'pairs' is DOUBLE, not text",
        ),
    ],
)
def test_bad_fine_tune_arguments_are_clear_errors_that_write_no_job(pairs, args, message):
    before = catalog_snapshot(pairs)
    with pytest.raises(Exception, match="jammi: ") as err:
        fine_tune(pairs, args)
    assert message in str(err.value)
    assert catalog_snapshot(pairs) == before


def test_null_texts_nan_scores_and_tiny_sources_are_refused(pairs):
    pairs.sql("CREATE TABLE few AS SELECT * FROM pairs LIMIT 3").fetchall()
    pairs.sql("SELECT add_source('few', 'few')").fetchall()
    pairs.sql(
        "CREATE TABLE holes AS SELECT * FROM pairs UNION ALL SELECT NULL, 'x', 1.0"
    ).fetchall()
    pairs.sql("SELECT add_source('holes', 'holes')").fetchall()
    pairs.sql(
        "CREATE TABLE nans AS SELECT * FROM pairs UNION ALL SELECT 'x', 'y', 'nan'::DOUBLE"
    ).fetchall()
    pairs.sql("SELECT add_source('nans', 'nans')").fetchall()
    before = catalog_snapshot(pairs)
    for source, message in [
        ("few", "too few to train on"),
        ("holes", "has 1 NULL values"),
        ("nans", "NULL, NaN or infinite"),
    ]:
        with pytest.raises(Exception, match=message):
            fine_tune(pairs, f"'{source}', 'tiny', ['text_a', 'text_b', 'score']")
    assert catalog_snapshot(pairs) == before


def test_queries_keep_working_while_a_job_trains(pairs):
    job = long_job(pairs)
    seen = set()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and "running" not in seen:
        seen.add(
            pairs.sql(f"SELECT status FROM jammi.jobs WHERE job_id = '{job.job_id}'").fetchall()[0][
                0
            ]
        )
        assert len(pairs.sql("SELECT embed('tiny', 'a cat')").fetchall()[0][0]) == 32
    assert "running" in seen
    job.cancel()


def test_wait_job_on_an_unknown_job_is_a_clear_error(db):
    with pytest.raises(Exception, match="jammi: unknown job 'nope'"):
        db.sql("SELECT wait_job('nope')").fetchall()


@pytest.mark.parametrize(
    "columns, args, shape, modules, chosen_by",
    [  # method and target_modules unset: the shape that suits the data; anything given wins
        ("'text_a', 'text_b', 'score'", "", "encoder_adapters", ["query", "value"], "data"),
        ("'text_a', 'text_b'", "", "projection_head", [], "data"),
        ("'text_a', 'text_b', 'score'", ", method := 'lora'", "projection_head", [], "user"),
        ("'text_a', 'text_b', 'score'", ", method := 'full'", "full", [], "user"),
        (
            "'text_a', 'text_b', 'score'",
            ", config := {'target_modules': ['query']}",
            "encoder_adapters",
            ["query"],
            "user",
        ),
        (
            "'text_a', 'text_b'",
            ", config := {'target_modules': ['value']}",
            "encoder_adapters",
            ["value"],
            "user",
        ),
    ],
)
def test_the_shape_follows_the_data_unless_the_user_names_one(
    pairs, columns, args, shape, modules, chosen_by
):
    import json

    job_id = fine_tune(pairs, f"'pairs', 'tiny', [{columns}]{args}")
    method, config, metrics = pairs.sql(
        f"SELECT method, config, metrics FROM jammi.jobs WHERE job_id = '{job_id}'"
    ).fetchall()[0]
    pairs.wait_job(job_id, 120)  # the choice is shown from submit on, and kept at the end
    assert json.loads(config)["target_modules"] == modules
    assert method == ("full" if shape == "full" else "lora")
    choice = json.loads(metrics)["shape"]
    assert (choice["trained"], choice["chosen_by"]) == (shape, chosen_by)
    assert pairs.job(job_id).metrics["shape"] == choice
    assert pairs.job(job_id).status == "succeeded"
    (adapter,) = pairs.sql(
        "SELECT adapter_type FROM jammi.models m JOIN jammi.jobs j USING (model_id) "
        f"WHERE j.job_id = '{job_id}'"
    ).fetchall()[0]
    assert adapter == shape


def test_adapters_on_scored_pairs_take_their_own_defaults_and_a_key_given_wins():
    from jammi_sql.config import FineTuneConfig, resolve
    from jammi_sql.defaults import KIND_DEFAULTS, SHAPE_DEFAULTS

    adapters = FineTuneConfig.from_mapping({"target_modules": ["query", "value"]})
    scored = resolve(adapters, "encoder_adapters", 32, "scored_pairs")
    pairs = resolve(adapters, "encoder_adapters", 32, "pairs")
    kind = KIND_DEFAULTS[("encoder_adapters", "scored_pairs")]
    assert (scored.epochs, scored.batch_size) == (kind["epochs"], kind["batch_size"])
    assert pairs.epochs == SHAPE_DEFAULTS["encoder_adapters"]["epochs"] != scored.epochs
    given = resolve(adapters.replace(epochs=7), "encoder_adapters", 32, "scored_pairs")
    assert (given.epochs, given.batch_size) == (7, kind["batch_size"])


def test_a_fine_tuned_model_folder_names_its_base_model(pairs):
    import json

    job = pairs.fine_tune("pairs", "tiny", ["text_a", "text_b", "score"], epochs=1, warmup_steps=0)
    job.wait(timeout=120)
    config = json.loads((pairs.home / "models" / job.model_id / "adapter_config.json").read_text())
    assert config["adapter_type"] == "encoder_adapters" and config["base_model_id"] == "tiny"


@pytest.mark.parametrize(
    "config, message",
    [
        ("{'lora_rank': 33}", "lora_rank = 33 is above the model's dimension (32)"),
        ("{'trials': 0}", "trials = 0 is invalid; it must be an integer >= 1"),
        ("{'trials': 3, 'target_modules': ['query']}", "trials = 3 is only for a projection head"),
        ("{'weight_decay': -1.0}", "weight_decay = -1.0 is invalid"),
    ],
)
def test_settings_that_cannot_work_are_refused_at_submit_and_write_nothing(pairs, config, message):
    before = catalog_snapshot(pairs)
    with pytest.raises(
        Exception, match="jammi: config " + message.replace("(", r"\(").replace(")", r"\)")
    ):
        pairs.sql(
            f"SELECT fine_tune('pairs', 'tiny', ['text_a', 'text_b', 'score'], config := {config})"
        ).fetchall()
    assert catalog_snapshot(pairs) == before


def test_a_succeeded_job_says_which_trial_and_epoch_it_kept_and_why(pairs):
    job = pairs.fine_tune("pairs", "tiny", ["text_a", "text_b", "score"], epochs=2)
    job.wait(timeout=120)
    kept = pairs.sql(
        f"SELECT metrics->>'$.kept.why', metrics->>'$.judged' FROM jammi.jobs WHERE job_id = '{job.job_id}'"
    ).fetchall()[0]
    why, judged = kept  # 40 pairs whose texts recur: too few independent rows to hold out
    assert why.startswith("validation cannot judge: ") and why.endswith(
        "the final weights were kept"
    )
    assert judged == "false"


def test_a_source_of_whitespace_only_texts_is_refused_before_any_job_is_written(db):
    db.sql(
        "CREATE TABLE blank AS SELECT chr(9) || chr(10) AS question, "
        "chr(13) || ' ' || chr(160) || chr(11) AS answer FROM range(40)"
    ).fetchall()
    db.sql("SELECT add_source('blank', 'blank')").fetchall()
    before = catalog_snapshot(db)
    with pytest.raises(
        Exception, match="source .blank. has 40 empty or whitespace-only texts, every"
    ):
        fine_tune(db, "'blank', 'tiny', ['question', 'answer']")
    assert catalog_snapshot(db) == before


def test_a_head_jobs_progress_epoch_and_steps_never_go_back_across_trials(db, monkeypatch):
    from jammi_sql.jobs.runner import JobRunner

    words = "cat dog car bike train plane piano guitar cell gene solar".split()
    db.con.execute(
        "CREATE TABLE scored AS SELECT 'the ' || w[1 + i % 11] || ' ' || w[1 + (i * 3) % 11] || "
        "' ' || i AS text_a, 'a ' || w[1 + i % 11] || ' and ' || w[1 + (i * 5) % 11] AS text_b, "
        "(i % 6)::DOUBLE AS score FROM range(120) r(i), (SELECT ? AS w)",
        [words],
    )
    db.sql("SELECT add_source('scored', 'scored')").fetchall()
    reports, rows = [], []
    record = JobRunner._record_progress

    def recording(self, job_id, p):
        reports.append(p)
        record(self, job_id, p)
        job = self.catalog.get_job(job_id)
        rows.append((job.progress, job.epoch, job.step, job.total_steps))

    monkeypatch.setattr(JobRunner, "_record_progress", recording)
    job = db.fine_tune(  # several trials, early stopping, then the refit: 60 rows validate
        "scored",
        "tiny",
        ["text_a", "text_b", "score"],
        "lora",
        epochs=6,
        trials=4,
        validation_fraction=0.5,
        early_stopping_patience=1,
    )
    job.wait(timeout=120)
    assert len(job.metrics["trials"]) == 4 and "refit" in job.metrics
    assert any(t["stopped_early"] for t in job.metrics["trials"])  # the plan was cut short
    for name in ("epoch", "step", "total_steps"):  # what the run reports
        values = [getattr(r, name) for r in reports]
        assert values == sorted(values), name
    for i, name in enumerate(("progress", "epoch", "step", "total_steps")):  # the job's row
        shown = [row[i] for row in rows]
        assert shown == sorted(shown), name
    assert len({r.total_steps for r in reports}) == 1
    assert rows[-1][0] == 1.0 and rows[-1][2] == rows[-1][3]
    assert job.progress == 1.0


JOBS_AT_ONCE = """
import sys, jammi_sql
db = jammi_sql.connect(sys.argv[1], home=sys.argv[2], precision="fp32")
db.sql(f"SELECT register_model('tiny', '{sys.argv[3]}')").fetchall()
db.con.execute("CREATE TABLE pairs AS SELECT 'the cat ' || i AS text_a, 'a dog ' || i AS text_b, "
               "(i % 2)::DOUBLE AS score FROM range(40) r(i)")
db.sql("SELECT add_source('pairs', 'pairs')").fetchall()
cols = ['text_a', 'text_b', 'score']
jobs = [db.fine_tune('pairs', 'tiny', cols, epochs=1),
        db.fine_tune('pairs', 'tiny', cols, method='lora', target_modules=['query', 'value'], epochs=1),
        db.fine_tune('pairs', 'tiny', cols, method='full', epochs=1)]
print([db.wait_job(j.job_id if hasattr(j, 'job_id') else j) for j in jobs])
"""


def test_jobs_submitted_back_to_back_in_a_fresh_process_all_run(tiny_model, tmp_path):
    """Nothing embedded first: the first job's thread imports transformers while the next
    fine_tune validates its model; both used to race on transformers' lazy imports."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", JOBS_AT_ONCE, str(tmp_path / "j.duckdb"), str(tmp_path / "h")]
        + [str(tiny_model)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "['succeeded', 'succeeded', 'succeeded']"


def test_a_jobs_weights_do_not_depend_on_other_threads_drawing_random_numbers(tiny_model, tmp_path):
    """Jobs train in threads of one process, which share torch's global RNG: with dropout off,
    a job's weights follow from its seed alone (a Ray job's driver once shifted a local job's
    adapters by 0.35 this way)."""
    import json
    import threading

    import torch
    from safetensors.numpy import load_file

    config = json.loads((tiny_model / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (tiny_model / "config.json").write_text(json.dumps(config))
    db = jammi_sql.connect(":memory:", home=str(tmp_path / "home"))
    db.register_model("calm", tiny_model)
    db.con.execute(
        "CREATE TABLE qa AS SELECT 'the ' || w || ' plays' AS anchor, 'a ' || w AS positive FROM (SELECT unnest(?) AS w)",
        [WORDS * 2],
    )
    db.sql("SELECT add_source('qa', 'qa')").fetchall()

    def adapters_job() -> dict:
        settings = {"target_modules": ["query", "value"], "lora_dropout": 0, "epochs": 2}
        job = db.fine_tune(
            "qa",
            "calm",
            ["anchor", "positive"],
            method="lora",
            warmup_steps=0,
            validation_fraction=0,
            batch_size=8,
            **settings,
        )
        assert job.wait(120).status == "succeeded", job.error
        folder = db.home / "models" / job.model_id
        return {k: v for f in folder.glob("*.safetensors") for k, v in load_file(f).items()}

    quiet = adapters_job()
    stop = threading.Event()
    noise = threading.Thread(target=lambda: [torch.rand(64) for _ in iter(stop.is_set, True)])
    noise.start()
    try:
        noisy = adapters_job()
    finally:
        stop.set()
        noise.join()
    db.close()
    assert quiet.keys() == noisy.keys() and quiet
    assert max(float(np.abs(quiet[k] - noisy[k]).max()) for k in quiet) < 1e-6
