-- The precision a model's weights run at once loaded for inference: fp32, bf16 or fp16
-- (NULL until it has been loaded). Written each time a connection loads the model.
ALTER TABLE jammi.models ADD COLUMN IF NOT EXISTS precision VARCHAR;
