"""The one implementation of the project's reports: a page builder (``page``: self-contained HTML with
embedded figures, and the same content as Markdown), the figures (``figures``: rates with intervals,
grouped bars that show a missing value as missing, probe layers, curves against tokens seen with the
curriculum's phase boundaries) and what a run folder says about its schedule (``runs``)."""
