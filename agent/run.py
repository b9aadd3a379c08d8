"""`tir-agent restore`: one image or a folder, through one MCP session, with trajectories."""

from __future__ import annotations

import sys
from pathlib import Path

from tqdm import tqdm

from tiragent.agent.loop import restore
from tiragent.agent.policy import create_policy
from tiragent.agent.record import save_record
from tiragent.agent.session import ServerError, open_session
from tiragent.errors import ImageError, TirAgentError
from tiragent.images import list_images, read_image, write_image


def _pairs(input_path: Path, output: Path, trajectory: Path | None) -> list[tuple[Path, Path, Path | None]]:
    if input_path.is_dir():
        images = list_images(input_path)
        if not images:
            raise ImageError(f"{input_path}: the folder holds no images (.png, .jpg, .jpeg, .bmp, .tif, .tiff, .webp)")
        if output.exists() and not output.is_dir():
            raise TirAgentError(f"{output}: the input is a folder, so the output must be a folder too")
        return [(p, output / p.name, trajectory / f"{p.stem}.json" if trajectory else None) for p in images]
    if not input_path.exists():
        raise ImageError(f"{input_path}: no such file or folder")
    return [(input_path, output, trajectory)]


async def restore_cli(
    input_path: Path,
    output: Path,
    *,
    policy: str,
    server: str | None,
    trajectory: Path | None,
    max_steps: int | None,
    device: str = "auto",
    report: bool = False,
    skip_existing: bool = False,
) -> int:
    """Returns the exit status: 0 all restored, 1 some files failed, 2 nothing could run.

    ``trajectory``: where each image's trajectory and the thumbnails of its steps go; ``report``: also write
    ``report.html`` beside the output (trajectories default to ``trajectories/`` there)."""
    run_dir = output if input_path.is_dir() else output.parent
    if report and trajectory is None:
        trajectory = run_dir / "trajectories" if input_path.is_dir() else run_dir / "trajectories" / f"{input_path.stem}.json"
    jobs = _pairs(input_path, output, trajectory)
    if skip_existing:
        left = [j for j in jobs if not (j[1].is_file() and (j[2] is None or j[2].is_file()))]
        if len(left) < len(jobs):
            print(f"skipping {len(jobs) - len(left)} image(s) already restored", file=sys.stderr)
        jobs = left
        if not jobs:
            print("every image is already restored")
            return 0
    agent = create_policy(policy)
    failed: list[str] = []
    done = 0
    async with open_session(server, device=device) as session:
        folder = input_path.is_dir()
        bar = tqdm(jobs, desc="restore", unit="img", disable=not folder, file=sys.stderr)
        for source, target, trajectory_file in bar:
            try:
                image = read_image(source)
            except ImageError as err:
                failed.append(str(err))
                tqdm.write(f"tir-agent: skipped: {err}", file=sys.stderr)
                continue
            try:
                result, record = await restore(session, image, agent, max_steps=max_steps, name=str(source))
            except ServerError as err:
                raise ServerError(f"{err} (while restoring {source}; {done} finished image(s) are written)") from err
            except TirAgentError as err:
                failed.append(f"{source}: {err}")
                tqdm.write(f"tir-agent: failed: {source}: {err}", file=sys.stderr)
                continue
            write_image(result, target)
            if trajectory_file is not None:
                await save_record(session, record, trajectory_file.parent, trajectory_file.stem)
            done += 1
            if not folder:
                path = " -> ".join(s.key for s in record.path()) or "no tool"
                print(f"{source} -> {target}: {path} ({len(record.steps)} tool calls, {record.seconds:.1f} s)")
    if input_path.is_dir():
        print(f"restored {done} of {len(jobs)} images into {output}" + (f"; {len(failed)} failed" if failed else ""))
    if report and done:
        from tiragent.eval.html_report import restore_report

        page = run_dir / "report.html"
        folder = trajectory if trajectory.is_dir() else trajectory.parent
        page.write_text(restore_report(folder, title=f"tir-agent restore {input_path.name}", out=page))
        print(f"report: {page}")
    return 1 if failed else 0
