-- Where training data came from: sources that jammi built (mine_hard_negatives), and what
-- each fine-tuned model was trained on, through them.
CREATE TABLE IF NOT EXISTS jammi.source_lineage (
    source      VARCHAR NOT NULL,      -- the source jammi built
    built_by    VARCHAR NOT NULL,      -- the function that built it: mine_hard_negatives
    from_source VARCHAR NOT NULL,      -- the source it was built from
    model_id    VARCHAR,               -- the model that ranked the candidates
    corpus      VARCHAR,               -- the source the negatives came from (NULL: the positives)
    settings    JSON,                  -- the function's other arguments
    rows_written BIGINT,
    created_at  TIMESTAMP NOT NULL DEFAULT current_timestamp
);

CREATE OR REPLACE VIEW jammi.model_lineage AS
SELECT m.model_id, m.base_model_id, j.job_id, j.source AS trained_on, j.columns,
       l.built_by, l.from_source, l.model_id AS mined_with, l.corpus, l.settings
FROM jammi.models m
JOIN jammi.jobs j ON j.job_id = m.job_id
LEFT JOIN jammi.source_lineage l ON l.source = j.source;
