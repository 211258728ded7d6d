-- Embed a table and search it, with the bundled model.
-- Run: jammi-sql -f sql/examples/01_embed_and_search.sql
CREATE TABLE papers AS SELECT * FROM (VALUES
    (1, 'Quantum error correction with surface codes'),
    (2, 'A lithium battery cathode that lasts longer'),
    (3, 'Deep learning for protein structure prediction'),
    (4, 'Superconducting qubits at higher temperatures'),
    (5, 'Solar cells from perovskite crystals')
) t(id, title);

SELECT add_source('papers', 'papers') AS added;

SELECT generate_text_embeddings('papers', 'all-MiniLM-L6-v2', ['title'], 'id') AS rows_written;

SELECT key AS id, round(score, 3) AS score, text
FROM semantic_search('papers', 'all-MiniLM-L6-v2', 'quantum computing hardware', k := 2);

SELECT round(array_cosine_similarity(embed('all-MiniLM-L6-v2', 'energy storage'),
                                     embed('all-MiniLM-L6-v2', title)), 3) AS similarity, title
FROM papers ORDER BY similarity DESC LIMIT 2;
