"""Tables, figures and an HTML page of a :class:`~captum_entropy.analysis.LayerExplanation` and of
a :class:`~captum_entropy.comparison.ModelComparison` (several models, aligned by word).

What the pictures show: the *kept information per dimension* of a word, the mean of
``log(σ_max/σ)`` over its pieces and their dimensions (nats/dim; high = the feature kept the
word, 0 = forgotten; "saturated" = every piece at the σ cap, fully forgotten; a word the
tokenizer cut into pieces reads like one piece with the same σ), and the entropy per dimension
(low = kept). Every word keeps most of what the cap allows, so words differ by a few per cent:
colours are scaled per feature row and the numbers sit in cells, row labels and tooltips.
Marks: ``~`` not converged (the optimiser's stationarity test did not pass), ``×`` saturated,
``—`` (grey) a model has no word there (it truncated the sentence). Matplotlib is imported
only when a figure is drawn.

>>> import os, tempfile
>>> path = write_text(os.path.join(tempfile.mkdtemp(), "note.txt"), "kept")
>>> open(path, encoding="utf-8").read()
'kept'
"""

from __future__ import annotations

from ._common import NC, NONE, SAT, save_figure, write_text
from .figures import COMPARISON_KINDS, KINDS, plot_comparison, plot_explanation
from .page import comparison_html, explanation_html
from .text import comparison_table, depth_table, explanation_table, visualize_text_records

__all__ = ["COMPARISON_KINDS", "KINDS", "NC", "NONE", "SAT", "comparison_html", "comparison_table", "depth_table",
           "explanation_html", "explanation_table", "plot_comparison", "plot_explanation", "save_figure",
           "visualize_text_records", "write_text"]
