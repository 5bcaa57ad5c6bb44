"""Round half up, the one rounding rule for counts (split sizes, mask block sides).

Python's ``round`` rounds half to even (``round(2.5) == 2``), which would make a split of 25
images at 10 % hold 2 images and a mask block of side 2.5 hold 2 rows: surprising, so one rule,
stated once.
"""

from __future__ import annotations

import math


def round_half_up(x: float) -> int:
    return math.floor(x + 0.5)
