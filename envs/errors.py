"""The one exception type users see as a one-line message.

It lives in ``envs`` (the bottom of the import graph) so that ``datasets`` and ``leads``
can raise and catch it without importing upward.
"""


class UserError(ValueError):
    """Bad input from the user: the message names the problem and the fix, on one line."""

    def __init__(self, message: object = "") -> None:
        # Messages echo user input (an override, a set name, a line of a file), which may hold
        # line breaks of any kind: the message stays one line whatever it quotes.
        super().__init__(" ".join(str(message).split()))
