"""Past one machine: the Ray cluster a job or a backfill hands its heavy part to.

``cluster`` finds the cluster (or says how to install Ray); ``backfill`` embeds rows on Ray
Data actors running the inference encoder. May import inference, catalog, artifacts and the
leaves; Ray itself is imported only when a call asks for it (extra ``jammi-sql[ray]``).
"""
