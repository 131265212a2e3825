"""Text search over an image index (sqlite-vec): ``index`` builds it, ``search`` queries it."""

from moesaic.tasks.search.commands import IndexConfig, IndexResult, SearchConfig, SearchHit, SearchResult, index, search
from moesaic.tasks.search.embedders import CaptionEmbedder, DualEncoderEmbedder, ImageEmbedder, make_embedder
from moesaic.tasks.search.store import VectorStore

__all__ = [
    "IndexConfig", "IndexResult", "SearchConfig", "SearchHit", "SearchResult", "index", "search",
    "CaptionEmbedder", "DualEncoderEmbedder", "ImageEmbedder", "make_embedder", "VectorStore",
]
