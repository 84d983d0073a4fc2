"""Exact money conversion between US dollars and integer micro-USD.

Arbiter keeps money as integer micro-USD end to end (1 USD = 1 000 000 micro-USD),
so budgets never drift by float rounding. This module is the one place where a
caller's dollar amount becomes an integer.
"""

from __future__ import annotations

import math
import re
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation, localcontext
from typing import Union

MICROS_PER_USD = 1_000_000
"""Micro-USD in one US dollar."""

_INT64_MAX = 2**63 - 1

# A non-negative decimal with at most six places and nothing else (no spaces, sign,
# exponent or underscores): the amounts usd_to_micros converts without Decimal.
_PLAIN = re.compile(r"([0-9]{1,18})(?:\.([0-9]{0,6}))?", re.ASCII)

Money = Union[Decimal, str, int, float]
"""A dollar amount as accepted by every ``cost_usd`` argument."""


def usd_to_micros(amount: Money) -> int:
    """Convert a dollar amount to integer micro-USD, exactly.

    - ``Decimal`` and ``str`` (e.g. ``"0.0015"``) are read as exact decimals.
    - ``int`` is whole dollars: ``2`` is 2 000 000 micro-USD.
    - ``float`` is read through its shortest ``repr``, so ``0.1`` is exactly
      100 000 micro-USD rather than the binary value 0.1000000000000000055...

    Digits beyond the sixth decimal place are rounded to the nearest micro-USD,
    ties to even (``ROUND_HALF_EVEN``): ``"0.0000005"`` → 0, ``"0.0000015"`` → 2.

    Raises:
        TypeError: for ``bool`` or any other type.
        ValueError: for negative, NaN, infinite or unparsable amounts, or ones
            beyond the int64 range of the wire format.
    """
    if isinstance(amount, bool):
        raise TypeError("cost: expected Decimal, str, int or float, got bool")
    # Most amounts are plain decimals with at most six places ("0.0015", 0.25): those are
    # exact in integer arithmetic, which costs a fraction of the Decimal path below (it
    # runs on every evaluate and record). Anything else (more places, exponents, signs,
    # NaN, whole dollars as int) takes the general path, which also rounds.
    text = amount if type(amount) is str else repr(amount) if type(amount) is float else None
    if text is not None:
        plain = _PLAIN.fullmatch(text)
        if plain is not None:
            whole, fraction = plain.group(1, 2)
            exact = int(whole) * MICROS_PER_USD + int((fraction or "").ljust(6, "0"))
            if exact <= _INT64_MAX:
                return exact
    if isinstance(amount, Decimal):
        value = amount
    elif isinstance(amount, int):
        value = Decimal(amount)
    elif isinstance(amount, float):
        if not math.isfinite(amount):
            raise ValueError(f"cost: must be a finite amount, got {amount!r}")
        value = Decimal(repr(amount))
    elif isinstance(amount, str):
        try:
            value = Decimal(amount.strip())
        except InvalidOperation:
            raise ValueError(f"cost: not a decimal amount: {amount!r}") from None
    else:
        raise TypeError(f"cost: expected Decimal, str, int or float, got {type(amount).__name__}")
    if not value.is_finite():
        raise ValueError(f"cost: must be a finite amount, got {amount!r}")
    if value < 0:
        raise ValueError(f"cost: must not be negative, got {amount!r}")
    with localcontext() as ctx:
        # Enough digits that no amount in range loses precision before rounding.
        ctx.prec = 64
        micros = (value * MICROS_PER_USD).quantize(Decimal(1), rounding=ROUND_HALF_EVEN)
    if micros > _INT64_MAX:
        raise ValueError(f"cost: {amount!r} USD is too large")
    return int(micros)


def micros_to_usd(micros: int) -> Decimal:
    """Convert integer micro-USD to an exact ``Decimal`` of dollars (6 decimal places)."""
    return Decimal(micros).scaleb(-6)
