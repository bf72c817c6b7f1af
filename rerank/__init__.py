"""Rerankers (pointwise, listwise, groupwise) behind one API: built on retrieval's Run and readers."""
