"""A flow run that fails for a reason a user can read: one clean line in the log and the state.

Why: an exception raised out of a flow is logged by Prefect with its traceback, which buries a
message like "train.epochs: did you mean 'epochs'?" (or "1 of 2 experiments failed") in Python
frames. A returned ``Failed`` state fails the run just the same but shows only the message.
"""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger
from prefect.states import Failed, State

from hjepa.core.errors import UserError


def one_line(text: str) -> str:
    """``text`` with its lines joined by "; " (a multi-line ConfigError becomes one line)."""
    parts = [part.strip().removeprefix("- ") for part in text.splitlines() if part.strip()]
    return "; ".join(p.rstrip(":;") if i < len(parts) - 1 else p for i, p in enumerate(parts))


def failed_run(message: str) -> State[Any]:
    """Log ``message`` as one ERROR line; return the ``Failed`` state that ends the run with it."""
    get_run_logger().error(message)
    return Failed(message=message)


def user_error_state(exc: UserError) -> State[Any]:
    """``failed_run`` with the user error's message on one line."""
    return failed_run(one_line(str(exc)))
