"""Argument checks shared by every module.

Each check raises ``ValueError`` or ``TypeError`` whose message names the
parameter and the bad value, so that users see *which* argument is wrong.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "as_float_array", "check_finite", "finite_float", "flag", "non_negative_int", "one_of",
    "pair_of", "positive_int", "with_keywords",
]

T = TypeVar("T")


def as_float_array(
    value: Any, name: str, *, dtype: Any = None, finite: bool = True
) -> NDArray[np.floating]:
    """Return ``value`` as a finite floating array (float32 unless float64 was given).

    Integer and boolean inputs become float32. NaN or inf raise ``ValueError``
    unless ``finite`` is False (the caller then checks the part that counts).
    """
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as error:  # ragged lists and the like
        msg = f"`{name}` must be an array of numbers, got {type(value).__name__}: {error}"
        raise TypeError(msg) from None
    if array.dtype == object or not (
        np.issubdtype(array.dtype, np.number) or array.dtype == bool
    ):
        msg = f"`{name}` must be an array of numbers, got dtype {array.dtype}"
        raise TypeError(msg)
    if np.iscomplexobj(array):
        msg = f"`{name}` must be real, got dtype {array.dtype}"
        raise TypeError(msg)
    if dtype is None:
        dtype = np.float64 if array.dtype == np.float64 else np.float32
    array = np.asarray(array, dtype=dtype, order="C")  # keeps 0-d arrays 0-d; no needless copy
    if finite:
        check_finite(array, name)
    return array


def check_finite(array: NDArray[Any], name: str) -> None:
    """Raise ``ValueError`` if ``array`` holds NaN or inf, saying how many and where."""
    if array.dtype.kind in "biu":
        return
    # Fast path: NaN and inf survive a sum, which allocates nothing. A finite sum
    # proves every element finite; an infinite one may be overflow, so look closer.
    if array.dtype.kind == "f":
        with np.errstate(over="ignore", invalid="ignore"):
            total = np.sum(array, dtype=np.float64)
        if np.isfinite(total):
            return
    finite = np.isfinite(array)
    if not finite.all():
        bad = np.argwhere(~finite)
        msg = (
            f"`{name}` contains {len(bad)} NaN or inf value(s), "
            f"the first at index {tuple(int(i) for i in bad[0])}"
        )
        raise ValueError(msg)


def positive_int(value: Any, name: str) -> int:
    """Return ``value`` as an int if it is a positive integer, else raise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        msg = f"`{name}` must be a positive integer, got {value!r}"
        raise TypeError(msg)
    if value <= 0:
        msg = f"`{name}` must be a positive integer, got {value!r}"
        raise ValueError(msg)
    return int(value)


def non_negative_int(value: Any, name: str) -> int:
    """Return ``value`` as an int if it is an integer ≥ 0, else raise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        msg = f"`{name}` must be a non-negative integer, got {value!r}"
        raise TypeError(msg)
    if value < 0:
        msg = f"`{name}` must be a non-negative integer, got {value!r}"
        raise ValueError(msg)
    return int(value)


def pair_of(value: Any, name: str, check: Any) -> tuple[int, int]:
    """Expand an int or a 2-sequence into ``(rows, cols)``, checking each with ``check``."""
    if isinstance(value, (tuple, list, np.ndarray)):
        if len(value) != 2:
            msg = f"`{name}` must be an integer or a pair of integers, got {value!r}"
            raise ValueError(msg)
        return check(value[0], name), check(value[1], name)
    single = check(value, name)
    return single, single


def finite_float(value: Any, name: str) -> float:
    """Return ``value`` as a Python float if it is a finite real number, else raise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        msg = f"`{name}` must be a real number, got {value!r}"
        raise TypeError(msg)
    value = float(value)
    if not np.isfinite(value):
        msg = f"`{name}` must be finite, got {value!r}"
        raise ValueError(msg)
    return value


def one_of(value: Any, name: str, choices: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise naming the choices."""
    if value not in choices:
        options = ", ".join(repr(c) for c in choices)
        msg = f"`{name}` must be one of {options}; got {value!r}"
        raise ValueError(msg)
    return str(value)


def flag(value: Any, name: str) -> bool:
    """Return ``value`` as a bool if it is True or False (numpy's too), else raise ``TypeError``.

    Strings such as "no" are truthy in Python; a flag must not accept them.
    """
    if not isinstance(value, (bool, np.bool_)):
        msg = f"`{name}` must be True or False, got {value!r}"
        raise TypeError(msg)
    return bool(value)


def with_keywords(cls: type[T], options: T | None, keywords: Mapping[str, Any]) -> T:
    """An options record ``options`` (default: ``cls()``) with the fields in ``keywords`` replaced.

    Shared by the frozen options dataclasses (`DetectOptions`, `FitOptions`),
    whose functions take both a record and keywords.

    Raises
    ------
    TypeError
        If ``options`` is not a ``cls``, or a keyword names no field of it.
    """
    if options is None:
        options = cls()
    elif not isinstance(options, cls):
        msg = f"`options` must be a {cls.__name__}, got {type(options).__name__}"
        raise TypeError(msg)
    fields = [field.name for field in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(keywords) - set(fields))
    if unknown:
        msg = f"unexpected keyword argument(s) {unknown}; {cls.__name__} fields are {', '.join(fields)}"
        raise TypeError(msg)
    return dataclasses.replace(options, **keywords) if keywords else options  # type: ignore[type-var]
