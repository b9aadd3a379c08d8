"""The dev benchmark: every built-in policy on the 16 protocol combinations built from CBSD68.

Builds the benchmark folder (``tir-agent bench make``) if it is missing, evaluates the
policies (``tir-agent eval``), and writes docs/benchmarks/agents.md with the tables, plus
results.json and quality_vs_calls.png in docs/benchmarks/agents/.

    python benchmarks/agents.py [--per-combo 6] [--policy fixed --policy exhaustive ...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
from pathlib import Path

from common import ROOT, SHARED_DATA, write_report

from tiragent.agent.evaluate import evaluate_policies
from tiragent.eval.bench import make_benchmark, make_pairs_benchmark
from tiragent.eval.report import aggregate, markdown, plot


def allinone_records(bench: Path, weights: Path, limit: int | None) -> list[dict]:
    """The all-in-one network on every image of the benchmark: one forward pass (one call), scored as the agents are."""
    import time

    from tiragent.agent.evaluate import score
    from tiragent.eval.bench import load_manifest
    from tiragent.images import read_image
    from tiragent.server.nets import load_net
    from tiragent.train.allinone import apply

    net = load_net(weights).eval()
    records = []
    for item in load_manifest(bench)[:limit]:
        degraded, target = read_image(bench / "input" / item.name), read_image(bench / "target" / item.name)
        started = time.perf_counter()
        result = apply(net, degraded, target)
        records.append({"policy": "all-in-one", "name": item.name, "group": item.group, "combination": "+".join(item.combination), "tool_calls": 1,
                        "seconds": round(time.perf_counter() - started, 3), "path": ["allinone"], "calls_by_cost": {"low": 1}, "learned_calls": 1,
                        **score(result, target)})  # fmt: skip
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clean", type=Path, default=SHARED_DATA / "clean" / "CBSD68")
    parser.add_argument("--bench", type=Path, default=Path("/tmp/tir-agent-devbench"))
    parser.add_argument("--per-combo", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--policy", action="append", help="default: random, fixed, exhaustive, oracle")
    parser.add_argument("--name", default="agents")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--pairs", type=Path, help="a folder with input/ and target/ real pairs (e.g. PolyU_noise) instead of synthesis")
    parser.add_argument("--degradations", choices=["protocol", "independent"], default="protocol",
                        help="independent: the combinations made by albumentations (benchmarks/independent.py), code this project did not write")
    parser.add_argument("--groups", default="A,B,C", help="combination groups; OOD: two-degradation combinations not among the 16")
    parser.add_argument("--max-steps", type=int, help="most tool calls per image (default: each policy's own)")
    parser.add_argument("--merge", action="append", default=[],
                        help="add the records of an earlier run on the same --bench (docs/benchmarks/NAME.json) for the policies this run leaves out; "
                        "NAME:LABEL names its policies 'POLICY (LABEL)', to set runs of one policy under other servers side by side; "
                        "NAME:LABEL:P1,P2 takes only those policies (LABEL may be empty); repeatable")
    parser.add_argument("--only-merge", action="store_true", help="evaluate nothing: the table of the --merge runs' records")
    parser.add_argument("--server", help="streamable-HTTP URL of a running server (e.g. `tir-agent serve --transport http --detector learned`); default: one over stdio with the defaults")
    parser.add_argument("--allinone", type=Path, help="also the all-in-one baseline network (`tir-agent train allinone`), one call per image")
    args = parser.parse_args()
    policies = args.policy or ["random", "fixed", "exhaustive", "oracle"]
    if not (args.bench / "manifest.json").exists():
        if args.pairs:
            make_pairs_benchmark(args.pairs / "input", args.pairs / "target", args.bench, degradations=("noise",))
        else:
            synthesis, protocol = None, "AgenticIR/MiO100 combinations, tir-agent synthesis"
            if args.degradations == "independent":
                from independent import synthesize_independent

                synthesis, protocol = synthesize_independent, "AgenticIR/MiO100 combinations, albumentations synthesis (benchmarks/independent.py)"
            groups = [g.strip().upper() for g in args.groups.split(",")]
            make_benchmark(args.clean, args.bench, per_combo=args.per_combo, seed=args.seed, groups=groups, synthesis=synthesis, protocol=protocol)
    if args.only_merge:
        policies, records = [], []
    else:
        records = asyncio.run(evaluate_policies(args.bench, policies, server=args.server, limit=args.limit, max_steps=args.max_steps))
    if args.allinone:
        records += allinone_records(args.bench, args.allinone, args.limit)
        policies = [*policies, "all-in-one"]
    merged = ""
    for entry in args.merge:
        name, _, rest = entry.partition(":")
        label, _, only = rest.partition(":")
        earlier = json.loads((ROOT / "docs" / "benchmarks" / f"{name}.json").read_text())
        have = {r["policy"] for r in records}
        wanted = earlier["records"] if not only else [r for r in earlier["records"] if r["policy"] in {"input", *only.split(",")}]
        named = [{**r, "policy": f"{r['policy']} ({label})"} if label and r["policy"] != "input" else r for r in wanted]
        kept = [r for r in named if r["policy"] not in have]
        records = [*records, *kept]
        taken = sorted({r["policy"] for r in kept} - {"input"})
        merged += f" Records of {', '.join(taken)} from [{name}]({name}.md) (`{earlier['command']}`), same benchmark folder."
        policies = [*policies, *taken]
    table = aggregate(records)
    out = ROOT / "docs" / "benchmarks" / args.name
    out.mkdir(parents=True, exist_ok=True)
    plot(table, out / "quality_vs_calls.png")
    source = (
        f"Real pairs: `tir-agent bench pairs --input {args.pairs}/input --target {args.pairs}/target` ({len(records) // (len(policies) + 1)} images)"
        if args.pairs
        else f"Benchmark from `{os.path.relpath(args.clean, ROOT)}`: groups {args.groups}, {args.per_combo} per combination, seed {args.seed}, "
        f"{args.degradations} degradations ({len(records) // (len(policies) + 1)} images)"
    )
    text = (
        f"{source}, then `tir-agent eval` with policies {', '.join(policies)}. Tools: the whole toolbox, classical and learned. 'input' is the degraded image "
        "(low-resolution inputs bicubic-upscaled for scoring); results of another size are resized to the target. "
        "NIQE and PIQE: lower is better. Seconds include the per-step quality assessment the agent loop records. "
        f"Plot: [{args.name}/quality_vs_calls.png]({args.name}/quality_vs_calls.png).{merged}\n\n" + markdown(table)
    )
    print(text)
    shutil.copy(write_report(args.name, text, {"table": table, "records": records}), out / "results.md")


if __name__ == "__main__":
    main()
