-- The precision a model's weights run at once loaded for inference: fp32, bf16 or fp16
-- (NULL until it has been loaded). Written each time a connection loads the model.
ALTER TABLE jammi.models ADD COLUMN IF NOT EXISTS precision VARCHAR;

-- Long texts: how many texts the last run of generate_text_embeddings cut at the model's
-- limit, and the token windows a chunked table was built with (NULL: one row per text).
ALTER TABLE jammi.embedding_tables ADD COLUMN IF NOT EXISTS truncated BIGINT;
ALTER TABLE jammi.embedding_tables ADD COLUMN IF NOT EXISTS chunk_tokens INTEGER;
ALTER TABLE jammi.embedding_tables ADD COLUMN IF NOT EXISTS chunk_overlap INTEGER;
