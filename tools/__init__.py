"""Tools that work on DVC's results, beside the pipeline: no stage imports them."""
