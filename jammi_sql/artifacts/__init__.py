"""Artifacts: the only code that knows the on-disk layout (model folders, jobs/, models/,
checkpoints).
"""
