-- The jammi catalog: ordinary tables any DuckDB client can read.
CREATE TABLE IF NOT EXISTS jammi.sources (
    name        VARCHAR NOT NULL,
    kind        VARCHAR NOT NULL,      -- 'file', 'table' or 'query'
    url         VARCHAR NOT NULL,      -- file path or glob, table name, or SQL text
    format      VARCHAR NOT NULL,      -- csv, parquet, json, table, query
    columns     VARCHAR[] NOT NULL,
    column_types VARCHAR[] NOT NULL,
    created_at  TIMESTAMP NOT NULL DEFAULT current_timestamp
);

CREATE TABLE IF NOT EXISTS jammi.models (
    model_id      VARCHAR NOT NULL,
    kind          VARCHAR NOT NULL,    -- 'base' or 'fine_tuned'
    origin        VARCHAR NOT NULL,    -- bundled, registered, path, hf_cache, job
    base_model_id VARCHAR,
    adapter_type  VARCHAR,             -- projection_head, encoder_adapters, full, or NULL for a base
    task          VARCHAR NOT NULL DEFAULT 'text_embedding',
    dimensions    INTEGER,
    artifact_path VARCHAR,
    job_id        VARCHAR,
    metrics       JSON,
    created_at    TIMESTAMP NOT NULL DEFAULT current_timestamp
);

CREATE TABLE IF NOT EXISTS jammi.jobs (
    job_id        VARCHAR NOT NULL,
    status        VARCHAR NOT NULL,    -- queued, running, succeeded, failed, cancelled, interrupted
    source        VARCHAR NOT NULL,
    base_model    VARCHAR NOT NULL,
    method        VARCHAR NOT NULL,
    task          VARCHAR NOT NULL,
    columns       VARCHAR[] NOT NULL,
    loss          VARCHAR NOT NULL,
    config        JSON NOT NULL,
    progress      DOUBLE NOT NULL DEFAULT 0,
    epoch         INTEGER,
    step          INTEGER,
    total_steps   INTEGER,
    train_loss    DOUBLE,
    val_loss      DOUBLE,
    best_val_loss DOUBLE,
    model_id      VARCHAR,
    error         VARCHAR,
    metrics       JSON,
    created_at    TIMESTAMP NOT NULL DEFAULT current_timestamp,
    started_at    TIMESTAMP,
    finished_at   TIMESTAMP,
    updated_at    TIMESTAMP NOT NULL DEFAULT current_timestamp
);

CREATE TABLE IF NOT EXISTS jammi.job_metrics (
    job_id VARCHAR NOT NULL,
    step   INTEGER,
    epoch  INTEGER,
    split  VARCHAR NOT NULL,           -- train, val
    name   VARCHAR NOT NULL,
    value  DOUBLE,
    "at"   TIMESTAMP NOT NULL DEFAULT current_timestamp
);

CREATE TABLE IF NOT EXISTS jammi.embedding_tables (
    table_name VARCHAR NOT NULL,
    source     VARCHAR NOT NULL,
    model_id   VARCHAR NOT NULL,
    columns    VARCHAR[] NOT NULL,
    key        VARCHAR NOT NULL,
    dimensions INTEGER NOT NULL,
    row_count  BIGINT NOT NULL,
    updated_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);
