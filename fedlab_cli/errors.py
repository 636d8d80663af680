"""Errors that reach the user as one line and exit code 2, never as a traceback."""


class FedlabError(Exception):
    """Bad input or a missing resource: the CLI prints the message alone and exits with code 2."""

    exit_code = 2


class DatasetUnavailableError(FedlabError):
    """The dataset files are absent and could not be downloaded."""


class TrainingDivergedError(Exception):
    """A loss became NaN or infinite: the run stops rather than report wrong numbers."""

    exit_code = 1
