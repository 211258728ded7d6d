"""Data: named sources, training-data checks, and sources of training data built from others
(pairs from documents, hard negatives, questions written for documents).
"""
