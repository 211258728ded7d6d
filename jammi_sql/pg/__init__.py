"""The PostgreSQL-wire server (`jammi-sql serve`): security, client sessions on their own
cursors, PostgreSQL types and errors, COPY, psql's describe queries. Protocol: pg_mimic.
"""
