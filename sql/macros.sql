-- Named, defaulted arguments over the Python UDFs. TEMP: installed per connection, so the
-- database file stays readable by any DuckDB client.
CREATE OR REPLACE TEMP MACRO add_source(name, url, format := NULL) AS
    jammi_add_source(name, url, format);

CREATE OR REPLACE TEMP MACRO remove_source(name) AS
    jammi_remove_source(name);

CREATE OR REPLACE TEMP MACRO fine_tune(source, base_model, columns, method := 'lora',
                                       task := 'text_embedding', config := NULL) AS
    jammi_fine_tune(source, base_model, columns, method, task, to_json(config)::VARCHAR);

CREATE OR REPLACE TEMP MACRO wait_job(job_id, timeout_s := NULL) AS
    jammi_wait_job(job_id, timeout_s);

-- Top-k by cosine similarity over the table generate_text_embeddings built.
CREATE OR REPLACE TEMP MACRO semantic_search(source, model, query, k := 10) AS TABLE
    SELECT key, column_name, text,
           list_cosine_similarity(embedding::FLOAT[], jammi_query_vector(model, query)) AS score
    FROM query_table(jammi_embedding_table(source, model))
    ORDER BY score DESC
    LIMIT k;

CREATE OR REPLACE TEMP MACRO evaluate_similarity(model, source, columns := ['text_a', 'text_b', 'score']) AS
    jammi_evaluate_similarity(model, source, columns);

CREATE OR REPLACE TEMP MACRO evaluate_retrieval(model, queries, corpus, qrels, k := 10, per_query := NULL) AS
    jammi_evaluate_retrieval(model, queries, corpus, qrels, k, per_query);
