"""The merged-model quality study: synthetic domains, MLP-only experts, three merges, every model on every domain."""

from moesaic.eval.quality.config import DEFAULT_DOMAINS, QualityStudyConfig
from moesaic.eval.quality.domains import CAPTION_QUESTION, DOMAINS, Domain, write_captions, write_domain
from moesaic.eval.quality.study import MERGED, ORACLE, QualityStudyResult, quality_study

__all__ = ["CAPTION_QUESTION", "DEFAULT_DOMAINS", "DOMAINS", "Domain", "MERGED", "ORACLE", "QualityStudyConfig",
           "QualityStudyResult", "quality_study", "write_captions", "write_domain"]
