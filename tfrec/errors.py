"""The one exception type for mistakes a user can fix (bad files, columns, flags)."""


class TfrecError(Exception):
    """A user-facing error: its message is one sentence naming the file, column or value.

    The CLI prints it without a traceback and exits non-zero.
    """
