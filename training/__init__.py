"""Training retrievers and rerankers on MS MARCO-style triples: built on retrieval's index layer."""
