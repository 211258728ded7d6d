-- Fine-tune on the shipped help-centre sample, then compare base and fine-tuned retrieval on
-- questions about articles the job never saw (every fourth article is held out).
-- Run: jammi-sql -f sql/examples/02_fine_tune.sql (from any folder: a relative path in a script
-- that the current folder lacks is looked up beside the script)
CREATE TABLE kb_questions AS FROM read_csv('../../jammi_sql/samples/kb_questions.csv');
CREATE TABLE kb_articles AS FROM read_csv('../../jammi_sql/samples/kb_articles.csv');

SELECT add_source('train_pairs', $$
    SELECT q.question, a.title || '. ' || a.body AS article
    FROM kb_questions q JOIN kb_articles a ON a.id = q.article_id
    WHERE q.article_id % 4 <> 0$$, format := 'query') AS added;

-- Every default: a projection head that tries a few settings on cached vectors.
SET VARIABLE job = (SELECT fine_tune('train_pairs', 'all-MiniLM-L6-v2', ['question', 'article'],
                                     config := {'model_name': 'helpdesk-head'}));

SELECT wait_job(getvariable('job')) AS status;

SELECT status, model_id, metrics->>'$.kept.why' AS kept
FROM jammi.jobs WHERE job_id = getvariable('job');

-- What the job tried (one row per trial) and how each scored on its validation split.
PIVOT (SELECT step AS trial, name, round(value, 5) AS value FROM jammi.job_metrics
       WHERE job_id = getvariable('job') AND split = 'trial')
ON name USING first(value) ORDER BY trial;

-- The held-out comparison.
SELECT add_source('heldout_questions', $$SELECT id::VARCHAR AS query_id, question AS text
    FROM kb_questions WHERE article_id % 4 = 0$$,
    format := 'query') AS added;
SELECT add_source('articles', $$SELECT id::VARCHAR AS doc_id, title || '. ' || body AS text
    FROM kb_articles$$, format := 'query') AS added;
SELECT add_source('answers', $$SELECT id::VARCHAR AS query_id, article_id::VARCHAR AS doc_id,
    1 AS score FROM kb_questions$$, format := 'query') AS added;

SELECT model, round(r.ndcg_at_10, 4) AS ndcg_at_10, round(r.recall_at_1, 4) AS recall_at_1,
       r.n_queries
FROM (VALUES ('all-MiniLM-L6-v2'), ('helpdesk-head')) m(model),
     LATERAL (SELECT evaluate_retrieval(m.model, 'heldout_questions', 'articles', 'answers') AS r);
