"""How faithful is each attribution method, on your model: a harness for any Captum method.

* :mod:`.methods`: the methods as one kind of thing (EntropyAttribution, Captum's gradient and
  perturbation methods, a random baseline; add any Captum class, instance or callable).
* :mod:`.faithfulness`: deletion / insertion curves and AOPC, ERASER comprehensiveness and
  sufficiency, Kendall τ against leave-one-out; words removed three ways (delete, mask, noise).
* :mod:`.statistics`: bootstrap intervals, paired Wilcoxon tests with Holm's correction, win/tie/loss.
* :mod:`.harness`: :func:`evaluate` (one model, many methods) and :class:`Evaluation` (tables,
  CSV, markdown, curves).
* :mod:`.ground_truth`: where the right answer is known (the reversal task).
"""

from .faithfulness import ERASER_BINS, FRACTIONS, METRICS, REMOVALS, Perturber, faithfulness
from .harness import Evaluation, evaluate
from .methods import METHODS, Method, Task, captum_method, register, resolve
from .statistics import bootstrap_ci, holm, paired_wilcoxon, win_tie_loss

__all__ = ["ERASER_BINS", "FRACTIONS", "METHODS", "METRICS", "REMOVALS", "Evaluation", "Method", "Perturber", "Task",
           "bootstrap_ci", "captum_method", "evaluate", "faithfulness", "holm", "paired_wilcoxon", "register",
           "resolve", "win_tie_loss"]
