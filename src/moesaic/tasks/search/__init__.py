"""Search over an index of images and videos (sqlite-vec): ``index`` builds it, ``search`` queries it,
``find`` looks for something in one video (indexing it on the fly)."""

from moesaic.tasks.search.commands import IndexConfig, IndexResult, index
from moesaic.tasks.search.embedders import CaptionEmbedder, DualEncoderEmbedder, ImageEmbedder, make_embedder
from moesaic.tasks.search.video_find import FindConfig, FindResult, FoundRange, find
from moesaic.tasks.search.frames import FrameSampling, sample_frames
from moesaic.tasks.search.query import SearchConfig, SearchHit, SearchResult, search
from moesaic.tasks.search.store import VectorStore

__all__ = [
    "IndexConfig", "IndexResult", "SearchConfig", "SearchHit", "SearchResult", "index", "search",
    "CaptionEmbedder", "DualEncoderEmbedder", "ImageEmbedder", "make_embedder", "VectorStore",
    "FindConfig", "FindResult", "FoundRange", "find", "FrameSampling", "sample_frames",
]
