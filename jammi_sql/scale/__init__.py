"""Past one machine: the Ray cluster a job or a backfill hands its heavy part to."""
