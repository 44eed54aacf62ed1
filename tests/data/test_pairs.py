import pytest
import torch

from ppl_dgm.data import load_dataset
from ppl_dgm.data.pairs import PAIR_TASKS, load_pairs, load_unpaired, paired_dataset, sobel_edges


def test_sobel_edges_of_a_step_and_a_constant():
    step = torch.zeros(1, 1, 5, 5)
    step[..., 3:] = 1.0  # vertical edge between columns 2 and 3: |G_x| = 1 + 2 + 1 = 4 there
    edges = sobel_edges(step)
    torch.testing.assert_close(edges[0, 0, 1:4, 2], torch.ones(3))
    torch.testing.assert_close(edges[0, 0, 1:4, 0], torch.zeros(3))
    assert sobel_edges(torch.full((2, 1, 6, 6), 0.7))[:, :, 1:-1, 1:-1].abs().max() < 1e-6


@pytest.mark.parametrize("task", PAIR_TASKS)
def test_pairs_follow_the_mnist5k_split(task):
    test_images, test_labels = load_dataset("mnist5k", "test").tensors
    source, target, labels = load_pairs(task, "test").tensors
    assert source.shape == target.shape == (1000, 1, 28, 28) and torch.equal(labels, test_labels)
    assert 0 <= float(source.min()) and float(source.max()) <= 1 and 0 <= float(target.min()) and float(target.max()) <= 1
    if task == "digit2inverted":
        torch.testing.assert_close(target, 1 - test_images)
    elif task == "digit2rotated":
        torch.testing.assert_close(torch.rot90(target, -1, dims=(2, 3)), test_images)
    else:
        torch.testing.assert_close(target, test_images)
        torch.testing.assert_close(source, sobel_edges(test_images))
    assert len(load_pairs(task, "train")) == 4000


def test_unpaired_domains_share_no_digit():
    a, b = load_unpaired("digit2inverted", "train").tensors
    assert a.shape == b.shape == (2000, 1, 28, 28)
    inverted_back = 1 - b
    # no A digit reappears (inverted) in B: the two halves are disjoint
    distances = torch.cdist(a.flatten(1)[:200], inverted_back.flatten(1))
    assert float(distances.min()) > 1.0


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match=r"source and target must have the same shape \(N, C, H, W\), got \(2, 1, 28, 28\) and \(2, 1, 27, 28\)"):
        paired_dataset(torch.zeros(2, 1, 28, 28), torch.zeros(2, 1, 27, 28))
    with pytest.raises(ValueError, match=r"labels must have shape \(2,\), got \(3,\)"):
        paired_dataset(torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 4), torch.zeros(3))
    with pytest.raises(ValueError, match=r"task='edges' is not a known image-to-image task; expected one of \('edges2digit'"):
        load_pairs("edges")
