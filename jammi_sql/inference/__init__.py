"""Inference: the encoder (tokenize, forward, pool, normalize), the model loader and its cache,
precision, and embedding texts by model id.
"""
