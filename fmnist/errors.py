"""The project's own errors: each one ends a stage with its message and exit status 1."""


class PipelineError(Exception):
    """A failure the user can act on; the message says what went wrong and how to fix it."""


class ParamsError(PipelineError, ValueError):
    """params.yaml has an unknown key, a wrong type or a value out of range."""


class DataError(PipelineError, ValueError):
    """A data file is missing, truncated, corrupt or of the wrong shape."""


class FetchError(PipelineError):
    """No source could provide the data set files."""


class TrainingError(PipelineError):
    """Training failed in a way that makes the model unusable (for example a NaN loss)."""
