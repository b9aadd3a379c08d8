"""Errors that the CLI, the server and the agent report to people and models.

Every error carries a message that names the problem; callers show `str(err)` as is.
"""


class TirAgentError(Exception):
    """Base class of every error this project raises on purpose."""


class ImageError(TirAgentError, ValueError):
    """An image could not be read, decoded or accepted."""


class ToolNotFoundError(TirAgentError, LookupError):
    """No tool (or degradation, or metric) is registered under the requested name."""


class ParameterError(TirAgentError, ValueError):
    """A tool's parameters are missing, of the wrong type or out of range."""


class ToolTimeoutError(TirAgentError, TimeoutError):
    """A tool call did not finish within its time limit."""


class ToolExecutionError(TirAgentError, RuntimeError):
    """A tool raised while processing an image."""


class ServerBusyError(TirAgentError, RuntimeError):
    """The server is past its limit of calls in flight (or of calls waiting for one model): retry later."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


RETRY_AFTER_META = "tir-agent/retry_after_s"
"""Key of the retry-after hint (seconds) in a busy error result's ``_meta``."""


def did_you_mean(name: str, choices: list[str]) -> str:
    """A hint naming the closest registered names, or the full list when none is close."""
    import difflib

    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    if close:
        return f"did you mean {', '.join(repr(c) for c in close)}?"
    return f"known: {', '.join(sorted(choices))}"
