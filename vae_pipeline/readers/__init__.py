"""Reading a committed synthetic dataset: a PyTorch `IterableDataset` that streams the manifest's shards.

pyarrow, pandas and Ray Data read the output directory as it is (see docs/readers.md); this package adds what
they do not: a torch dataset that reads only committed shards and splits them across ranks and DataLoader workers.
"""

from vae_pipeline.readers.torch_dataset import SyntheticDataset

__all__ = ["SyntheticDataset"]
