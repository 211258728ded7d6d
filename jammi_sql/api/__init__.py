"""The Python API: Database (mirrors the SQL functions), a job's handle, and relations that
raise JammiError. May import every layer below the front ends.
"""
