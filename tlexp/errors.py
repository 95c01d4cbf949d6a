"""The exception types of tlexp. Only the CLI turns them into exit codes."""


class TlexpError(Exception):
    """Base class: a problem the user can act on, reported as one line."""


class ConfigError(TlexpError):
    """A config value or option is unknown, malformed or out of range."""


class DataError(TlexpError):
    """The data named by --data cannot be loaded or split."""


class BackboneError(TlexpError):
    """The backbone, its weights or an unfreeze depth cannot be used."""


class TrackingError(TlexpError):
    """The MLflow store cannot be reached or written."""


class TrialError(TlexpError):
    """One depth of a sweep failed; the sweep records it and goes on."""


def first_line(error: BaseException) -> str:
    """The first line of an exception's message, or its type name when it has none."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class Interrupted(KeyboardInterrupt):
    """A signal (such as SIGTERM) turned into an interrupt, so runs end KILLED as on Ctrl+C."""

    def __init__(self, signal_number: int) -> None:
        super().__init__(f"interrupted by signal {signal_number}")
        self.exit_code = 128 + signal_number
