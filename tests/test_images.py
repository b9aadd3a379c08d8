from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from tiragent.errors import ImageError
from tiragent.images import decode_image, encode_image, list_images, read_image, write_image


def png_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


def test_roundtrip_png_is_lossless_at_8_bits(tmp_path, astronaut):
    path = write_image(astronaut, tmp_path / "a.png")
    back = read_image(path)
    assert back.shape == astronaut.shape and back.dtype == np.float32
    assert np.abs(back - astronaut).max() <= 0.5 / 255 + 1e-6


def test_empty_file_is_named(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageError, match="empty.*0 bytes"):
        read_image(path)


def test_non_image_file(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not an image")
    with pytest.raises(ImageError, match="not a recognised image format"):
        read_image(path)


def test_truncated_image(astronaut):
    data = encode_image(astronaut, "png")
    with pytest.raises(ImageError, match="corrupt|truncated"):
        decode_image(data[: len(data) // 2], name="half.png")


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="is a folder"):
        read_image(tmp_path)


def test_pixel_limit_is_checked_before_decoding():
    data = png_bytes(np.zeros((300, 400, 3), np.uint8))
    with pytest.raises(ImageError, match=r"400x300 = 0.1 MP is over the limit of 0.1 MP"):
        decode_image(data, max_pixels=100_000)
    assert decode_image(data, max_pixels=120_000).shape == (300, 400, 3)


def test_tiny_image_is_refused():
    with pytest.raises(ImageError, match="too small"):
        decode_image(png_bytes(np.zeros((4, 4, 3), np.uint8)))


def test_grayscale_becomes_rgb():
    gray = (np.arange(64 * 64) % 256).reshape(64, 64).astype(np.uint8)
    out = decode_image(png_bytes(gray))
    assert out.shape == (64, 64, 3)
    assert np.allclose(out[..., 0], gray / 255.0) and np.array_equal(out[..., 0], out[..., 2])


def test_rgba_drops_alpha_and_keeps_colour():
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 200, 100, 50, 0
    out = decode_image(png_bytes(rgba))
    assert out.shape == (32, 32, 3)
    assert np.allclose(out[0, 0], [200 / 255, 100 / 255, 50 / 255])


def test_16_bit_keeps_precision():
    rgb16 = np.full((32, 32, 3), 1000, np.uint16)
    rgb16[..., 1] = 40000
    ok, buf = cv2.imencode(".png", rgb16)
    assert ok
    out = decode_image(buf.tobytes())
    assert np.allclose(out[0, 0], [1000 / 65535, 40000 / 65535, 1000 / 65535], atol=1e-6)
    gray16 = np.full((32, 32), 1234, np.uint16)
    ok, buf = cv2.imencode(".png", gray16)
    assert np.allclose(decode_image(buf.tobytes())[0, 0], 1234 / 65535, atol=1e-6)


def test_list_images_sorted_and_filtered(tmp_path, astronaut):
    for name in ("b.png", "a.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(encode_image(astronaut, "png") if name != "notes.txt" else b"x")
    assert [p.name for p in list_images(tmp_path)] == ["a.jpg", "b.png"]


def test_fast_conversions_keep_every_value():
    """The one-pass conversions give exactly the values of the plain numpy expressions they replace."""
    from tiragent.images import to_float_rgb, to_uint8

    every = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert np.array_equal(to_float_rgb(every)[..., 0], every.astype(np.float32) / 255.0)
    deep = np.arange(0, 65536, 7, dtype=np.uint16)[:9360].reshape(90, 104)
    assert np.array_equal(to_float_rgb(deep)[..., 0], deep.astype(np.float32) / 65535.0)
    values = np.random.default_rng(0).uniform(-0.2, 1.2, (64, 64, 3)).astype(np.float32)
    values[0, :4, 0] = [0.5 / 255, 1.5 / 255, 254.5 / 255, 1.0]  # halfway cases
    assert np.array_equal(to_uint8(values), (np.clip(values, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))


@pytest.mark.parametrize("shape", [(64, 48), (2100, 2000)])  # stored PNG, and compact past 4 MP
def test_transport_png_is_lossless(shape):
    from tiragent.images import STORED_UP_TO

    rng = np.random.default_rng(1)
    noise = rng.integers(0, 256, (*shape, 3)).astype(np.float32) / 255.0
    assert np.array_equal(decode_image(encode_image(noise, "png", transport=True)), noise)
    smooth = np.broadcast_to(np.linspace(0, 1, shape[1], dtype=np.float32)[None, :, None], (*shape, 3))
    smooth = np.round(smooth * 255) / 255
    data = encode_image(smooth, "png", transport=True)
    assert np.array_equal(decode_image(data), smooth)
    compact = shape[0] * shape[1] > STORED_UP_TO
    assert (len(data) < smooth.size / 4) == compact  # a smooth image deflates to little; stored, it keeps every byte
