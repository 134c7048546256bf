"""Reference values for sv72's paired statistics (src/metrics/stats.rs), exact rational arithmetic.

McNemar's exact two-sided p-value: p = min(1, 2 * P(X <= min(b, c))), X ~ Bin(b + c, 1/2),
computed with integers and Fractions (no floating point until the final conversion), which is
what scipy.stats.binomtest(min(b,c), b+c, 0.5).pvalue and
statsmodels.stats.contingency_tables.mcnemar(..., exact=True).pvalue give for p = 1/2.

Usage: python tools/stats_reference.py > tests/fixtures/stats/mcnemar.json
"""

import json
from fractions import Fraction
from math import comb

CASES = [(0, 0), (0, 1), (1, 9), (9, 1), (0, 5), (3, 3), (2, 7), (10, 25), (17, 5),
         (40, 60), (123, 171), (500, 430), (1000, 1100), (4000, 6000)]


def mcnemar_exact(b: int, c: int) -> float:
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = Fraction(sum(comb(n, j) for j in range(k + 1)), 2 ** n)
    return float(min(Fraction(1), 2 * tail))


print(json.dumps([{"b": b, "c": c, "p": mcnemar_exact(b, c)} for b, c in CASES], indent=1))
