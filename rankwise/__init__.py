"""rankwise: neural retrieval and reranking. The ``rankwise`` command assembles each package's commands."""

__version__ = "0.1.0"
