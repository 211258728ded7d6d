"""Fine-tuning on Ray Train (config workers > 1): real Ray, a local 2-CPU cluster started once.

Equal weights need the same random draws in one process and in the workers, so the model's
dropout and LoRA's are off here (with dropout on, each worker draws its own masks).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import catalog_snapshot

ray = pytest.importorskip("ray")
# make test runs Ray's tests in a pytest process of their own (marker ray), after the rest
pytestmark = pytest.mark.ray

WORDS = "cat dog car bike train plane man woman child guitar piano food".split()
STEADY = {"warmup_steps": 0, "validation_fraction": 0, "lora_dropout": 0, "seed": 7}
ADAPTERS = {"method": "lora", "target_modules": ["query", "value"], "batch_size": 8}
FULL = {"method": "full", "batch_size": 8}
ENCODER = {"target_modules": ["query", "value"]}  # the Python API's config (method: 'lora')


@pytest.fixture(scope="module", autouse=True)
def local_cluster():
    """One local Ray instance for the module (starting one takes seconds)."""
    from jammi_sql.scale.cluster import connect

    address = os.environ.pop("RAY_ADDRESS", None)
    yield connect()
    ray.shutdown()
    if address is not None:
        os.environ["RAY_ADDRESS"] = address


@pytest.fixture
def calm(tiny_model, tmp_path):
    """A database with the tiny model, its dropout off, as 'calm', and (anchor, positive) pairs."""
    import jammi_sql

    # a copy: the shared tiny model's folder may already be loaded (and cached) in this process
    calm_model = tmp_path / "calm"
    shutil.copytree(tiny_model, calm_model)
    config = json.loads((calm_model / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (calm_model / "config.json").write_text(json.dumps(config))
    db = jammi_sql.connect(":memory:", home=str(tmp_path / "home"))
    db.register_model("calm", calm_model)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(48):
        a, b = rng.choice(WORDS, 2, replace=False)
        rows.append((f"the {a} plays {i % 5}", f"a {a} runs" if i % 3 else f"a {b} eats"))
    db.con.execute("CREATE TABLE qa (anchor VARCHAR, positive VARCHAR)")
    db.con.executemany("INSERT INTO qa VALUES (?, ?)", rows)
    db.sql("SELECT add_source('qa', 'qa')").fetchall()
    yield db
    db.close()


def submit(db, shape: dict, **config) -> str:
    method = shape.get("method", "lora")
    settings = {**STEADY, **{k: v for k, v in shape.items() if k != "method"}, **config}
    return db.sql(
        "SELECT fine_tune('qa', 'calm', ['anchor', 'positive'], method := ?, config := ?)",
        params=[method, json.dumps(settings)],
    ).fetchall()[0][0]


def job_row(db, job_id: str) -> dict:
    cur = db.con.execute("SELECT * FROM jammi.jobs WHERE job_id = ?", [job_id])
    names = [d[0] for d in cur.description]
    return dict(zip(names, cur.fetchall()[0], strict=True))


def weights(db, job_id: str) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    model_id = job_row(db, job_id)["model_id"]
    folder = Path(db.home) / "models" / model_id
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update({f"{f.name}:{k}": v for k, v in load_file(f).items()})
    assert out, f"no weights in {folder}"
    return out


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


@pytest.mark.parametrize(
    "shape, validation",
    [
        (ADAPTERS, 0.0),
        ({**FULL, "batch_size": 11, "gradient_accumulation_steps": 2}, 0.25),
    ],
    # full: validated on every worker after each epoch; 34 training rows in batches of 11 leave
    # a last batch of one row, so one worker embeds none of it; 2 batches a step
    ids=["encoder adapters", "full, validated, accumulated, a worker without rows"],
)
def test_two_ray_workers_reach_the_weights_of_one_process(calm, shape, validation):
    one = submit(calm, shape, epochs=2, validation_fraction=validation)
    two = submit(calm, shape, epochs=2, validation_fraction=validation, workers=2)
    assert calm.wait_job(one, 120) == "succeeded"
    assert calm.wait_job(two, 240) == "succeeded", job_row(calm, two)["error"]
    rows = [job_row(calm, job) for job in (one, two)]
    shown = [(r["progress"], r["step"], r["total_steps"]) for r in rows]
    assert shown[0] == shown[1] == (1.0, 12 if not validation else 4, shown[0][2])
    metrics = [json.loads(r["metrics"]) for r in rows]
    assert (metrics[0]["workers"], metrics[1]["workers"]) == (1, 2)
    assert metrics[1]["kept"] == metrics[0]["kept"]
    if validation:
        assert rows[1]["val_loss"] == pytest.approx(rows[0]["val_loss"], abs=1e-5)
    diff = max_diff(weights(calm, one), weights(calm, two))
    print(f"max abs weight difference, 1 process vs 2 Ray workers ({shape['method']}): {diff:.3g}")
    assert diff < 1e-5


def train_workers() -> list:
    """This test process's Ray Train worker processes (ray::RayTrainWorker...)."""
    import psutil

    found = []
    for p in psutil.Process(os.getpid()).children(recursive=True):
        try:
            if "RayTrainWorker" in " ".join(p.cmdline()):
                found.append(p)
        except psutil.Error:
            pass
    return found


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_killed_worker_interrupts_the_job_and_resume_ends_where_one_process_does(calm):
    long = dict(epochs=3, batch_size=4)  # 36 steps, a checkpoint every few
    one = submit(calm, ADAPTERS, **long)
    assert calm.wait_job(one, 120) == "succeeded"
    two = submit(calm, ADAPTERS, **long, workers=2)
    wait_for(lambda: (job_row(calm, two)["step"] or 0) >= 12, 120, "12 steps")
    victim = train_workers()[-1]
    victim.send_signal(signal.SIGKILL)
    assert calm.wait_job(two, 60) == "interrupted", job_row(calm, two)["error"]
    row = job_row(calm, two)
    assert "Ray Train worker was lost" in row["error"] and "resume_job" in row["error"]
    assert 12 <= row["step"] < 36
    assert calm.sql(f"SELECT resume_job('{two}')").fetchall()[0][0] == two
    assert calm.wait_job(two, 240) == "succeeded", job_row(calm, two)["error"]
    # rounding differences grow with the steps (1.7e-6 after 12; 1.28e-5 after 144, as for an
    # uninterrupted run on 2 workers); a resume that lost or repeated a step, or the
    # optimizer's state, would be off by about one step, 1e-3
    diff = max_diff(weights(calm, one), weights(calm, two))
    print(f"max abs weight difference after a kill and a resume, 36 steps: {diff:.3g}")
    assert diff < 1e-4


