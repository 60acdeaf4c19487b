"""The values each option may take: one source for the library, the artifact and the CLI.

A module without imports, so that the command line can build its ``click.Choice``
lists from it before any heavy library is loaded.
"""

from __future__ import annotations

MODES = ("standard", "scale", "center", "minmax")  # (x-mean)/std, x/std, x-mean, (x-min)/(max-min)
DTYPES = ("preserve", "float32", "float64")  # the output type of a transformed feature
INF_POLICIES = ("error", "null")  # infinite values: refused, or missing
UNSEEN = ("global", "null", "error")  # a key not seen at fit time: global stats, missing, refused
DDOFS = (0, 1)  # population std (scikit-learn), sample std (Spark)
EXPORT_FORMATS = ("sql", "onnx")  # zscore export: a SELECT, or an ONNX graph
SQL_DIALECTS = ("duckdb", "postgres", "bigquery", "spark")  # the engines the SQL export speaks
# A table input (pipeline.tables): recognized, loose Parquet always, or said to be a table.
INPUT_FORMATS = ("auto", "parquet", "delta", "iceberg")
OUTPUT_FORMATS = ("auto", "parquet", "delta", "iceberg")  # auto: Delta for a Delta input
# --group-by: refuse past this many distinct keys (100,000 keys of 4 features: a 41 MB artifact)
MAX_KEYS = 100_000
