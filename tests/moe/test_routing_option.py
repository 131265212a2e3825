"""The routing option reaches merged MoEs through every loader: ask, serve and moesaic.load."""

from __future__ import annotations

import pytest
from moe_helpers import ARCH_OF, FAMILY_OF

from moesaic.backends.base import BackendOptions
from moesaic.backends.registry import load_backend
from moesaic.errors import ModelLoadError
from moesaic.moe.config import MergeConfig
from moesaic.moe.merge import merge
from moesaic.moe.sequence_routing import get_routing


@pytest.mark.parametrize("case", ["mixtral", "generic"])
def test_backend_options_install_the_routing_mode(case, tiny_model_dir, mlp_expert, tmp_path) -> None:  # noqa: ANN001
    base = tiny_model_dir(FAMILY_OF[case])
    out = tmp_path / "moe"
    merge(MergeConfig(base_model=str(base), experts=[{"source_model": str(mlp_expert(base, s))} for s in (1, 2)],
                      gate_mode="random", experts_per_token=1, output_architecture=ARCH_OF[case], out=str(out)))
    plain = load_backend(str(out), BackendOptions())
    assert get_routing(plain.model) == "token"
    per_request = load_backend(str(out), BackendOptions(routing="sequence"))
    assert get_routing(per_request.model) == "sequence"
    if case != "generic":  # native MoEs loaded by the HF backend get the CPU decode path too
        assert per_request.model.config.get_text_config()._experts_implementation == "moesaic_sparse"


def test_sequence_routing_on_a_dense_model_is_refused(tiny_model_dir) -> None:  # noqa: ANN001
    with pytest.raises(ModelLoadError, match="needs a merged MoE"):
        load_backend(str(tiny_model_dir("idefics3")), BackendOptions(routing="sequence"))
    assert load_backend(str(tiny_model_dir("idefics3")), BackendOptions()).model is not None
