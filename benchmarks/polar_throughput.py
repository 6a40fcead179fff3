"""Throughput of the exact polar factor: Gram-matrix route against SVD-then-U@Vh.

Run:  .venv/bin/python benchmarks/polar_throughput.py [--batch 2000 --m 64 --n 128 --repeats 5]
Prints the median wall time of each route on a float64 batch and their ratio. This is what decided the
default route of gradnoise.ortho.polar_factor; it is a measurement, not a test.
"""
import argparse
import statistics
import time

import torch

import gradnoise as gn
from gradnoise import ortho


def svd_route(G):
    U, _, Vh = torch.linalg.svd(G, full_matrices=False)
    return U @ Vh


def gram_route(G):
    return ortho.polar_factor(G, method="gram")


def auto_route(G):
    return ortho.polar_factor(G)


def timed(fn, G, repeats):
    fn(G[:8])  # warm up
    times = []
    for _ in range(repeats):
        if G.is_cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn(G)
        if G.is_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--m", type=int, default=64)
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    gen = gn.generator("benchmark:polar")
    G = torch.randn(args.batch, args.m, args.n, generator=gen, dtype=gn.DTYPE, device=gen.device)
    print(gn.describe(), f"| threads: {torch.get_num_threads()} | batch {tuple(G.shape)}")
    t_svd = timed(svd_route, G, args.repeats)
    results = {"svd then U @ Vh": t_svd, "gram (eigh)": timed(gram_route, G, args.repeats),
               "polar_factor auto": timed(auto_route, G, args.repeats)}
    for name, t in results.items():
        print(f"{name:20s} {t * 1e3:9.1f} ms   {args.batch / t:9.0f} matrices/s   speed-up vs SVD {t_svd / t:5.2f}x")
    err = (gram_route(G) - svd_route(G)).abs().max().item()
    print(f"max |gram - svd| = {err:.2e}")


if __name__ == "__main__":
    main()
