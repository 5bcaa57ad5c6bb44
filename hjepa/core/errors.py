"""Errors meant for a person: printed without a traceback, exit code 2."""


class UserError(Exception):
    """Something the user can fix (a params value, a missing or corrupt file). The message names
    the thing that is wrong and what would be right."""
