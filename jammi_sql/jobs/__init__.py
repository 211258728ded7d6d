"""The job runner: submit, worker thread, progress, cancel, resume. No torch at import: the
training engine is loaded when a job starts.
"""
