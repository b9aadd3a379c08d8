"""One conversation format: what the policy is trained on is, token for token, what it is given when it acts."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from tiragent.agent.conversation import GRID, ViewConfig, crop_window, fetch_views, local_views, split_images, stop_turn, tool_schemas
from tiragent.agent.loop import restore
from tiragent.agent.policies.qwen import QwenVLPolicy

pytestmark = pytest.mark.anyio

REPLIES = [
    '<tool_call>\n{"name": "dehaze", "arguments": {"model": "dcp", "omega": 0.9}}\n</tool_call>',
    '<tool_call>\n{"name": "denoise", "arguments": {"model": "nlm"}}\n</tool_call>',
    "STOP",
]


@pytest.fixture
def photo():
    from skimage import data
    from skimage.transform import resize

    return resize(data.astronaut(), (200, 300), anti_aliasing=True).astype(np.float32)  # larger than the whole view


async def recorded_episode(checkpoint, session, photo, views=None):
    """Run the policy with scripted replies; keep what it was given at each decision."""
    policy = QwenVLPolicy(str(checkpoint), views=views or ViewConfig(whole=96, crop=64))
    replies, prompts = iter(REPLIES), []

    def scripted(tools):
        prompts.append((copy.copy(policy.messages), tools))
        return next(replies)

    policy.generate = scripted
    _, trajectory = await restore(session, photo, policy)
    return policy, prompts, trajectory


def tokens(processor, messages, tools, **options):
    out = processor.apply_chat_template(messages, tools=tools, tokenize=True, return_dict=True, **options)
    return out, list(np.asarray(out["input_ids"]).reshape(-1))


async def test_every_inference_prompt_is_a_prefix_of_the_training_conversation(checkpoint, session, photo):
    policy, prompts, trajectory = await recorded_episode(checkpoint, session, photo)
    assert [s.key for s in trajectory.steps] == ["dehaze.dcp", "denoise.nlm"] and trajectory.stop_reason == "policy answered STOP"
    conversation = [*policy.messages, stop_turn()]  # the episode as SFT and RL train on it
    tools = prompts[0][1]
    full, full_ids = tokens(policy.processor, conversation, tools, return_assistant_tokens_mask=True)
    mask = list(np.asarray(full["assistant_masks"]).reshape(-1))
    assert len(prompts) == 3
    for (messages, _), reply in zip(prompts, REPLIES):
        prompt, ids = tokens(policy.processor, messages, tools, add_generation_prompt=True)
        assert full_ids[: len(ids)] == ids  # token for token
        assert not any(mask[: len(ids)][-3:])  # the prompt's own tokens are never trained on
        target = policy.processor.tokenizer.decode(full_ids[len(ids) :]).split("<|im_end|>")[0]
        assert target == reply  # what follows the prompt in training is exactly what the policy said
    said = policy.processor.tokenizer.decode([t for t, m in zip(full_ids, mask) if m])
    assert said == "<|im_end|>".join(REPLIES) + "<|im_end|>"  # assistant-only loss covers the replies and nothing else


async def test_the_policy_sees_a_whole_view_and_a_native_crop(checkpoint, session, photo):
    policy, prompts, _ = await recorded_episode(checkpoint, session, photo)
    _, images = split_images(policy.messages)
    assert len(images) == 2 * 3  # the original and two results, each as a whole view and a crop
    whole, crop = np.asarray(images[0]), np.asarray(images[1])
    assert max(whole.shape[:2]) == 96 and crop.shape[:2] == (64, 64)
    left, top, w, h = crop_window(300, 200, 64)
    expected = (np.clip(photo[top : top + h, left : left + w], 0, 1) * 255 + 0.5).astype(np.uint8)
    assert np.abs(crop.astype(int) - expected).max() <= 1  # native resolution: the pixels themselves, not a resample


def test_crop_windows_sit_on_the_grid_inside_the_image():
    for width, height, size in ((300, 200, 64), (1000, 37, 128), (129, 4000, 128)):
        left, top, w, h = crop_window(width, height, size)
        assert left % GRID == 0 and top % GRID == 0 and left + w <= width and top + h <= height and (w, h) == (min(size, width), min(size, height))
    assert crop_window(100, 80, 128) is None and crop_window(300, 200, 0) is None


async def test_small_images_are_shown_once(session, astronaut):
    image_id = await session.load(astronaut)
    shown = await fetch_views(session, image_id, 128, 128, ViewConfig(whole=256, crop=64))
    assert len(shown) == 1 and shown[0].shape == (128, 128, 3)



async def test_fixed_size_views_do_not_tell_an_images_size(session, astronaut):
    """With fixed_size, a 40-px and a 200-px photo give views of the same shapes: two images, whole and crop."""
    import cv2

    views = ViewConfig(whole=96, crop=64, fixed_size=True)
    shapes = []
    for side in (40, 200):
        small = np.clip(cv2.resize(astronaut, (side, side), interpolation=cv2.INTER_AREA), 0, 1)
        shown = await fetch_views(session, await session.load(small), side, side, views)
        shapes.append([v.shape for v in shown])
    assert shapes[0] == shapes[1] == [(96, 96, 3), (64, 64, 3)]
    # the large photo's crop is still native pixels; the small one's is the whole photo upscaled
    big = np.clip(cv2.resize(astronaut, (200, 200), interpolation=cv2.INTER_AREA), 0, 1)
    shown = await fetch_views(session, await session.load(big), 200, 200, views)
    left, top, w, h = crop_window(200, 200, 64)
    assert np.abs(shown[1] - big[top : top + h, left : left + w]).max() <= 0.5 / 255 + 1e-6
    # a non-square photo keeps its aspect ratio
    wide = np.clip(cv2.resize(astronaut, (60, 30), interpolation=cv2.INTER_AREA), 0, 1)
    shown = await fetch_views(session, await session.load(wide), 60, 30, views)
    assert [v.shape for v in shown] == [(48, 96, 3), (32, 64, 3)]

@pytest.mark.parametrize("fixed", [False, True])
async def test_local_views_are_the_views_a_session_fetches(session, astronaut, fixed):
    """Training outside a session (vision pretraining) shows the policy what a session shows it, to PNG rounding."""
    import cv2

    views = ViewConfig(whole=96, crop=64, fixed_size=fixed)
    for w, h in ((200, 150), (80, 60), (128, 40)):
        image = np.clip(cv2.resize(astronaut, (w, h), interpolation=cv2.INTER_AREA), 0, 1)
        fetched = await fetch_views(session, await session.load(image), w, h, views)
        local = local_views(image, views)
        assert [v.shape for v in local] == [v.shape for v in fetched]
        for a, b in zip(local, fetched):
            assert a.dtype == np.uint8 and np.abs(a / 255.0 - b).max() <= 1.5 / 255


async def test_the_short_prompt_is_much_shorter(checkpoint, session):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(checkpoint)
    space = await session.action_space()
    messages = [{"role": "user", "content": [{"type": "text", "text": "Restore this photo."}]}]
    full = len(tokens(processor, messages, tool_schemas(space))[1])
    short = len(tokens(processor, messages, tool_schemas(space, short=True))[1])
    assert short < full / 3, (short, full)
    for schema in tool_schemas(space, short=True):
        assert schema["function"]["models"] == space.models[schema["function"]["name"]]


async def test_get_image_windows_are_checked(session, astronaut):
    image_id = await session.load(astronaut)
    crop = await session.fetch(image_id, window=(16, 32, 40, 24))
    assert np.abs(crop - astronaut[32:56, 16:56]).max() <= 0.5 / 255 + 1e-6
    from tiragent.agent.session import ToolCallError

    with pytest.raises(ToolCallError, match=r"window \[120, 0, 16, 16\] is not inside the 128x128 image"):
        await session.fetch(image_id, window=(120, 0, 16, 16))


def test_join_images_undoes_split_images():
    from tiragent.agent.conversation import join_images, result_turn, task_turn

    messages = [task_turn(["a", "b"]), {"role": "assistant", "content": "STOP"}, result_turn("done", ["c"])]
    placeholders, images = split_images(messages)
    assert images == ["a", "b", "c"] and join_images(placeholders, images) == messages
