"""Shared helpers of the benchmark scripts: where the data is, device synchronization, the device name, the
argument parser."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch


def data_root() -> str:
    env = os.environ.get("SEGARENA_DATA_ROOT")
    if env:
        return env
    local = Path(__file__).resolve().parents[2] / "shared" / "data"
    return str(local) if local.is_dir() else ""


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"CPU {platform.machine()} x{os.cpu_count()} ({torch.get_num_threads()} torch threads)"


def parser(doc: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc)
    p.add_argument("--tiny", action="store_true", help="seconds-long run (used by the test suite)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p
