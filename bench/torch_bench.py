#!/usr/bin/env python3
"""The benchmark networks of `programs/bench/nets` in PyTorch CPU, as the reference for
`chiron-bench`. Trains one warm-up interval and then `--intervals` intervals of `--interval`
SGD steps (lr 0.01, momentum 0.9) on seeded inputs, and prints the seconds each measured
interval took as a JSON list."""

import argparse
import json
import time

import torch
from torch import nn


def net_a(classes: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(2048, 256), nn.ReLU(), nn.Linear(256, classes),
    )


def net_b(classes: int) -> nn.Module:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(784, 512), nn.ReLU(),
        nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, classes),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--net", choices=["a", "b"], required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--interval", type=int, default=5)
    parser.add_argument("--intervals", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    torch.manual_seed(7)
    torch.set_num_threads(args.threads)
    model = net_a(10) if args.net == "a" else net_b(10)
    shape = (3, 32, 32) if args.net == "a" else (1, 28, 28)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    steps = args.interval * (args.intervals + 1)
    xs = torch.rand((steps, args.batch) + shape)
    ys = torch.randint(0, 10, (steps, args.batch))

    times = []
    for step in range(steps):
        opt.zero_grad()
        loss = loss_fn(model(xs[step]), ys[step])
        loss.backward()
        opt.step()
        if (step + 1) % args.interval == 0:
            loss.item()
            times.append(time.perf_counter())
    print(json.dumps([b - a for a, b in zip(times, times[1:])]))


if __name__ == "__main__":
    main()
