"""The choices of a comparison (paired test, multiple-comparison correction, output format), importable without
the 'experiments' extra, so that the command line lists them in a base install (``rankwise.eval.compare``
uses them)."""

TESTS = ("t", "randomization")
CORRECTIONS = ("holm", "bonferroni", "none")
FORMATS = ("table", "markdown", "latex", "csv", "json")
