#!/usr/bin/env python3
"""Re-derives the erf/erfc coefficients of loom/codegen/vector_math.cc.

Near-minimax polynomial fits (Lawson's iteratively reweighted least squares on Chebyshev nodes,
mpmath for the true values). Needs numpy and mpmath (`pip install numpy mpmath`); not part of the
build. Prints the coefficients highest degree first, as Horner's scheme in vector_math.cc uses
them.
  erf(z) / z  = P(z^2),                    0 <= z < 0.921875     (relative error)
  erfc(z)     = t exp(-z^2 + Q(t)),        0.921875 <= z <= 10, t = 1 / (1 + z/2)
"""
import mpmath as mp
import numpy as np

mp.mp.dps = 30
SMALL = 0.921875


def lawson(basis, f, weight, iters=100):
    w = np.ones(len(f)) / len(f)
    for _ in range(iters):
        s = np.sqrt(w) * weight
        c, *_ = np.linalg.lstsq(basis * s[:, None], f * s, rcond=None)
        e = np.abs((basis @ c - f) * weight)
        w = w * e
        w /= w.sum()
    return c, np.max(np.abs((basis @ c - f) * weight))


def nodes(a, b, n=6000):
    return np.cos(np.linspace(0, np.pi, n)) * (b - a) / 2 + (a + b) / 2


def main():
    z = nodes(0, SMALL)
    z = z[z > 1e-6]
    f = np.array([float(mp.erf(mp.mpf(v)) / v) for v in z])
    c, err = lawson(np.vstack([(z * z)**k for k in range(7)]).T, f, 1 / f)
    print('erf small, max relative error %.3g:' % err)
    print(', '.join('%.9ef' % v for v in c[::-1]))

    z = nodes(SMALL, 10.0)
    t = 1 / (1 + 0.5 * z)
    f = np.array([float(mp.log(mp.erfc(mp.mpf(v)) * (1 + 0.5 * mp.mpf(v))) + mp.mpf(v)**2)
                  for v in z])
    c, err = lawson(np.vstack([t**k for k in range(9)]).T, f, np.ones(len(z)))
    print('erfc large, max absolute error in the exponent %.3g:' % err)
    print(', '.join('%.9ef' % v for v in c[::-1]))


if __name__ == '__main__':
    main()
