"""Request and response shapes: Cohere/TEI ``/v1/rerank``, ``/v1/search``, OpenAI ``/v1/embeddings``.

Limits on sizes are not part of the schemas: they are checked after parsing (:mod:`rankwise.rerank.server.limits`)
and answered with a 413, where a schema violation is a 422.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TextObject(BaseModel):
    """A document given as an object (Cohere's ``{"text": ...}``)."""

    model_config = ConfigDict(extra="ignore")
    text: str


class RerankRequest(_Request):
    """Cohere ``/v1/rerank`` (and TEI's rerank with Cohere's field names)."""

    query: str = Field(min_length=1)
    documents: list[str | TextObject]
    top_n: int | None = Field(default=None, ge=1)
    return_documents: bool = False
    model: str | None = None

    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]


class RerankResult(BaseModel):
    index: int
    relevance_score: float
    document: TextObject | None = None


class RerankResponse(BaseModel):
    id: str
    model: str
    results: list[RerankResult]


class SearchRequest(_Request):
    query: str = Field(min_length=1)
    k: int = Field(default=10, ge=1)
    return_documents: bool = False


class SearchResponse(BaseModel):
    model: str
    ids: list[str]
    scores: list[float]
    texts: list[str] | None = None


class EmbeddingsRequest(_Request):
    """OpenAI ``/v1/embeddings``; ``input_type`` (``query`` or ``document``) picks the model's prompt."""

    input: str | list[str]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    input_type: Literal["query", "document"] = "document"
    dimensions: int | None = Field(default=None, ge=1)

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage
