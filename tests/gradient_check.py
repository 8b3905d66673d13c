"""Finite-difference references for the backward passes (shared by the conv and network tests)."""

from __future__ import annotations

import numpy as np


def numerical_gradient(function, array, step=1e-6):
    """Central differences of the scalar ``function()`` with respect to every entry of ``array``.

    ``array`` is changed in place one entry at a time and restored, so ``function``
    must read it (not a copy).
    """
    grad = np.zeros_like(array)
    flat, grad_flat = array.reshape(-1), grad.reshape(-1)
    for index in range(flat.size):
        saved = flat[index]
        flat[index] = saved + step
        above = function()
        flat[index] = saved - step
        below = function()
        flat[index] = saved
        grad_flat[index] = (above - below) / (2 * step)
    return grad


def relative_error(a, b):
    """The largest elementwise |a − b| / (|a| + |b|), with a floor of 1e-8 on the denominator."""
    return float(np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b))))