def test_cancel_stops_the_ray_workers_and_keeps_no_model(calm):
    job = submit(calm, FULL, epochs=500, workers=2)
    wait_for(lambda: (job_row(calm, job)["step"] or 0) > 0, 120, "a step")
    assert calm.sql(f"SELECT cancel_job('{job}')").fetchall()[0][0] == "cancelled"
    row = job_row(calm, job)
    assert (row["status"], row["model_id"]) == ("cancelled", None)
    assert calm.sql("SELECT count(*) FROM jammi.models WHERE kind = 'fine_tuned'").fetchall() == [
        (0,)
    ]
    wait_for(lambda: not train_workers(), 30, "the workers to end")


@pytest.mark.parametrize(
    "config, message",
    [
        ({"workers": 0}, "config workers = 0 is invalid; it must be an integer >= 1"),
        ({"workers": -2}, "config workers = -2 is invalid; it must be an integer >= 1"),
        ({"workers": 1.5}, "config workers = 1.5 is invalid; it must be an integer >= 1"),
        ({"workers": "two"}, "config workers = 'two' is invalid; it must be an integer >= 1"),
        ({"workers": 3}, "config workers = 3 is more than the Ray cluster has (2 CPUs, 0 GPUs"),
        (
            {"workers": 2, "mini_batch_size": 4},
            "config mini_batch_size (GradCache) does not combine with workers = 2",
        ),
        (
            {"workers": 2, "target_modules": []},
            "config workers = 2 trains encoder adapters (target_modules) or method 'full'",
        ),
    ],
)
def test_a_bad_workers_is_refused_at_submit_and_writes_nothing(calm, config, message):
    from jammi_sql.errors import JammiError

    before = catalog_snapshot(calm)
    with pytest.raises(JammiError) as e:
        calm.fine_tune("qa", "calm", ["anchor", "positive"], config={**ENCODER, **config})
    assert str(e.value).startswith("jammi: ") and message in str(e.value)
    assert catalog_snapshot(calm) == before


def test_workers_without_ray_installed_say_how_to_install_it(calm, monkeypatch):
    from jammi_sql.errors import MissingPackageError

    before = catalog_snapshot(calm)
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(MissingPackageError, match=r"pip install 'jammi-sql\[ray\]'"):
        calm.fine_tune("qa", "calm", ["anchor", "positive"], config={**ENCODER, "workers": 2})
    assert catalog_snapshot(calm) == before


def test_an_unreachable_ray_address_is_refused_at_submit(calm, monkeypatch):
    import socket

    from jammi_sql.scale.cluster import ClusterError

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    before = catalog_snapshot(calm)
    start = time.monotonic()
    with pytest.raises(ClusterError, match=f"cannot reach a Ray cluster at '127.0.0.1:{port}'"):
        calm.fine_tune("qa", "calm", ["anchor", "positive"], config={**ENCODER, "workers": 2})
    assert time.monotonic() - start < 10
    assert catalog_snapshot(calm) == before
