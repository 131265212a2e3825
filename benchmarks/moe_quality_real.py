"""Real-decoder quality study (Phase A): does a merged MoE keep each fine-tune's skill on SmolLM2-135M-Instruct?

The shipped SmolLM2-135M-Instruct GGUF becomes a plain ``LlamaForCausalLM``; four text domains (garment →
JSON, bar-chart values → highest bar, a sign's letters → the word, a micrograph description → grain class)
get one expert each, trained with ``moesaic finetune`` in two settings (default LoRA on all linear layers;
MLP-only), merged into full weights with ``export-adapter``. Merges: moesaic MoE (hidden gates, k = 1 =
``moe_token`` and k = 2), plain averaging, TIES and DARE-TIES from mergekit 0.1.5, plus an oracle row
(every token to the row's own expert). Every choice is made on validation rows; the selection file must be
committed before the test rows are scored. One command (both stages; the test stage refuses an uncommitted
selection file, so a first run stops after validation):

    make quality-study-real     # or: .venv/bin/python benchmarks/moe_quality_real.py --stage validation
                                #     git add benchmarks/results/quality_real_selection.json && git commit
                                #     .venv/bin/python benchmarks/moe_quality_real.py --stage test

Any RealStudyConfig field can be overridden: ``--set steps=40 --set domains='[chart, sign]'``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

import yaml

from moesaic.errors import MoesaicError
from moesaic.eval.quality_real import RealStudyConfig, real_quality_study
from moesaic.eval.quality_real.report import render


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/quality_real")
    parser.add_argument("--stage", choices=["validation", "test", "all"], default="all")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a RealStudyConfig field (YAML value), repeatable")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress line per stage")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    for noisy in ("httpx", "transformers", "mergekit", "accelerate", "moesaic.moe", "moesaic.finetune"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    data: dict[str, object] = {"out": args.out, "stage": args.stage}
    for item in args.set:
        key, _, value = item.partition("=")
        data[key.strip()] = yaml.safe_load(value)
    try:
        result = real_quality_study(RealStudyConfig.validated(data, source="--set"))
    except MoesaicError as exc:
        print(f"error: {exc.message}" + (f"\n  hint: {exc.hint}" if exc.hint else ""), file=sys.stderr)
        return 2
    if "phases" not in result:  # validation stage: the selection
        print(json.dumps(result["choices"], indent=2))
        return 0
    phase = result["phases"]["A"]
    print(render(phase, "validation") + "\n\n" + render(phase, "test"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
