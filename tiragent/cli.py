"""The ``tir-agent`` command line. Each subcommand wires library parts together; no logic lives here."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from transformers import HfArgumentParser

from tiragent.errors import TirAgentError
from tiragent.tasks import TASK_OF_DEGRADATION

T = TypeVar("T")


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _parse_params(pairs: Sequence[str]) -> dict[str, Any]:
    params = {}
    for pair in pairs:
        if "=" not in pair:
            raise TirAgentError(f"--param expects KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        params[key.strip()] = _parse_value(value.strip())
    return params


def cmd_degrade(args: argparse.Namespace) -> int:
    from tiragent.eval.degradations import degrade
    from tiragent.images import read_image, write_image

    names = [n for n in args.with_.split(",") if n.strip()]
    if not names:
        raise TirAgentError("--with needs at least one degradation, e.g. --with noise,jpeg")
    image = read_image(args.image)
    out, steps = degrade(image, names, seed=args.seed)
    write_image(out, args.output)
    print(json.dumps({"input": str(args.image), "output": str(args.output), "seed": args.seed, "steps": steps}, indent=2))
    return 0


def cmd_bench_make(args: argparse.Namespace) -> int:
    from tiragent.eval.bench import make_benchmark

    groups = [g.strip().upper() for g in args.groups.split(",") if g.strip()]
    items = make_benchmark(args.clean, args.out, per_combo=args.per_combo, seed=args.seed, groups=groups)
    print(f"wrote {len(items)} degraded/clean pairs and manifest.json to {args.out}")
    return 0


def cmd_bench_pairs(args: argparse.Namespace) -> int:
    from tiragent.eval.bench import make_pairs_benchmark

    degradations = tuple(d.strip() for d in args.degradations.split(",") if d.strip())
    items = make_pairs_benchmark(args.input, args.target, args.out, degradations=degradations, group=args.group)
    print(f"wrote {len(items)} real pairs and manifest.json to {args.out}")
    return 0


def cmd_tools_list(args: argparse.Namespace) -> int:
    from tiragent.server.registry import list_tools

    specs = list_tools(args.task)
    if args.json:
        print(json.dumps([
            {"key": s.key, "task": s.task.value, "name": s.name, "cost": s.cost.value, "device": s.device, "description": s.description, "params": s.schema()}
            for s in specs
        ], indent=2))
        return 0
    for s in specs:
        fields = ", ".join(s.params.model_fields) or "-"
        print(f"{s.key:32s} {s.cost.value:7s} {s.device:12s} params: {fields}")
    return 0


def cmd_tools_run(args: argparse.Namespace) -> int:
    from tiragent.images import read_image, write_image
    from tiragent.server.pool import ModelPool, PoolConfig

    image = read_image(args.image, max_pixels=args.max_pixels)
    params = _parse_params(args.param)

    async def run() -> Any:
        async with ModelPool(PoolConfig(device=args.device)) as pool:
            return await pool.call(args.tool, image, params, timeout=args.timeout)

    result = asyncio.run(run())
    write_image(result.image, args.output)
    print(json.dumps({"tool": result.tool, "params": result.params, "seconds": round(result.run_s, 4), "output": str(args.output)}, indent=2))
    return 0


def cmd_tools_train(args: argparse.Namespace) -> int:
    from tiragent.train.tool_recipes import ToolTrainConfig
    from tiragent.train.tool_trainer import train_tool

    card = train_tool(from_args(ToolTrainConfig, args))
    print(json.dumps(card, indent=2))
    return 0


def cmd_tools_ship(args: argparse.Namespace) -> int:
    from tiragent.train.ship_tool import ship_tool

    for weights in args.weights:
        print(ship_tool(weights, args.into, self_ensemble=args.self_ensemble).summary())
    return 0


def cmd_train_gen_sft(args: argparse.Namespace) -> int:
    from tiragent.train.configs import GenSFTConfig
    from tiragent.train.sft_data import generate

    card = asyncio.run(generate(from_args(GenSFTConfig, args)))
    print((Path(args.out) / "card.md").read_text())
    print(f"{card['conversations']} conversations in {Path(args.out) / 'data.jsonl'}")
    return 0


def cmd_train_sft(args: argparse.Namespace) -> int:
    from tiragent.train.configs import SFTRunConfig
    from tiragent.train.sft import train_sft

    out = train_sft(from_args(SFTRunConfig, args))
    print(f"policy written to {out}; run it with `tir-agent restore IMAGE -o OUT --policy {out}`")
    return 0


def cmd_train_rl(args: argparse.Namespace) -> int:
    from tiragent.train.configs import RewardConfig, RLRunConfig
    from tiragent.train.rl import train_rl

    out = train_rl(from_args(RLRunConfig, args), from_args(RewardConfig, args))
    card = json.loads((out / "tir_agent_rl.json").read_text())
    print(f"{card['steps']} RL steps, {card['episodes']} episodes in {card['minutes']} min; last reward {card['last_reward']}")
    print(f"policy written to {out}; plot the run with `tir-agent train plot {out}`")
    return 0


def cmd_train_plot(args: argparse.Namespace) -> int:
    from tiragent.train.plot import plot_run

    for path in plot_run(args.run, args.out):
        print(f"written: {path}")
    return 0


def cmd_train_allinone(args: argparse.Namespace) -> int:
    from tiragent.train.allinone import train_allinone
    from tiragent.train.configs import AllInOneConfig

    card = train_allinone(from_args(AllInOneConfig, args))
    print(f"{card['steps']} steps in {card['seconds'] / 60:.1f} min; weights: {Path(args.out) / 'allinone.safetensors'}")
    return 0


def cmd_train_vision(args: argparse.Namespace) -> int:
    from tiragent.train.vision_pretrain import VisionPretrainConfig, pretrain_vision

    card = pretrain_vision(from_args(VisionPretrainConfig, args))
    after, before = card["validation"], card["validation_untrained"]
    print(f"exact-set accuracy on held-out photos {after['exact_set']:.3f} (untrained {before['exact_set']:.3f}, label prior {after['label_prior_exact_set']:.3f})")
    print(f"written: {args.out} (train sft --model {args.out})")
    return 0


def cmd_train_detector(args: argparse.Namespace) -> int:
    from tiragent.train.detector import DetectorTrainConfig, train_detector

    print(f"written: {train_detector(from_args(DetectorTrainConfig, args))}")
    return 0


def cmd_tools_recipes(args: argparse.Namespace) -> int:
    from tiragent.train.tool_recipes import RECIPES

    key_width, arch_width = (max(len(getattr(r, a)) for r in RECIPES.values()) for a in ("key", "arch"))
    for recipe in RECIPES.values():
        print(f"{recipe.key:{key_width}s}  {recipe.arch:{arch_width}s}  {recipe.description}")
    return 0


def cmd_tools_sources(args: argparse.Namespace) -> int:
    from tiragent.server.sources import load_sources

    for s in load_sources(args.manifest).values():
        pin = s.sha256[:12] if s.sha256 else "(no sha256)"
        print(f"{s.name:30s} {s.task.value:15s} {pin:14s} {s.licence}")
    return 0


def cmd_tools_download(args: argparse.Namespace) -> int:
    from tiragent.server.sources import config_snippet, download, get_source

    source = get_source(args.name, args.manifest)
    path = download(source, args.dir, sha256=args.sha256)
    print(f"verified {path} ({source.licence}); add this to a tools config for `tir-agent serve --tools-config`:\n")
    print(config_snippet(source, path.resolve(), (args.sha256 or source.sha256).lower()))
    return 0


def from_args(cls: type[T], args: argparse.Namespace) -> T:
    """A config dataclass from the parsed flags that ``HfArgumentParser`` derived from its fields."""
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if f.init})  # type: ignore[call-arg]


def cmd_metrics(args: argparse.Namespace) -> int:
    from tiragent.eval.metrics import evaluate
    from tiragent.images import read_image

    image = read_image(args.image)
    reference = read_image(args.reference) if args.reference else None
    names = args.metrics.split(",") if args.metrics else None
    print(json.dumps({k: round(v, 4) for k, v in evaluate(image, reference, names).items()}, indent=2))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from tiragent.server.backend import BackendConfig
    from tiragent.server.config import ServerConfig, TransportConfig
    from tiragent.server.pool import PoolConfig
    from tiragent.server.serve import serve

    serve(from_args(ServerConfig, args), from_args(PoolConfig, args), from_args(TransportConfig, args), from_args(BackendConfig, args))
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from tiragent.agent.run import restore_cli

    return asyncio.run(
        restore_cli(args.input, args.output, policy=args.policy, server=args.server, trajectory=args.trajectory,
                    max_steps=args.max_steps, device=args.device, report=args.report, skip_existing=args.skip_existing)  # fmt: skip
    )


def cmd_eval(args: argparse.Namespace) -> int:
    from tiragent.agent.evaluate import evaluate_policies
    from tiragent.eval.html_report import eval_report
    from tiragent.eval.report import write

    out = args.out or args.bench / "eval"
    args.policy = args.policy or ["tir"]
    records = asyncio.run(
        evaluate_policies(args.bench, args.policy, server=args.server, max_steps=args.max_steps, limit=args.limit, device=args.device,
                          trajectories=out / "trajectories")  # fmt: skip
    )
    header = f"Benchmark `{args.bench}`, policies {', '.join(args.policy)}; means over images.\n\n"
    path = write(records, out, header)
    (out / "report.html").write_text(eval_report(out, title=f"tir-agent eval {args.bench.name}", out=out / "report.html"))
    print(path.read_text())
    print(f"written: {path} (and results.json, quality_vs_calls.png beside it); report: {out / 'report.html'}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Restore the bundled example with the agent (the shipped policy by default) and score each step."""
    from tiragent.agent.loop import restore
    from tiragent.agent.policy import create_policy
    from tiragent.agent.record import save_record
    from tiragent.agent.session import open_session
    from tiragent.eval.html_report import restore_report
    from tiragent.eval.metrics import evaluate
    from tiragent.images import read_image, write_image

    examples = resources.files("tiragent") / "examples"
    degraded = read_image(Path(str(args.input or examples / "astronaut_rain+dark.png")))
    reference = read_image(Path(str(examples / "astronaut_clean.png"))) if args.input is None else None
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_image(degraded, out_dir / "0_input.png")
    names = ["psnr", "ssim", "niqe"] if reference is not None else ["niqe", "piqe"]

    def report(label: str, image: Any) -> None:
        scores = evaluate(image, reference, names)
        print(f"{label:34s} " + "  ".join(f"{k} {v:7.3f}" for k, v in scores.items()))

    async def run() -> Any:
        async with open_session() as session:
            result, trajectory = await restore(session, degraded, create_policy(args.policy), name="demo")
            report("input", degraded)
            for i, step in enumerate(trajectory.path(), start=1):
                image = await session.fetch(step.output_id)
                write_image(image, out_dir / f"{i}_{step.key}.png")
                report(f"{i}. {step.key} ({step.seconds:.2f} s)", image)
            await save_record(session, trajectory, out_dir / "trajectories", "demo")
            print(f"policy {args.policy}: {len(trajectory.steps)} tool calls in {trajectory.seconds:.1f} s ({trajectory.stop_reason})")
            return result

    final = asyncio.run(run())
    write_image(final, out_dir / "restored.png")
    (out_dir / "report.html").write_text(restore_report(out_dir / "trajectories", title="tir-agent demo", out=out_dir / "report.html"))
    print(f"restored image: {out_dir / 'restored.png'}")
    print(f"report: {out_dir / 'report.html'} (open it in a browser: every step, and the result against the input)")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """One HTML page of a restore, eval or training run."""
    from tiragent.eval import html_report

    run = Path(args.run)
    if not run.is_dir():
        raise TirAgentError(f"{run}: not a folder (give the output folder of restore, eval or train)")
    out = Path(args.output or run / "report.html")
    embed = {"auto": None, "embed": True, "link": False}[args.images]
    if (run / "results.json").is_file():
        text = html_report.eval_report(run, out=out, embed=embed)
    elif (run / "log.jsonl").is_file() or (run / "trainer_state.json").is_file():
        from tiragent.train.plot import plot_run

        plots = plot_run(run, run / "plots")
        text = html_report.training_report(run, plots[1:])
    else:
        text = html_report.restore_report(run, out=out, embed=embed)
    out.write_text(text)
    print(f"report: {out} ({len(text) / 2**20:.1f} MB, self-contained)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tir-agent", description="Agentic image restoration: tools, degradations, metrics and benchmarks.")
    # Every subcommand's parser is an HfArgumentParser: those given config dataclasses derive their flags from the fields.
    sub = parser.add_subparsers(dest="command", required=True, parser_class=HfArgumentParser)

    p = sub.add_parser("degrade", help="apply degradations to an image, in the given order")
    p.add_argument("image", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--with", dest="with_", required=True, help=f"comma-separated: {', '.join(TASK_OF_DEGRADATION)}")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_degrade)

    bench = sub.add_parser("bench", help="benchmark folders").add_subparsers(dest="bench_command", required=True)
    p = bench.add_parser("make", help="build a benchmark folder (input/, target/, manifest.json) from clean images")
    p.add_argument("--clean", type=Path, required=True, help="folder of clean images")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--per-combo", type=int, default=6, help="images per degradation combination (default 6)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--groups", default="A,B,C", help="which combination groups (default A,B,C)")
    p.set_defaults(func=cmd_bench_make)

    p = bench.add_parser("pairs", help="build a benchmark folder from real degraded/clean pairs (matched by sorted name)")
    p.add_argument("--input", type=Path, required=True, help="folder of degraded images")
    p.add_argument("--target", type=Path, required=True, help="folder of their clean versions")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--degradations", default="noise", help="what the inputs suffer from, comma-separated (default: noise)")
    p.add_argument("--group", default="real")
    p.set_defaults(func=cmd_bench_pairs)

    tools = sub.add_parser("tools", help="the restoration toolbox").add_subparsers(dest="tools_command", required=True)
    p = tools.add_parser("list", help="list the registered tools")
    p.add_argument("--task")
    p.add_argument("--json", action="store_true", help="full descriptions and parameter schemas as JSON")
    p.set_defaults(func=cmd_tools_list)
    p = tools.add_parser("run", help="run one tool on one image through the model pool")
    p.add_argument("tool", help="TASK.NAME, e.g. denoise.nlm")
    p.add_argument("image", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--device", default="auto")
    p.add_argument("--timeout", type=float, default=None)
    p.add_argument("--max-pixels", type=int, default=16_000_000)
    p.set_defaults(func=cmd_tools_run)

    from tiragent.train.tool_recipes import ToolTrainConfig

    p = tools.add_parser("train", help="train one of the project's restoration networks on clean images", dataclass_types=[ToolTrainConfig])
    p.set_defaults(func=cmd_tools_train)
    p = tools.add_parser("ship", help="copy trained weights into the package as the shipped tools their cards name")
    p.add_argument("weights", type=Path, nargs="+", help="safetensors files written by `tools train`")
    p.add_argument("--into", type=Path, default=None, help="weights folder (default: the package's server/weights)")
    p.add_argument("--self_ensemble", "--self-ensemble", action="store_true",
                   help="run the shipped network as a geometric self-ensemble (the mean over the eight flips and rotations; eight times the compute)")
    p.set_defaults(func=cmd_tools_ship)
    p = tools.add_parser("recipes", help="list the learned tools that `tools train` can train")
    p.set_defaults(func=cmd_tools_recipes)
    p = tools.add_parser("sources", help="list the official checkpoints that `tools download` knows")
    p.add_argument("--manifest", type=Path, help="another checkpoint manifest (TOML)")
    p.set_defaults(func=cmd_tools_sources)
    p = tools.add_parser("download", help="download an official checkpoint and verify its sha256")
    p.add_argument("name", help="a name from `tools sources`")
    p.add_argument("--dir", type=Path, default=Path("checkpoints"), help="where to put it (default: ./checkpoints)")
    p.add_argument("--sha256", help="expected digest, for entries without one or to pin another release")
    p.add_argument("--manifest", type=Path, help="another checkpoint manifest (TOML)")
    p.set_defaults(func=cmd_tools_download)

    from tiragent.train.configs import AllInOneConfig, GenSFTConfig, RewardConfig, RLRunConfig, SFTRunConfig

    train = sub.add_parser("train", help="train the policy").add_subparsers(dest="train_command", required=True)
    p = train.add_parser("gen-sft", help="searched and perturbed SFT trajectories over MCP", dataclass_types=[GenSFTConfig])
    p.set_defaults(func=cmd_train_gen_sft)
    p = train.add_parser("sft", help="supervised fine-tuning of the policy on gen-sft conversations (trl)", dataclass_types=[SFTRunConfig])
    p.set_defaults(func=cmd_train_sft)
    p = train.add_parser("rl", help="GRPO of the policy over MCP tool calls with the adaptive reward (trl)", dataclass_types=[RLRunConfig, RewardConfig])
    p.set_defaults(func=cmd_train_rl)
    from tiragent.train.detector import DetectorTrainConfig

    p = train.add_parser("detector", help="train the learned degradation detector on the randomized model", dataclass_types=[DetectorTrainConfig])
    p.set_defaults(func=cmd_train_detector)
    from tiragent.train.vision_pretrain import VisionPretrainConfig

    p = train.add_parser(
        "vision", help="pretrain a Qwen-VL policy's vision tower on degradation recognition (before SFT)", dataclass_types=[VisionPretrainConfig]
    )
    p.set_defaults(func=cmd_train_vision)
    p = train.add_parser("allinone", help="train the all-in-one baseline: one network for every degradation", dataclass_types=[AllInOneConfig])
    p.set_defaults(func=cmd_train_allinone)
    p = train.add_parser("plot", help="plot the trends of a training run (reward, its dimensions and weights, calls, diversity)")
    p.add_argument("run", type=Path, help="the run's folder (its log.jsonl)")
    p.add_argument("--out", type=Path, help="where to write the plots (default: RUN/plots)")
    p.set_defaults(func=cmd_train_plot)

    p = sub.add_parser("metrics", help="quality metrics of an image (full-reference ones with --reference)")
    p.add_argument("image", type=Path)
    p.add_argument("--reference", type=Path)
    p.add_argument("--metrics", help="comma-separated names (default: all that apply)")
    p.set_defaults(func=cmd_metrics)

    from tiragent.server.backend import BackendConfig
    from tiragent.server.config import ServerConfig, TransportConfig
    from tiragent.server.pool import PoolConfig

    p = sub.add_parser("serve", help="run the MCP tool server (stdio or streamable HTTP)", dataclass_types=[TransportConfig, ServerConfig, PoolConfig, BackendConfig])
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("restore", help="restore an image or a folder with an agent over MCP")
    p.add_argument("input", type=Path, help="an image, or a folder of images")
    p.add_argument("-o", "--output", type=Path, required=True, help="output image (or folder, for a folder input)")
    p.add_argument("--policy", default="tir", help="tir (the shipped policy), exhaustive, fixed, oracle, random, or a Qwen-VL checkpoint folder")
    p.add_argument("--server", help="streamable-HTTP URL of a running server (default: start one over stdio)")
    p.add_argument("--trajectory", type=Path, help="write the trajectory JSON and its step thumbnails here (a folder, for a folder input)")
    p.add_argument("--report", action="store_true", help="also write report.html beside the output (see `tir-agent report`)")
    p.add_argument("--skip-existing", action="store_true", help="leave out images whose output (and trajectory) exist: resume a killed batch")
    p.add_argument("--max-steps", type=int, help="most tool calls per image (default: the policy's own)")
    p.add_argument("--device", default="auto", help="device of the stdio server it starts")
    p.set_defaults(func=cmd_restore)

    from tiragent.eval.html_report import EMBED_UP_TO

    p = sub.add_parser("report", help="one self-contained HTML page of a restore, eval or training run")
    p.add_argument("run", type=Path, help="the run's folder: restore's output folder (with its trajectories), eval's --out, or a train --out")
    p.add_argument("-o", "--output", type=Path, help="the HTML file (default: RUN/report.html)")
    p.add_argument("--images", choices=["auto", "embed", "link"], default="auto",
                   help=f"embed the images (one file that travels alone) or link the files beside it; auto: embed up to {EMBED_UP_TO} images")  # fmt: skip
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("eval", help="evaluate policies on a benchmark folder (made by `bench make`)")
    p.add_argument("--bench", type=Path, required=True)
    p.add_argument("--policy", action="append", help="repeat for several policies (default: tir, the shipped policy)")
    p.add_argument("--out", type=Path, help="output folder (default: BENCH/eval)")
    p.add_argument("--server", help="streamable-HTTP URL of a running server (default: start one over stdio)")
    p.add_argument("--max-steps", type=int)
    p.add_argument("--limit", type=int, help="only the first N images")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("demo", help="restore the bundled example offline with the agent")
    p.add_argument("--input", type=Path, help="another degraded image instead of the bundled one")
    p.add_argument("--out", default="demo-output")
    p.add_argument("--policy", default="tir", help="tir (the shipped policy), or any other --policy of restore")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (TirAgentError, FileNotFoundError) as err:
        print(f"tir-agent: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        print(f"tir-agent: interrupted{': ' + str(err) if str(err) else ''}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
