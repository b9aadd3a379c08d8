"""The learned degradation detector: training end to end on test-made images, its weights, severities and calibration,
and the MCP tool that serves it."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from mcp import Client

from tiragent.agent.conversation import perception_text
from tiragent.errors import ParameterError, TirAgentError
from tiragent.eval.calibration import expected_calibration_error, fit_temperature
from tiragent.eval.degradations import degrade
from tiragent.images import encode_image, read_image, write_image
from tiragent.server.app import ServerConfig, build_server
from tiragent.server.detector_net import DEGRADATIONS, SEVERITIES, DetectorNet, severity_of, views
from tiragent.server.nets import load_net, read_info
from tiragent.server.perception import analyse


def textured(seed: int, h: int = 150, w: int = 190) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / 20.0
    base = np.stack([np.sin(xx * (1 + c) + yy * rng.uniform(0.5, 2)) for c in range(3)], axis=2) * 0.3 + 0.5
    return np.clip(base + rng.normal(0, 0.02, (h, w, 3)), 0, 1).astype(np.float32)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from tiragent.train.detector import DetectorTrainConfig, train_detector

    root = tmp_path_factory.mktemp("detector")
    for i in range(4):
        write_image(textured(i), root / "photos" / f"{i}.png")
    config = DetectorTrainConfig(data=[root / "photos"], out=root / "run", samples=48, val_samples=16, steps=24, batch=8, workers=1, val_fraction=0.25)
    return train_detector(config), config


def test_severity_round_trips_and_reads_both_models_parameters() -> None:
    for spec in SEVERITIES.values():
        for value in (spec.low, (spec.low + spec.high) / 2, spec.high):
            assert spec.decode(spec.encode(value)) == pytest.approx(value, rel=1e-6, abs=1e-6)
    assert severity_of("motion", {"radius": 10, "sigma": 3.0, "angle": 0}) == 20.0  # the protocol's one-sided kernel
    assert severity_of("motion", {"variant": "box", "length": 26, "angle": 0}) == 26.0
    assert severity_of("noise", {"kind": "poisson", "scale": 2.0}) == pytest.approx(22.5, abs=0.1)
    assert severity_of("haze", {"airlight": 0.9, "beta": 1.0}) is None


def test_views_keep_native_pixels_and_pad_small_images() -> None:
    image = textured(0)
    crops = views(image, 96)
    assert crops.shape == (5, 96, 96, 3)
    assert any(np.array_equal(c, image[27:123, 47:143]) for c in crops)  # the centre crop, pixel for pixel
    small = views(image[:40, :50], 96)
    assert small.shape == (5, 96, 96, 3) and np.array_equal(small[0][:40, :50], image[:40, :50])


def test_training_writes_calibrated_weights_with_a_card(trained) -> None:
    weights, config = trained
    info = read_info(weights)
    assert info.arch == "detector"
    card = info.card
    assert set(card["temperatures"]) == set(DEGRADATIONS) and all(t > 0 for t in card["temperatures"].values())
    assert card["recipe"]["samples"] == config.samples and card["train_photos"] == 3 and card["validation_photos"] == 1
    assert 0.0 <= card["validation"]["exact_set"] <= 1.0 and 0.0 <= card["validation"]["ece"] <= 1.0
    net = load_net(weights)
    assert isinstance(net, DetectorNet)
    assert net.temperature.tolist() == pytest.approx(list(card["temperatures"].values()), rel=1e-3)
    assert (config.out / "train.npz").is_file() and (config.out / "last.pt").is_file()


def test_the_learned_detector_gives_probabilities_and_severities(trained) -> None:
    weights, _ = trained
    noisy, _ = degrade(textured(9), ["noise"], seed=0)
    found = analyse(noisy, "learned", weights)
    assert found.detector == "learned"
    assert set(found.probabilities) == set(DEGRADATIONS) and all(0.0 <= p <= 1.0 for p in found.probabilities.values())
    assert set(found.severity) == set(SEVERITIES)
    assert all(spec.low <= found.severity[n] <= spec.high for n, spec in SEVERITIES.items())
    assert analyse(noisy, "logistic").detector == "logistic" and analyse(noisy, "logistic").severity == {}


def test_bad_detector_settings_fail_clearly(tmp_path) -> None:
    image = textured(1)
    with pytest.raises(ParameterError, match="unknown detector 'cnn'"):
        analyse(image, "cnn")
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="damaged.safetensors"):
        analyse(image, "learned", damaged)


def test_damaged_shipped_weights_fall_back_to_the_logistic_detector(tmp_path, monkeypatch) -> None:
    import tiragent.server.perception as perception

    damaged = tmp_path / "detector_net.safetensors"
    damaged.write_bytes(b"\x00" * 64)
    monkeypatch.setattr(perception, "learned_weights", lambda: damaged)
    assert perception.analyse(textured(2), "auto").detector == "logistic"
    assert perception.analyse(textured(2)).detector == "logistic"  # the default


def test_temperature_fitting_undoes_overconfidence() -> None:
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2, 4000)
    labels = rng.random(4000) < 1 / (1 + np.exp(-true_logits))
    overconfident = 3.0 * true_logits
    t = fit_temperature(overconfident, labels)
    assert t == pytest.approx(3.0, rel=0.15)
    before = expected_calibration_error(1 / (1 + np.exp(-overconfident)), labels)
    after = expected_calibration_error(1 / (1 + np.exp(-overconfident / t)), labels)
    assert after < before / 2


def learned_server(trained, root) -> tuple[Client, np.ndarray]:
    """A client of a server whose default detector is the test-trained learned one, and a noisy image for it."""
    weights, _ = trained
    noisy, _ = degrade(textured(5), ["noise"], seed=1)
    config = ServerConfig(roots=[root], preview_size=0, detector="learned", detector_weights=weights)
    return Client(build_server(config)), noisy


@pytest.mark.anyio
async def test_detect_degradations_serves_the_learned_detector(trained, tmp_path) -> None:
    client, noisy = learned_server(trained, tmp_path)
    async with client:
        loaded = await client.call_tool("load_image", {"data": base64.b64encode(encode_image(noisy)).decode()})
        result = (await client.call_tool("detect_degradations", {"image_id": loaded.structured_content["image_id"]})).structured_content
    assert result["detector"] == "learned"
    assert set(result["degradations"]) == set(DEGRADATIONS)
    assert set(result["severity"]) == {d for d in SEVERITIES if result["degradations"][d] > 0.5}


@pytest.mark.anyio
async def test_a_default_server_answers_with_the_shipped_learned_detector(tmp_path) -> None:
    from tiragent.server.perception import learned_weights

    assert learned_weights().is_file()  # shipped inside the package
    noisy, _ = degrade(textured(5), ["noise"], seed=1)
    async with Client(build_server(ServerConfig(roots=[tmp_path], preview_size=0))) as client:
        loaded = await client.call_tool("load_image", {"data": base64.b64encode(encode_image(noisy)).decode()})
        image_id = loaded.structured_content["image_id"]
        default = (await client.call_tool("detect_degradations", {"image_id": image_id})).structured_content
        logistic = (await client.call_tool("detect_degradations", {"image_id": image_id, "detector": "logistic"})).structured_content
    assert default["detector"] == "learned" and set(default["severity"]) == {d for d in SEVERITIES if default["degradations"][d] > 0.5}
    assert logistic["detector"] == "logistic" and logistic["severity"] == {}


@pytest.mark.anyio
async def test_a_client_chooses_the_detector_and_a_policy_keeps_its_own(trained, tmp_path) -> None:
    from tiragent.agent.conversation import ViewConfig, perceived
    from tiragent.agent.session import ToolSession

    client, noisy = learned_server(trained, tmp_path)
    async with client:
        session = ToolSession(client)
        image_id = await session.load(noisy)
        assert (await session.perceive(image_id))["detector"] == "learned"  # the server's own
        assert (await session.perceive(image_id, "logistic"))["detector"] == "logistic"
        logistic = await perceived(session, image_id, ViewConfig(perception=True, detector="logistic"))
        assert logistic == perception_text(await session.perceive(image_id, "logistic"))
        bad = await client.call_tool("detect_degradations", {"image_id": image_id, "detector": "oracle"})
        assert bad.is_error
        assert (await session.perceive(image_id))["detector"] == "learned"  # the session goes on
    with pytest.raises(TirAgentError, match="detector 'oracle'"):
        ViewConfig(detector="oracle")


def test_images_far_from_the_training_set_get_probabilities_not_a_crash():
    # a one-pixel checkerboard drives the logistic models' scores past +-800, where exp() overflows
    checker = (np.indices((64, 64)).sum(0) % 2).astype(np.float32)[..., None].repeat(3, 2)
    for image in (checker, np.zeros((32, 32, 3), np.float32), np.ones((32, 32, 3), np.float32)):
        found = analyse(image, "logistic")
        assert all(0.0 <= p <= 1.0 for p in found.probabilities.values()), found.probabilities


def test_camera_and_small_samples_are_labelled_as_what_they_carry(tmp_path) -> None:
    from tiragent.train.detector import DetectorTrainConfig, render_sample

    write_image(textured(0, 200, 240), tmp_path / "p.png")
    config = DetectorTrainConfig(randomized_share=0.7, view=96, camera_share=1.0)
    camera = [render_sample(str(tmp_path / "p.png"), seed, config, 2) for seed in range(40)]
    present = np.stack([s["present"] for s in camera])
    noise = DEGRADATIONS.index("noise")
    clean = present.sum(axis=1) == 0
    noise_only = (present[:, noise] == 1) & (present.sum(axis=1) == 1)
    assert clean.sum() >= 5 and noise_only.sum() >= 5  # most camera photos are clean or carry camera noise only
    sigma = SEVERITIES["noise"]
    j = list(SEVERITIES).index("noise")
    assert all(2 - 1e-3 <= sigma.decode(s["severity"][j]) <= 16 + 1e-3 for s, only in zip(camera, noise_only) if only)
    plain = render_sample(str(tmp_path / "p.png"), 3, DetectorTrainConfig(randomized_share=0.7, camera_share=0.0, small_share=0.0), None)
    assert plain["crops"].shape == (5, 96, 96, 3)


def test_dim_camera_scenes_are_dark_but_never_labelled_dark(tmp_path) -> None:
    from tiragent.train.detector import training_image

    write_image(textured(0, 200, 240), tmp_path / "p.png")
    path = str(tmp_path / "p.png")
    dim = [training_image(path, np.random.default_rng(seed), 0.7, camera_share=1.0, dim_share=1.0) for seed in range(30)]
    bright = [training_image(path, np.random.default_rng(seed), 0.7, camera_share=1.0) for seed in range(30)]
    assert np.median([im.mean() for im, *_ in dim]) < 0.6 * np.median([im.mean() for im, *_ in bright])
    assert all(names == ["noise"] for _, names, _ in dim)  # high gain's camera noise, and darkness that is the scene's
    assert all(r["params"]["variant"] == "camera" and 2 <= r["params"]["sigma"] <= 16 for _, _, records in dim for r in records)
    # without dim scenes the mixture is as it was: camera photos may still be darkened
    assert any("dark" in names for seed in range(200) for names in [training_image(path, np.random.default_rng(seed), 0.7, camera_share=1.0)[1]])


def test_oriented_camera_photos_are_close_ups_of_parallel_edges_labelled_as_before(tmp_path) -> None:
    import cv2

    from tiragent.eval.randomized import anisotropy
    from tiragent.train.detector import training_image

    write_image(textured(0, 200, 240), tmp_path / "p.png")
    path = str(tmp_path / "p.png")

    def score(image):
        return anisotropy(cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY))

    oriented = [training_image(path, np.random.default_rng(seed), 0.7, camera_share=1.0, oriented_share=1.0) for seed in range(24)]
    single = [training_image(path, np.random.default_rng(seed), 0.7, camera_share=1.0) for seed in range(24)]
    clean = [im for im, names, _ in oriented if not names] + [im for im, names, _ in single if not names]
    assert clean  # some camera photos stay clean, oriented or not
    assert np.mean([score(im) for im, names, _ in oriented if not names]) > np.mean([score(im) for im, names, _ in single if not names])
    assert all(set(names) <= set(DEGRADATIONS) for _, names, _ in oriented)


def test_a_rendered_cache_is_reused_only_under_its_own_recipe(tmp_path, monkeypatch) -> None:
    from tiragent.train import detector as module

    write_image(textured(0), tmp_path / "photos" / "0.png")
    config = module.DetectorTrainConfig(data=[tmp_path / "photos"], out=tmp_path, workers=1)
    paths = [tmp_path / "photos" / "0.png"]
    first = module.cached_render(tmp_path / "c.npz", paths, 4, 0, config, 2, "r")
    calls = []
    monkeypatch.setattr(module, "render", lambda *a, **k: calls.append(a) or first)
    again = module.cached_render(tmp_path / "c.npz", paths, 4, 0, config, 2, "r")
    assert not calls and all(np.array_equal(again[k], first[k]) for k in first)
    config.camera_share = 0.5
    module.cached_render(tmp_path / "c.npz", paths, 4, 0, config, 2, "r")
    assert len(calls) == 1  # another recipe: rendered again, not the stale cache


def test_resuming_under_another_recipe_is_refused(trained) -> None:
    from dataclasses import replace

    from tiragent.train.detector import train_detector

    _, config = trained
    with pytest.raises(ParameterError, match="another recipe.*lr"):
        train_detector(replace(config, lr=config.lr * 2, resume=True))


def test_combination_share_draws_the_protocols_combinations_in_their_order() -> None:
    from tiragent.eval.bench import all_combinations
    from tiragent.train.detector import draw_degradations

    protocol = {combo for _, combo in all_combinations()}
    drawn = [draw_degradations(np.random.default_rng(seed), combination_share=1.0) for seed in range(200)]
    degraded = [tuple(d) for d, combination in drawn if d and combination]
    assert set(degraded) <= protocol and len(set(degraded)) >= 12  # in their order: ("rain", "haze"), never ("haze", "rain")
    assert 0.05 < 1 - len(degraded) / len(drawn) < 0.3 and not any(c for d, c in drawn if not d)  # the clean share as before
    no_dark = [d for seed in range(100) for d, _ in [draw_degradations(np.random.default_rng(seed), ("dark",), 1.0)]]
    assert all("dark" not in d for d in no_dark) and any(no_dark)
    # share 0 leaves the draws (and their random stream) exactly as before
    plain = [draw_degradations(np.random.default_rng(seed)) for seed in range(50)]
    assert any(tuple(d) not in protocol for d, _ in plain if d) and not any(c for _, c in plain)
    assert plain == [draw_degradations(np.random.default_rng(seed), (), 0.0) for seed in range(50)]


def test_combination_samples_can_be_rendered_by_the_protocol(tmp_path) -> None:
    from tiragent.train.detector import DetectorTrainConfig, train_detector, training_image

    write_image(textured(0, 200, 240), tmp_path / "p.png")
    path = str(tmp_path / "p.png")

    def protocol_steps(model: str) -> set[bool]:  # the randomized model names a variant in every step's parameters
        draws = [training_image(path, np.random.default_rng(seed), 1.0, combination_share=1.0, combination_model=model) for seed in range(30)]
        return {"variant" not in r["params"] for _, _, records in draws for r in records}

    assert protocol_steps("protocol") == {True} and protocol_steps("randomized") == {False}
    with pytest.raises(ParameterError, match="combination_model 'albumentations'"):
        train_detector(DetectorTrainConfig(data=[tmp_path], out=tmp_path / "run", combination_model="albumentations"))


def test_dim_scene_samples_carry_noise_never_low_light(tmp_path) -> None:
    from tiragent.train.detector import DIM_SCENE_EXPOSURE, training_image

    write_image(textured(1, 200, 240), tmp_path / "p.png")
    path = str(tmp_path / "p.png")
    bright = float(read_image(tmp_path / "p.png").mean())
    dim = [training_image(path, np.random.default_rng(seed), 0.7, combination_share=0.5, dim_scene_share=1.0) for seed in range(40)]
    assert all("noise" in names and "dark" not in names for _, names, _ in dim)
    assert all(names.index("noise") < names.index("jpeg") for _, names, _ in dim if "jpeg" in names)
    # dimmed before any degradation: the haze-free, unscaled ones are as dark as the exposure range says
    plain = [float(image.mean()) for image, names, _ in dim if set(names) <= {"noise", "motion", "defocus", "jpeg"}]
    assert plain and max(plain) < bright * DIM_SCENE_EXPOSURE[1] + 0.05 and min(plain) > bright * DIM_SCENE_EXPOSURE[0] - 0.05
    # camera-native samples are never dimmed this way (their dim scenes are --dim_share's)
    camera = [training_image(path, np.random.default_rng(seed), 0.7, camera_share=1.0, dim_scene_share=1.0)[1] for seed in range(20)]
    assert any("noise" not in names for names in camera)


def test_max_pool_adds_a_statistic_per_layer_and_older_weights_build_as_before() -> None:
    import torch

    from tiragent.server.detector_net import DetectorNetConfig

    torch.manual_seed(0)
    net = DetectorNet(DetectorNetConfig(max_pool=True)).eval()
    crops, stats = torch.zeros(1, 2, 3, 96, 96), torch.zeros(1, 13)
    logits, severity = net(crops, stats)
    assert logits.shape == (1, len(DEGRADATIONS)) and severity.shape == (1, len(SEVERITIES))
    assert net.head[0].in_features == 3 * (16 + 32 + 32 + 64 + 64) + 32
    # a weights file without the field (every detector shipped before it) builds the two-statistic net it was
    assert DetectorNet(DetectorNetConfig()).head[0].in_features == 2 * (16 + 32 + 32 + 64 + 64) + 32
