-- Reading does not write: what a model runs at (precision, backend) and a base model first
-- used by its path, the bundled one or one in the Hugging Face cache are facts of the process
-- that loaded it, kept in its memory. jammi.models is a view: the stored rows
-- (jammi.model_records, written by register_model, fine_tune and remove_model only) with
-- those facts laid over them.
--
-- jammi_models_in_use() below gives no rows, so any DuckDB client reads jammi.models as the
-- stored rows. A connection jammi installed into has a TEMP macro of the same name (DuckDB
-- resolves TEMP names first) over the models its process loaded: see
-- jammi_sql/functions/declarations.py, models_in_use. Same columns, same types.
ALTER TABLE jammi.models RENAME TO model_records;

CREATE OR REPLACE MACRO jammi.jammi_models_in_use() AS TABLE
SELECT NULL::VARCHAR AS model_id, NULL::VARCHAR AS origin, NULL::INTEGER AS dimensions,
       NULL::VARCHAR AS artifact_path, NULL::VARCHAR AS precision, NULL::VARCHAR AS backend,
       NULL::TIMESTAMP AS loaded_at
WHERE false;

CREATE OR REPLACE VIEW jammi.models AS
WITH loaded AS (SELECT * FROM jammi_models_in_use())
SELECT m.* REPLACE (coalesce(l.precision, m.precision) AS precision,
                    coalesce(l.backend, m.backend) AS backend)
FROM jammi.model_records m LEFT JOIN loaded l ON l.model_id = m.model_id
UNION ALL BY NAME
SELECT l.model_id, 'base' AS kind, l.origin, 'text_embedding' AS task, l.dimensions,
       l.artifact_path, l.precision, l.backend, l.loaded_at AS created_at
FROM loaded l
WHERE l.origin IS NOT NULL AND l.model_id NOT IN (SELECT model_id FROM jammi.model_records);
