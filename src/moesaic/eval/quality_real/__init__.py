"""The real-decoder quality study: SmolLM2-135M-Instruct experts, merges against mergekit's peers, and a
validation → committed selection → test protocol (``benchmarks/moe_quality_real.py``)."""

from moesaic.eval.quality_real.config import DEFAULT_TEXT_DOMAINS, RealStudyConfig
from moesaic.eval.quality_real.domains import TEXT_DOMAINS, TextDomain, write_split
from moesaic.eval.quality_real.study import real_quality_study, selection_hash

__all__ = ["DEFAULT_TEXT_DOMAINS", "RealStudyConfig", "TEXT_DOMAINS", "TextDomain", "real_quality_study",
           "selection_hash", "write_split"]
