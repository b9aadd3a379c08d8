"""Fit NIQE's pristine multivariate Gaussian from clean images (Mittal et al. 2013).

    python -m tiragent.eval.fit_niqe ../shared/data/clean/CBSD68 eval/data/niqe_cbsd68.mat

Features are pyiqa's own (the 36 NIQE statistics on 96x96 blocks at two scales), so the
fitted model plugs into ``pyiqa.create_metric("niqe", pretrained_model_path=...)``. As in
the original recipe, only the sharpest blocks of each image count as pristine (local
sharpness above 75% of the image's sharpest block).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import scipy.io
import torch

from tiragent.images import list_images, read_image

BLOCK = 96


def block_features(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-block NIQE features (n x 36) and per-block sharpness (n) of one RGB image."""
    from pyiqa.archs.func_util import diff_round, normalize_img_with_gauss
    from pyiqa.archs.niqe_arch import compute_feature
    from pyiqa.matlab_utils import blockproc, imresize
    from pyiqa.utils.color_util import to_y_channel

    x = torch.from_numpy(image).permute(2, 0, 1)[None].double()
    y = diff_round(to_y_channel(x, 255, "yiq")).double()
    h, w = y.shape[-2:]
    y = y[..., : h // BLOCK * BLOCK, : w // BLOCK * BLOCK]
    sharp = torch.nn.functional.avg_pool2d(_local_std(y), BLOCK).flatten()
    feats = []
    for scale in (1, 2):
        normed = normalize_img_with_gauss(y, padding="replicate")
        feats.append(blockproc(normed, [BLOCK // scale, BLOCK // scale], fun=compute_feature))
        if scale == 1:
            y = imresize(y / 255.0, scale=0.5, antialiasing=True) * 255.0
    return torch.cat(feats, -1)[0].numpy(), sharp.numpy()


def _local_std(y: torch.Tensor) -> torch.Tensor:
    mean = torch.nn.functional.avg_pool2d(y, 7, 1, 3, count_include_pad=False)
    sq = torch.nn.functional.avg_pool2d(y * y, 7, 1, 3, count_include_pad=False)
    return (sq - mean * mean).clamp_min(0).sqrt()


def fit(folder: Path) -> tuple[np.ndarray, np.ndarray, int]:
    chosen = []
    for path in list_images(folder):
        feats, sharp = block_features(read_image(path))
        keep = sharp > 0.75 * sharp.max()
        chosen.append(feats[keep])
    features = np.concatenate(chosen)
    features = features[np.isfinite(features).all(axis=1)]
    return features.mean(axis=0), np.cov(features, rowvar=False), len(features)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clean_dir", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    mu, cov, n = fit(args.clean_dir)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(args.out, {"mu_prisparam": mu[None], "cov_prisparam": cov, "n_blocks": n, "source": str(args.clean_dir.name)})
    print(f"fitted NIQE on {n} pristine blocks from {args.clean_dir} -> {args.out}")


if __name__ == "__main__":
    main()
