"""Warnings the library raises about answers that need care."""


class NotComparableWarning(UserWarning):
    """Entropies computed without ``feature_std`` are not comparable across sentences or layers."""


class ConvergenceWarning(UserWarning):
    """Some sentences did not pass the stationarity test, or lost every word to the cap."""
