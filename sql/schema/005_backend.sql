-- What runs a loaded model's embeddings: 'torch' or 'onnxruntime' (precision 'onnx' or
-- 'onnx-int8'); NULL until it has been loaded. Written with precision.
ALTER TABLE jammi.models ADD COLUMN IF NOT EXISTS backend VARCHAR;
