"""Cross-encoder reranking: any sentence-transformers ``CrossEncoder`` or sequence-classification model.

Pairs from all queries are scored together, in batches of pairs sorted by token length (less
padding than ``CrossEncoder.predict``'s character-length sort), under ``torch.inference_mode``.
Scores are the raw logit (one label) or the relevant-minus-irrelevant logit (two labels); both are
monotone in the model's relevance probability. (Nogueira & Cho, 2019, "Passage Re-ranking with BERT".)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rerank.base import Reranker
from retrieval.errors import InputError
from retrieval.models import resolve_model

DEFAULT_CROSS_ENCODER = "cross-encoder/ms-marco-MiniLM-L-6-v2"
BACKENDS = ("torch",)


def _check_head(path: str) -> None:
    """Refuse a checkpoint without a sequence-classification head (it would get a random one)."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise InputError(f"cannot load a cross-encoder: {str(err).splitlines()[0]}", path=path) from None
    archs = config.architectures or []
    if archs and not any(a.endswith("ForSequenceClassification") for a in archs):
        raise InputError(f"has no sequence-classification head (architectures: {', '.join(archs)}); "
                         f"make one with `rerank.init_cross_encoder` and train it", path=path, field="architectures")


def init_cross_encoder(base: str, out: str | Path, *, seed: int = 0, max_length: int = 512) -> Path:
    """A one-label cross-encoder made from an encoder's weights (e.g. all-MiniLM-L6-v2); the head is new.

    This is the starting point for training a reranker; saved as a sentence-transformers
    CrossEncoder folder that :class:`CrossEncoderReranker` loads.
    """
    import torch
    from sentence_transformers import CrossEncoder

    torch.manual_seed(seed)
    model = CrossEncoder(resolve_model(base), num_labels=1, max_length=max_length, device="cpu")
    model.save(str(out))
    return Path(out)


class CrossEncoderReranker(Reranker):
    """Pointwise reranking with a cross-encoder (query and document in one input, one score)."""

    name = "cross-encoder"

    def __init__(self, model: str = DEFAULT_CROSS_ENCODER, *, batch_size: int = 32, max_length: int | None = None,
                 backend: str = "torch", device: str | None = None) -> None:
        super().__init__()
        if backend not in BACKENDS:
            raise InputError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}", field="backend")
        import torch
        from sentence_transformers import CrossEncoder

        self.model_name = model
        self.path = resolve_model(model)
        _check_head(self.path)
        try:
            self.model = CrossEncoder(self.path, device=device, max_length=max_length)
        except (OSError, ValueError) as err:
            raise InputError(f"cannot load a cross-encoder: {str(err).splitlines()[0]}", path=self.path) from None
        if self.model.device.type == "cuda":
            self.model.half()
        self.model.eval()
        self.batch_size = batch_size
        self._torch = torch

    @property
    def max_length(self) -> int:
        return int(self.model.max_length)

    def score_pairs(self, pairs: Sequence[tuple[str, str]], progress: bool = False) -> list[float]:
        """One score per ``(query, document)`` pair."""
        from tqdm.auto import tqdm

        torch = self._torch
        pairs = list(pairs)
        if not pairs:
            return []
        tokenizer = self.model.tokenizer
        lengths = [len(x) for x in tokenizer([q for q, _ in pairs], [d for _, d in pairs], truncation=False,
                                             return_attention_mask=False, return_token_type_ids=False)["input_ids"]]
        self.stats.truncated += sum(1 for n in lengths if n > self.max_length)
        self.stats.passages += len(pairs)
        order = sorted(range(len(pairs)), key=lambda i: -lengths[i])
        scores = [0.0] * len(pairs)
        with torch.inference_mode(), tqdm(total=len(pairs), desc="cross-encoder", unit="pair",
                                          disable=not progress, leave=False) as bar:
            for start in range(0, len(order), self.batch_size):
                idx = order[start:start + self.batch_size]
                features = self.model.preprocess([pairs[i] for i in idx])
                features = {k: v.to(self.model.device) if hasattr(v, "to") else v for k, v in features.items()}
                logits = self.model(features)["scores"].float()
                values = logits.reshape(len(idx)) if logits.numel() == len(idx) else logits[:, -1] - logits[:, 0]
                for i, v in zip(idx, values.cpu().tolist()):
                    scores[i] = v
                self.stats.forward_passes += 1
                bar.update(len(idx))
        return scores

    def score(self, lists: Sequence[tuple[str, Sequence[str]]], progress: bool = False) -> list[list[float]]:
        pairs = [(q, d) for q, docs in lists for d in docs]
        self.stats.lists += len(lists)
        flat = self.score_pairs(pairs, progress)
        out, start = [], 0
        for _, docs in lists:
            out.append(flat[start:start + len(docs)])
            start += len(docs)
        return out
