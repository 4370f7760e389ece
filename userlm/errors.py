"""The one exception type whose message is shown to users as-is, without a traceback."""


class UserError(Exception):
    """A problem the user can fix; its message is one sentence that says what to do."""
