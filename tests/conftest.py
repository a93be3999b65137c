"""Test-session settings: one intra-op thread keeps the many small tensor operations of the
tests fast and their timing stable on a shared machine (OpenMP spin-waits under contention)."""

import sys
from pathlib import Path

import torch

torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/_gmp_data.py
