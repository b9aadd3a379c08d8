"""The agent loop: run a policy over MCP tool calls, one step at a time, recording everything."""

from __future__ import annotations

import time

import numpy as np

from tiragent.agent.actions import Action, Step, Stop, Trajectory
from tiragent.agent.policy import NO_REFERENCE_METRICS, Observation, Policy
from tiragent.agent.session import ToolCallError, ToolSession


async def restore(
    session: ToolSession,
    image: np.ndarray,
    policy: Policy,
    *,
    max_steps: int | None = None,
    reference: np.ndarray | None = None,
    known_tasks: list[str] | None = None,
    name: str = "",
) -> tuple[np.ndarray, Trajectory]:
    """Restore one image; returns the final image and the trajectory of every tool call.

    A tool error (bad parameters, a failing tool) is recorded as a failed step and the
    policy decides what to do next; a dead server raises ``ServerError``.
    """
    started = time.perf_counter()
    budget = policy.default_max_steps if max_steps is None else max_steps
    original_id = await session.load(image)
    observation = Observation(
        original_id=original_id,
        current_id=original_id,
        space=await session.action_space(),
        session=session,
        reference_id=await session.load(reference) if reference is not None else None,
        known_tasks=known_tasks,
        original_size=(image.shape[1], image.shape[0]),
    )
    observation.metrics[original_id] = await session.assess(original_id, metrics=NO_REFERENCE_METRICS)
    trajectory = Trajectory(input=name, original_id=original_id, policy=policy.name, original_metrics=observation.metrics[original_id])
    await policy.reset(observation)
    final, reason = None, f"step budget of {budget} spent"
    for index in range(budget):
        decision = await policy.next(observation)
        if isinstance(decision, Stop):
            final, reason = decision.final or observation.current_id, decision.reason or "policy stopped"
            break
        trajectory.steps.append(await _run_step(session, observation, decision, index))
    if final is None:
        chooser = getattr(policy, "final", None)
        final = chooser(observation) if chooser is not None else observation.current_id
    trajectory.final_id, trajectory.stop_reason = final, reason
    result = await session.fetch(final)
    trajectory.seconds = round(time.perf_counter() - started, 3)
    return result, trajectory


async def _run_step(session: ToolSession, observation: Observation, action: Action, index: int) -> Step:
    observation.space.check(action)
    input_id = action.on or observation.current_id
    try:
        result = await session.apply(action, input_id)
    except ToolCallError as err:
        step = Step(index, action.task, action.model, action.params, input_id, input_id, 0, 0, 0.0, 0.0, {}, error=str(err))
        observation.steps.append(step)
        return step
    if result.image_id not in observation.metrics:
        observation.metrics[result.image_id] = await session.assess(result.image_id, metrics=NO_REFERENCE_METRICS)
    step = Step(
        index=index,
        task=action.task,
        model=action.model,
        params=result.params,
        input_id=input_id,
        output_id=result.image_id,
        width=result.width,
        height=result.height,
        seconds=result.seconds,
        queue_wait_seconds=result.queue_wait_seconds,
        metrics=observation.metrics[result.image_id],
    )
    observation.steps.append(step)
    observation.current_id = result.image_id
    return step
