"""Tools that work on DVC's results, beside the pipeline: no stage imports them.

review (``make review``), study (``make exp``, ``make study``), staleness (``make check-lock``,
``make check-pushed``), retrain (``make check-retrain``), run_cache (``make push``), repro
(``make repro``), plots_page (``make setup``: the page ``dvc plots show`` writes, drawn offline),
dvc_cli, the one way they run ``dvc``, and workspace: temporary copies of the pipeline, as a
fresh clone would be, for the benchmark and the tests.
"""
