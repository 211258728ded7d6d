-- Pairs with no questions at all: build training pairs from the help-centre articles alone
-- (each title -> its body, and neighbouring passages of each body), then fine-tune on them.
-- Run: jammi-sql -f sql/examples/04_pairs_from_documents.sql (from any folder: a relative path in
-- a script that the current folder lacks is looked up beside the script)
SELECT add_source('articles', '../../jammi_sql/samples/kb_articles.csv') AS added;

-- Each title is a short, query-like text for the body it names.
SELECT pairs_from_documents('articles', 'body', title := 'title') AS built;

-- Without titles: windows of 24 tokens (the model's tokenizer), each paired with the next one.
SELECT pairs_from_documents('articles', 'body', model := 'all-MiniLM-L6-v2', chunk_tokens := 24,
                            output := 'article_passages') AS built;
SELECT left(anchor, 50) AS anchor, left(positive, 50) AS positive
FROM jammi.pairs_article_passages LIMIT 3;
SELECT source, built_by, from_source, model_id, rows_written FROM jammi.source_lineage;

SET VARIABLE job = (SELECT fine_tune('articles_pairs', 'all-MiniLM-L6-v2', ['anchor', 'positive'],
                                     config := {'model_name': 'helpdesk-titles'}));
SELECT wait_job(getvariable('job')) AS status;
SELECT status, model_id, metrics->>'$.kept.why' AS kept FROM jammi.jobs
WHERE job_id = getvariable('job');
