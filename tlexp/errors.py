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


class CacheError(TlexpError):
    """The frozen-feature cache cannot be written where it is configured to go."""


class TrialError(TlexpError):
    """One depth of a sweep failed; the sweep records it and goes on."""


def first_line(error: BaseException) -> str:
    """The first line of an exception's message, or its type name when it has none."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class Interrupted(KeyboardInterrupt):
    """A signal (SIGINT, SIGTERM) turned into an interrupt, so runs end KILLED as on Ctrl+C."""

    def __init__(self, signal_number: int) -> None:
        super().__init__(f"interrupted by signal {signal_number}")
        self.exit_code = 128 + signal_number


_received_signal: int | None = None


def interrupt_on_signal(signal_number: int, _frame=None) -> None:
    """A signal handler: remember the signal, then interrupt.

    Remembered because an interrupt raised while TensorFlow converts a tensor can come out as an
    ordinary error (a TypeError), which would otherwise be taken for a failed depth.
    """
    global _received_signal
    _received_signal = signal_number
    raise Interrupted(signal_number)


def received_interrupt() -> Interrupted | None:
    """The interrupt for a signal `interrupt_on_signal` received, if any."""
    return None if _received_signal is None else Interrupted(_received_signal)


def forget_received_interrupt() -> None:
    global _received_signal
    _received_signal = None
