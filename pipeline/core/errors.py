"""The error every command prints as one line, never a traceback."""


class PipelineError(RuntimeError):
    """An expected failure of a command (missing input, model or stage output):
    the command line prints its message, never a traceback."""
