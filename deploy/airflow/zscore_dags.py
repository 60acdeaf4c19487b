"""zscore's two production DAGs, running zscore in the Airflow worker (see zscore_patterns.py).

- `zscore_training_set`: one fit over a window, the window normalized with it, and a
  `training_set.json` manifest written last.
- `zscore_daily`: each new day normalized with the production training set's artifact,
  behind a drift gate on that day's own statistics.

Copy this file, `zscore_patterns.py` and `zscore_airflow.py` into the DAGs folder.
Works with Airflow 2.10 and 3.x; see docs/airflow.md.
"""

from __future__ import annotations

from zscore_patterns import daily_dag, training_set_dag

training_set = training_set_dag("zscore_training_set")
daily = daily_dag("zscore_daily")
