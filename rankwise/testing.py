"""Tiny models built on the fly for tests and benchmarks: a WordPiece tokenizer, a small BERT bi-encoder and
cross-encoder, a small Llama causal LM, and the vocabulary and pseudo-sentences they were made for.

They make unit tests hermetic and fast, and give benchmarks a model whose cost is the data path's, not the
model's; nothing is downloaded. Random weights: their rankings mean nothing.
"""

from __future__ import annotations

from pathlib import Path

WORDS = (
    "the a of and to in is for on with by as at from that this are was be it an or which "
    "protein cell gene cancer virus vaccine heart brain blood liver kidney lung bone muscle "
    "wing airflow pressure shock wave boundary layer supersonic heat flow laminar turbulent "
    "query document search index rank model neural network vector dense sparse retrieval"
).split()


def corpus_texts() -> list[str]:
    """Deterministic pseudo-sentences from a small vocabulary."""
    import random

    rnd = random.Random(0)
    return [" ".join(rnd.choice(WORDS) for _ in range(rnd.randint(3, 40))) for _ in range(400)]


def build_tiny_tokenizer(directory: Path):
    """Train a WordPiece tokenizer on the fly and wrap it as a BertTokenizerFast."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=300, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    tok.train_from_iterator(corpus_texts() + WORDS, trainer)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    fast = BertTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                             sep_token="[SEP]", mask_token="[MASK]", model_max_length=128)
    fast.save_pretrained(directory)
    return fast


def build_tiny_bert(directory: Path, seed: int = 0, dropout: float = 0.1) -> Path:
    """A 2-layer, 32-wide BERT with random weights, saved as a Hugging Face folder."""
    import torch
    from transformers import BertConfig, BertModel

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer(directory)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, hidden_dropout_prob=dropout,
                        attention_probs_dropout_prob=dropout)
    BertModel(config).save_pretrained(directory)
    return directory


def build_tiny_encoder(directory: Path, seed: int = 0, dropout: float = 0.1) -> Path:
    """A sentence-transformers bi-encoder (tiny BERT, mean pooling, normalization) saved to ``directory``."""
    import warnings

    from sentence_transformers import SentenceTransformer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from sentence_transformers.models import Normalize, Pooling, Transformer

    hf = build_tiny_bert(directory.parent / f"{directory.name}-hf", seed, dropout)
    transformer = Transformer(str(hf), max_seq_length=64)
    pooling = Pooling(transformer.get_word_embedding_dimension(), "mean")
    model = SentenceTransformer(modules=[transformer, pooling, Normalize()], device="cpu")
    model.save(str(directory))
    return directory


CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def build_tiny_causal_lm(directory: Path, seed: int = 0, chat_template: bool = True) -> Path:
    """A 2-layer, 64-wide Llama with random weights and a BPE tokenizer trained on the fly.

    Letters A-Z, digits, ``yes`` / ``no`` and the ranking punctuation are single tokens, so the
    listwise, groupwise and pointwise-LLM label logic runs on it as on a real model.
    """
    import string

    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    specials = ["<pad>", "<s>", "</s>", "<unk>", "<|user|>", "<|system|>", "<|assistant|>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=specials, initial_alphabet=alphabet)
    sample = corpus_texts() + [" ".join(string.ascii_uppercase), "yes no [A] > [B] > [C] 0 1 2 3 4 5 6 7 8 9 10"]
    tok.train_from_iterator(sample, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", model_max_length=2048)
    if chat_template:
        fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(directory)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(fast), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         pad_token_id=fast.pad_token_id, bos_token_id=fast.bos_token_id,
                         eos_token_id=fast.eos_token_id, tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(directory)
    return directory


def build_tiny_cross_encoder(directory: Path, seed: int = 0) -> Path:
    """A one-label cross-encoder (tiny BERT + new head) made with :func:`rankwise.rerank.init_cross_encoder`."""
    from rankwise.rerank.cross_encoder import init_cross_encoder

    hf = build_tiny_bert(directory.parent / f"{directory.name}-hf", seed)
    return init_cross_encoder(str(hf), directory, seed=seed, max_length=64)
