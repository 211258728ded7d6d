#!/usr/bin/env bash
# Create .venv-peers: the separate virtual environment in which
# benchmarks/search_peers.py measures peer engines (LanceDB, DuckDB + vss HNSW).
# Idempotent: does nothing when the stamp matches the pins below.
#
#   bash benchmarks/peer_venv.sh            # create / reuse
#   PEER_VENV=/some/dir bash benchmarks/peer_venv.sh
#   bash benchmarks/peer_venv.sh --force    # rebuild
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${PEER_VENV:-$ROOT/.venv-peers}"
PYTHON="${PYTHON:-python3}"

# Exact versions verified together (Python 3.11, linux x86_64).
#  - duckdb-extension-vss ships vss.duckdb_extension for exactly its own duckdb
#    version (extensions/v1.5.5/), loaded with LOAD '<path>': no extension server.
#  - pandas: without it duckdb's Python client binds list parameters ~40x slower.
PINS=(
  "numpy==2.4.6"
  "pyarrow==26.0.1"
  "pandas==3.1.1"
  "lancedb==0.40.0"
  "duckdb==1.5.5"
  "duckdb-extension-vss==1.5.5"
)

STAMP="$VENV/.peers-stamp"
WANT="$(printf '%s\n' "${PINS[@]}")"

if [[ "${1:-}" == "--force" ]]; then
  rm -rf "$VENV"
elif [[ -f "$STAMP" ]] && [[ "$(cat "$STAMP")" == "$WANT" ]] && [[ -x "$VENV/bin/python" ]]; then
  echo "peer venv up to date: $VENV"
  exit 0
fi

if [[ ! -x "$VENV/bin/python" ]]; then
  "$PYTHON" -m venv "$VENV"
fi
# Keep the venv out of git even where .gitignore does not name it.
printf '*\n' > "$VENV/.gitignore"

"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PINS[@]}"

# Check: libraries import, versions match, vss loads and builds an HNSW index.
"$VENV/bin/python" - <<'PY'
import os
import duckdb, duckdb_extension_vss, lancedb, numpy, pandas, pyarrow
ext = os.path.join(os.path.dirname(duckdb_extension_vss.__file__), "extensions",
                   f"v{duckdb.__version__}", "vss.duckdb_extension")
con = duckdb.connect()
con.execute(f"LOAD '{ext}'")
con.execute("CREATE TABLE t AS SELECT i AS id, [i, 1, 0]::FLOAT[3] AS v FROM range(10) r(i)")
con.execute("CREATE INDEX t_hnsw ON t USING HNSW (v) WITH (metric = 'cosine')")
plan = con.execute("EXPLAIN SELECT id FROM t ORDER BY "
                   "array_cosine_distance(v, [1, 1, 0]::FLOAT[3]) LIMIT 3").fetchall()
assert "HNSW_INDEX_SCAN" in plan[0][1] or "HNSW Index" in plan[0][1], plan
print("peer venv ok: lancedb", lancedb.__version__, "| duckdb", duckdb.__version__,
      "+ vss | numpy", numpy.__version__, "| pyarrow", pyarrow.__version__,
      "| pandas", pandas.__version__)
PY

printf '%s\n' "$WANT" > "$STAMP"
