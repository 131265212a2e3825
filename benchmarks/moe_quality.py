"""Merged-model quality study: does a sparse MoE of fine-tuned experts keep what each expert learnt?

A tiny random Idefics3 base (Llama text model: hidden 128, 3 layers, init std 0.02), pre-trained briefly on
domain-neutral captions, gets one expert per synthetic image domain (colour naming, shape naming, dot
position, dot counting; each domain has its own question wording and its own image style), fine-tuned on
the text MLPs only. The experts are merged three ways — an MoE with ``hidden`` gates, the same MoE with
trained gates (per-token classifiers), and a plain weight average — and every model is evaluated on every
domain (greedy exact match), plus an oracle row (every token forced to the domain's own expert). Both
MoEs are also evaluated, without new training, with per-request routing (``*_seq``: per layer, the router
logits averaged over the prompt pick one expert for the whole request; ``*_seq_first``: the first layer's
pooled choice for every layer). Fixed seed; 2–11 min on 2 shared CPU cores, depending on the load
(results: BENCHMARKS.md, "Merged-model quality study"). One command:

    make quality-study            # or: OMP_NUM_THREADS=2 .venv/bin/python benchmarks/moe_quality.py

Prints the accuracy matrix, the retention ratios (merged accuracy on d ÷ expert d's accuracy on d) and the
routing shares; writes results.json, the resolved config and route_report.png heatmaps into --out.
Any QualityStudyConfig field can be overridden: ``--set steps=100 --set domains='[colour, count]'``.
"""

from __future__ import annotations

import argparse
import logging
import sys

import yaml

from moesaic.errors import MoesaicError
from moesaic.eval.quality import QualityStudyConfig, quality_study


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/quality", help="output folder (default: runs/quality)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a QualityStudyConfig field (YAML value), repeatable")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each phase")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    data: dict[str, object] = {"out": args.out, "seed": args.seed}
    for item in args.set:
        key, _, value = item.partition("=")
        data[key.strip()] = yaml.safe_load(value)
    try:
        result = quality_study(QualityStudyConfig.validated(data, source="--set"))
    except MoesaicError as exc:
        print(f"error: {exc.message}" + (f"\n  hint: {exc.hint}" if exc.hint else ""), file=sys.stderr)
        return 2
    print(result.render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
