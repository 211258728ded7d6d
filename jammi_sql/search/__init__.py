"""Search: materialized embedding tables and the searches over them."""
