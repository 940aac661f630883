"""Seconds per image for ResNet50 forward+backward on this machine's CPU at several input sizes.

Used to choose the cervical training recipe (docs/models/cervical.md). Random init, no downloads.
Run: ``python bench/cervical_train_speed.py --sizes 512 384 256 224 --batch 4 --steps 3``.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torchvision


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 384, 256, 224])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = torchvision.models.resnet50(weights=None, num_classes=1)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    model.train()
    results = {}
    for size in args.sizes:
        x = torch.randn(args.batch, 3, size, size)
        y = torch.randint(0, 2, (args.batch, 1)).float()
        # one warm-up step
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
        t0 = time.perf_counter()
        for _ in range(args.steps):
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            opt.step()
        dt = (time.perf_counter() - t0) / (args.steps * args.batch)
        with torch.no_grad():
            model.eval()
            t1 = time.perf_counter()
            model(x[:1])
            inf = time.perf_counter() - t1
            model.train()
        results[size] = {"train_s_per_image": round(dt, 3), "infer_s_per_image": round(inf, 3)}
        print(json.dumps({"size": size, **results[size]}), flush=True)
    print(json.dumps({"threads": torch.get_num_threads(), "batch": args.batch, "results": results}))


if __name__ == "__main__":
    main()
