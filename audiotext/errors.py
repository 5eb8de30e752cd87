"""The errors audiotext raises about what it was given: a setting, a file, a row, a model folder.

Each message names the flag, file, row or column and what is wrong, so the command line prints it
as one line (`error: ...`) and exits with 2 for a setting (a usage error) or 1 for anything else.
Anything that is not an `AudiotextError` (or a plain OSError) is a bug and keeps its traceback.
"""


class AudiotextError(Exception):
    """Bad input, named in the message."""


class SettingError(AudiotextError, ValueError):
    """A setting outside its valid range, or at odds with another; named as its flag is named.
    Raised when a configuration is made, before any feature is computed."""


class DataError(AudiotextError, ValueError):
    """A corpus, clip, manifest, transcript or saved file that cannot be used as it is."""


class TrainingInterrupted(Exception):
    """Ctrl-C (or SIGTERM, as torchrun and batch schedulers send) during training with checkpoints:
    the state after the last whole step is saved; the message says where."""


class ProcessLost(AudiotextError):
    """Another process of a torchrun job stopped (killed, out of memory, its node gone): this one
    stops too, instead of waiting for it; the message says where the last checkpoint is."""


class TrainingDiverged(AudiotextError):
    """The training loss became NaN or infinite: the weights are no model, and the run stays
    unfinished; the message says what to change."""
