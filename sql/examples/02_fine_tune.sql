-- Fine-tune a projection head on scored pairs, wait for it, compare it with its base.
-- Run: jammi-sql -f sql/examples/02_fine_tune.sql
CREATE TABLE pairs AS SELECT * FROM (VALUES
    ('the invoice was charged twice', 'I was billed two times', 5.0),
    ('the invoice was charged twice', 'the app is slow to open', 0.0),
    ('reset my password', 'I cannot log in, need a new password', 4.5),
    ('reset my password', 'export all my files', 0.5),
    ('sync is stuck', 'files do not update on my phone', 4.0),
    ('sync is stuck', 'refund the annual plan', 0.0),
    ('share a folder with a partner', 'give an outside company read access', 4.5),
    ('share a folder with a partner', 'battery drains fast', 0.0),
    ('restore a deleted file', 'bring back the spreadsheet I removed', 5.0),
    ('restore a deleted file', 'calendar events are missing', 0.5),
    ('the api returns 429', 'too many requests from our script', 4.5),
    ('the api returns 429', 'where is the audit log', 0.5),
    ('suspicious sign-in alert', 'a login from a country I never visited', 4.5),
    ('suspicious sign-in alert', 'photos imported twice', 0.0),
    ('app uses a lot of cpu', 'the client keeps a core busy', 4.0),
    ('app uses a lot of cpu', 'cancel my subscription', 0.0)
) t(text_a, text_b, score);

SELECT add_source('pairs', 'pairs') AS added;

SET VARIABLE job = (SELECT fine_tune('pairs', 'all-MiniLM-L6-v2', ['text_a', 'text_b', 'score'],
                                     config := {'epochs': 2, 'model_name': 'example-head'}));

SELECT wait_job(getvariable('job')) AS status;

SELECT status, progress, loss, model_id FROM jammi.jobs WHERE job_id = getvariable('job');

SELECT len(embed('example-head', 'refund please')) AS dimensions;

SELECT 'base' AS model, evaluate_similarity('all-MiniLM-L6-v2', 'pairs') AS result
UNION ALL
SELECT 'fine-tuned', evaluate_similarity('example-head', 'pairs');
