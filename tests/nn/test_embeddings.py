import math

import pytest
import torch

from ppl_dgm.nn.embeddings import ClassEmbedding, SinusoidalTimeEmbedding, sinusoidal_embedding


def test_sinusoidal_embedding_at_zero_is_sin_zero_cos_one():
    embedding = sinusoidal_embedding(torch.zeros(2), dim=8)
    torch.testing.assert_close(embedding[:, :4], torch.zeros(2, 4))
    torch.testing.assert_close(embedding[:, 4:], torch.ones(2, 4))


def test_sinusoidal_embedding_matches_vaswani_formula():
    # Vaswani et al. 2017: frequency k = 10000 ** (-2k / dim); dim = 4 gives frequencies 1 and 1/100.
    embedding = sinusoidal_embedding(torch.tensor([1.0]), dim=4, scale=1.0)
    expected = torch.tensor([[math.sin(1.0), math.sin(0.01), math.cos(1.0), math.cos(0.01)]])
    torch.testing.assert_close(embedding, expected)


def test_sinusoidal_embedding_of_t_equals_integer_step_embedding():
    # DDPM step i = 250 of T = 1000 passed as t = 0.25 with the default scale 1000 (Ho et al. 2020).
    from_time = sinusoidal_embedding(torch.tensor([0.25], dtype=torch.float64), dim=16)
    from_step = sinusoidal_embedding(torch.tensor([250.0], dtype=torch.float64), dim=16, scale=1.0)
    torch.testing.assert_close(from_time, from_step)
    frequencies = 10000.0 ** (-torch.arange(8, dtype=torch.float64) / 8)
    torch.testing.assert_close(from_step[0, :8], torch.sin(250.0 * frequencies))


def test_sinusoidal_embedding_odd_dim_is_zero_padded():
    t = torch.rand(3)
    odd = sinusoidal_embedding(t, dim=7)
    assert odd.shape == (3, 7)
    torch.testing.assert_close(odd[:, :6], sinusoidal_embedding(t, dim=6))
    torch.testing.assert_close(odd[:, 6], torch.zeros(3))


def test_sinusoidal_embedding_upcasts_low_precision():
    t = torch.tensor([0.999, 1.0], dtype=torch.bfloat16)
    embedding = sinusoidal_embedding(t, dim=8)
    assert embedding.dtype == torch.bfloat16
    reference = sinusoidal_embedding(t.float(), dim=8)
    torch.testing.assert_close(embedding.float(), reference, atol=1e-2, rtol=0)


def test_sinusoidal_embedding_errors():
    with pytest.raises(ValueError, match=r"t must have shape \(B,\), got shape \(2, 1\)"):
        sinusoidal_embedding(torch.zeros(2, 1), dim=4)
    with pytest.raises(ValueError, match=r"dim must be an int >= 2, got 1"):
        sinusoidal_embedding(torch.zeros(2), dim=1)


def test_sinusoidal_time_embedding_shapes():
    assert SinusoidalTimeEmbedding(8)(torch.rand(5)).shape == (5, 32)
    assert SinusoidalTimeEmbedding(8, hidden_dim=12)(torch.rand(5)).shape == (5, 12)
    with pytest.raises(ValueError, match=r"hidden_dim must be a positive int, got 0"):
        SinusoidalTimeEmbedding(8, hidden_dim=0)


def test_class_embedding_null_row():
    embedding = ClassEmbedding(num_classes=3, dim=4)
    null_row = embedding.embedding.weight[3]
    out = embedding(torch.tensor([0, -1, 2]))
    torch.testing.assert_close(out[0], embedding.embedding.weight[0])
    torch.testing.assert_close(out[1], null_row)
    torch.testing.assert_close(out[2], embedding.embedding.weight[2])
    all_null = embedding(None, batch_size=2)
    torch.testing.assert_close(all_null, null_row.expand(2, 4))


def test_class_embedding_errors():
    embedding = ClassEmbedding(num_classes=3, dim=4)
    with pytest.raises(ValueError, match=r"y must hold labels in \[0, 3\) or -1 \(unconditional\), got values in \[0, 3\]"):
        embedding(torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"y must hold labels .* got values in \[-2, 1\]"):
        embedding(torch.tensor([-2, 1]))
    with pytest.raises(TypeError, match=r"y must be an integer tensor of class labels, got dtype torch.float32"):
        embedding(torch.tensor([0.0]))
    with pytest.raises(ValueError, match=r"y must have shape \(2,\), got shape \(3,\)"):
        embedding(torch.tensor([0, 1, 2]), batch_size=2)
    with pytest.raises(ValueError, match=r"batch_size is needed when y is None"):
        embedding(None)
    with pytest.raises(ValueError, match=r"num_classes must be a positive int, got 0"):
        ClassEmbedding(num_classes=0, dim=4)
