-- Training from documents: mine hard negatives for help-centre questions from the articles
-- already embedded, then train on (question, article, negative) with symmetric InfoNCE.
-- Run: jammi-sql -f sql/examples/03_hard_negatives.sql (from any folder: a relative path in a
-- script that the current folder lacks is looked up beside the script)
CREATE TABLE kb_questions AS FROM read_csv('../../jammi_sql/samples/kb_questions.csv');
CREATE TABLE kb_articles AS FROM read_csv('../../jammi_sql/samples/kb_articles.csv');

SELECT add_source('kb_pairs', $$
    SELECT q.question, a.title || '. ' || a.body AS article
    FROM kb_questions q JOIN kb_articles a ON a.id = q.article_id
    WHERE q.article_id % 4 = 1$$, format := 'query') AS added;
SELECT add_source('kb_articles', $$SELECT id::VARCHAR AS doc_id, title || '. ' || body AS text
    FROM kb_articles$$, format := 'query') AS added;

-- The corpus is embedded once; mining reads these vectors instead of embedding it again.
SELECT generate_text_embeddings('kb_articles', 'all-MiniLM-L6-v2', ['text'], 'doc_id') AS rows;

-- For each question, the article the model ranks highest that is not its answer and scores at
-- least 5% below it (the NV-Retriever setting); the summary counts questions left without one.
SELECT mine_hard_negatives('kb_pairs', 'all-MiniLM-L6-v2', 'question', 'article',
                           corpus := 'kb_articles', relative_margin := 0.05) AS mined;
SELECT anchor, left(negative, 60) AS negative, round(positive_score, 3) AS positive_score,
       round(negative_score, 3) AS negative_score
FROM jammi.mined_kb_pairs_hard_negatives LIMIT 3;

-- In-batch negatives plus the mined one, both directions (symmetric InfoNCE).
SET VARIABLE job = (SELECT fine_tune('kb_pairs_hard_negatives', 'all-MiniLM-L6-v2',
    ['anchor', 'positive', 'negative'],
    config := {'embedding_loss': 'info_nce', 'model_name': 'helpdesk-hard'}));
SELECT wait_job(getvariable('job')) AS status;
SELECT status, model_id, metrics->>'$.kept.why' AS kept FROM jammi.jobs
WHERE job_id = getvariable('job');
