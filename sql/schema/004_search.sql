-- Search: each build of an embedding table bumps its generation; the vector index and the
-- keyword index kept beside it (files under <home>/indexes/) record the generation they
-- hold, so an index that missed a build is seen as stale and caught up, never used as is.
ALTER TABLE jammi.embedding_tables ADD COLUMN IF NOT EXISTS generation BIGINT;
-- 'none' or 'hnsw'; 'ready', 'stale' or 'building'; its size on disk; its settings (NULL: auto)
ALTER TABLE jammi.embedding_tables ADD COLUMN IF NOT EXISTS index_kind VARCHAR;
ALTER TABLE jammi.embedding_tables ADD COLUMN IF NOT EXISTS index_state VARCHAR;
ALTER TABLE jammi.embedding_tables ADD COLUMN IF NOT EXISTS index_bytes BIGINT;
ALTER TABLE jammi.embedding_tables ADD COLUMN IF NOT EXISTS index_settings JSON;
-- whether a BM25 keyword index of the table's texts is built (keyword_search, hybrid_search)
ALTER TABLE jammi.embedding_tables ADD COLUMN IF NOT EXISTS keyword_index BOOLEAN;
