"""What gets exported: the torch model of each kind, loaded from a name or path, and its files' fingerprint."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from rankwise.retrieval.errors import InputError
from rankwise.retrieval.extras import requires
from rankwise.retrieval.files import sha256_file
from rankwise.retrieval.models import resolve_model

_SKIPPED = ("README", "LICENSE", ".")
DOC_PROMPTS = ("document", "passage", "corpus")  # sentence-transformers prompt names for documents, in order


def gguf_location(path: str) -> tuple[str, str | None]:
    """``(folder or name, gguf file name or None)`` for a model path; a GGUF file needs the ``llm`` extra."""
    p = Path(path)
    if p.is_file() and p.suffix == ".gguf":
        requires("gguf", "llm", "Loading a .gguf model")  # transformers reads GGUF files with it
        return str(p.parent), p.name
    if p.is_dir() and not (p / "config.json").exists():
        ggufs = sorted(p.glob("*.gguf"))
        if len(ggufs) == 1:
            requires("gguf", "llm", "Loading a .gguf model")
            return str(p), ggufs[0].name
        if len(ggufs) > 1:
            raise InputError(f"{len(ggufs)} .gguf files in the folder; name one of them", path=p)
    return path, None


def local_folder(name_or_path: str) -> Path:
    """A local folder holding the model: the path itself, the ``$RANKWISE_MODELS`` mirror or the hub cache."""
    path = Path(gguf_location(resolve_model(name_or_path))[0])
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name_or_path))
    except Exception as err:  # noqa: BLE001 - offline, unknown repo, no network: one clear line
        raise InputError(f"model {name_or_path!r} is neither a local folder nor downloadable: "
                         f"{str(err).splitlines()[0]}", field="model") from None


def source_fingerprint(name_or_path: str) -> str:
    """SHA-256 over the model's files (relative name and content; READMEs and hidden files left out)."""
    folder = local_folder(name_or_path)
    _, gguf = gguf_location(resolve_model(name_or_path))
    h = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = file.relative_to(folder).as_posix()
        if any(part.startswith(_SKIPPED) for part in rel.split("/")):
            continue
        if gguf and file.suffix == ".gguf" and file.name != gguf:
            continue
        h.update(rel.encode() + b"\0" + sha256_file(file).encode() + b"\n")
    return h.hexdigest()


def check_classification_head(path: str) -> None:
    """Refuse a checkpoint without a sequence-classification head (it would get a random one)."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise InputError(f"cannot load a cross-encoder: {str(err).splitlines()[0]}", path=path) from None
    archs = config.architectures or []
    if archs and not any(a.endswith("ForSequenceClassification") for a in archs):
        raise InputError(f"has no sequence-classification head (architectures: {', '.join(archs)}); "
                         f"make one with `rankwise.rerank.init_cross_encoder` and train it", path=path, field="architectures")


def load_encoder(name_or_path: str, max_length: int | None = None) -> Any:
    """A ``SentenceTransformer`` on the CPU in eval mode (``max_length`` overrides its max_seq_length)."""
    from sentence_transformers import SentenceTransformer

    path = resolve_model(name_or_path)
    try:
        model = SentenceTransformer(path, device="cpu")
    except OSError as err:
        raise InputError(f"cannot load encoder: {str(err).splitlines()[0]}", path=path) from None
    if max_length is not None:
        model.max_seq_length = max_length
    return model.eval()


def load_cross_encoder(name_or_path: str, max_length: int | None = None) -> Any:
    """A sentence-transformers ``CrossEncoder`` on the CPU in eval mode."""
    from sentence_transformers import CrossEncoder

    path = resolve_model(name_or_path)
    check_classification_head(path)
    try:
        model = CrossEncoder(path, device="cpu", max_length=max_length)
    except (OSError, ValueError) as err:
        raise InputError(f"cannot load a cross-encoder: {str(err).splitlines()[0]}", path=path) from None
    return model.eval()


def model_fingerprint(model: Any) -> str:
    """Hash every weight tensor (name, dtype, bytes), the tokenizer and the module set-up."""
    import torch

    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().to("cpu").contiguous().reshape(-1)
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    tokenizer = getattr(model, "tokenizer", None)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        h.update(backend.to_str().encode())
    setup = {
        "modules": [type(m).__name__ for m in model],
        "max_seq_length": model.max_seq_length,
        "similarity": model.similarity_fn_name,
        "prompts": model.prompts,
    }
    h.update(json.dumps(setup, sort_keys=True, default=str).encode())
    return h.hexdigest()
