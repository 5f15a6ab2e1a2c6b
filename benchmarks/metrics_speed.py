"""Metric speed and memory: medad's exact metrics against the usual research-repo approach, in one run.

Baseline (as in AnomalyCLIP / cflow-ad style repos): scikit-learn ``roc_auc_score`` on all pixels at once plus an
approximate PRO: 200 uniform thresholds, per-image ``skimage.measure.regionprops`` overlap per region, FPR over
normal pixels, FPRs above 0.3 dropped, min-max-rescaled FPRs, trapezoid area.

Run: ``python benchmarks/metrics_speed.py [--n 379] [--size 512] [--stream 2000]``.
"""

from __future__ import annotations

import argparse
import resource
import threading
import time

import numpy as np
import psutil
from skimage import measure
from sklearn.metrics import auc, roc_auc_score

from medad.metrics import PixelMetrics, pixel_metrics


class PeakRSS:
    """Sample the process RSS every 20 ms and keep the peak above the starting RSS."""

    def __enter__(self) -> PeakRSS:
        self.proc = psutil.Process()
        self.start = self.proc.memory_info().rss
        self.peak = self.start
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        while not self.stop:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.02)

    def __exit__(self, *exc: object) -> None:
        self.stop = True
        self.thread.join()

    @property
    def gib(self) -> float:
        return self.peak / 2**30


def make_data(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Smooth float32 maps in [0, 1] (16x16-pixel patches, as a ViT head gives, plus pixel noise) and blob masks.

    Values are clipped to [0, 1], so many pixels tie at exactly 0 and 1 (an adversarial case for tie handling).
    """
    rng = np.random.default_rng(seed)
    low = rng.random((n, size // 16, size // 16), dtype=np.float32)
    maps = np.repeat(np.repeat(low, 16, axis=1), 16, axis=2)
    yy, xx = np.mgrid[:size, :size]
    masks = np.zeros((n, size, size), bool)
    for i in range(n):
        for _ in range(rng.integers(0, 3)):
            cy, cx = rng.integers(0, size, 2).tolist()
            r = int(rng.integers(10, size // 6))
            masks[i] |= (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
    maps *= np.float32(0.7)
    maps[masks] += np.float32(0.3)
    maps += rng.standard_normal(maps.shape, dtype=np.float32) * np.float32(0.05)
    np.clip(maps, 0, 1, out=maps)
    return maps, masks


def baseline(maps: np.ndarray, masks: np.ndarray) -> tuple[float, float]:
    """scikit-learn pixel AUROC + 200-threshold regionprops PRO (the research-repo approach)."""
    pixel_auc = roc_auc_score(masks.ravel(), maps.ravel())
    lo, hi = float(maps.min()), float(maps.max())
    pros, fprs = [], []
    inverse = ~masks
    labelled = [measure.label(m) for m in masks]
    for th in np.linspace(lo, hi, 200):
        binary = maps > th
        per = []
        for b, lab in zip(binary, labelled, strict=True):
            for region in measure.regionprops(lab):
                ys, xs = region.coords[:, 0], region.coords[:, 1]
                per.append(b[ys, xs].sum() / region.area)
        fprs.append(np.logical_and(inverse, binary).sum() / inverse.sum())
        pros.append(np.mean(per))
    fprs, pros = np.array(fprs), np.array(pros)
    keep = fprs < 0.3
    fprs, pros = fprs[keep], pros[keep]
    fprs = (fprs - fprs.min()) / (fprs.max() - fprs.min())
    return float(pixel_auc), float(auc(fprs, pros))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=379)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--stream", type=int, default=2000, help="maps for the streaming run (0 skips it)")
    parser.add_argument("--chunk", type=int, default=64)
    parser.add_argument("--skip-oneshot", action="store_true", help="only the streaming run (own process RSS)")
    args = parser.parse_args()
    if not args.skip_oneshot:
        oneshot(args.n, args.size)
    if args.stream:
        stream(args.stream, args.size, args.chunk)
    print(f"max RSS of the whole run (ru_maxrss): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


def oneshot(n: int, size: int) -> None:
    """Baseline vs medad on ``n`` maps held in memory."""
    maps, masks = make_data(n, size, 0)
    print(f"data: {n} maps of {size}x{size}, {masks.mean():.3f} anomalous pixels")

    with PeakRSS() as mem_b:
        t = time.perf_counter()
        base_auc, base_pro = baseline(maps, masks)
        t_base = time.perf_counter() - t
    with PeakRSS() as mem_m:
        t = time.perf_counter()
        ours = pixel_metrics(maps, masks)
        t_ours = time.perf_counter() - t
    print(
        f"baseline (sklearn AUROC + 200-threshold regionprops PRO): {t_base:.1f} s, "
        f"peak RSS {mem_b.gib:.2f} GiB (process), AUROC {base_auc:.6f}, approx AUPRO {base_pro:.4f}"
    )
    print(
        f"medad exact (one sort; AUROC, AP, F1-max, AUPRO): {t_ours:.1f} s, peak RSS {mem_m.gib:.2f} GiB (process), "
        f"AUROC {ours['pixel_auroc']:.6f}, AUPRO {ours['aupro']:.4f}"
    )
    print(f"speed ratio: {t_base / t_ours:.1f}x; |AUROC difference| {abs(base_auc - ours['pixel_auroc']):.2e}")


def stream(n: int, size: int, chunk: int) -> None:
    """``n`` maps generated chunk by chunk and fed to the exact accumulator."""
    acc = PixelMetrics()
    with PeakRSS() as mem_s:
        t = time.perf_counter()
        for start in range(0, n, chunk):
            chunk_maps, chunk_masks = make_data(min(chunk, n - start), size, 1 + start)
            acc.update(chunk_maps, chunk_masks)
            del chunk_maps, chunk_masks
        res = acc.compute()
        t_stream = time.perf_counter() - t
    print(
        f"streaming {n} maps in chunks of {chunk} (data generation included): {t_stream:.1f} s, "
        f"peak RSS {mem_s.gib:.2f} GiB (process), AUROC {res['pixel_auroc']:.6f}, AUPRO {res['aupro']:.4f}"
    )


if __name__ == "__main__":
    main()
