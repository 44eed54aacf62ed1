import torch

from ppl_dgm.nn.blocks import AttentionBlock, Downsample, ResidualBlock, Upsample


def test_residual_block_shapes_and_embedding_dependence():
    block = ResidualBlock(8, 16, embedding_dim=12, groups=4)
    x = torch.randn(2, 8, 7, 7)
    out = block(x, torch.randn(2, 12))
    assert out.shape == (2, 16, 7, 7)
    assert not torch.allclose(out, block(x, torch.randn(2, 12)))


def test_attention_block_is_permutation_equivariant_over_positions():
    # Self-attention without positional encoding commutes with permuting the H*W positions.
    block = AttentionBlock(8, num_heads=2, groups=4)
    x = torch.randn(2, 8, 3, 3)
    permutation = torch.randperm(9)
    permuted = x.flatten(2)[:, :, permutation].reshape_as(x)
    torch.testing.assert_close(block(permuted).flatten(2), block(x).flatten(2)[:, :, permutation])


def test_attention_block_matches_explicit_softmax_attention():
    block = AttentionBlock(4, num_heads=1, groups=2)
    x = torch.randn(1, 4, 2, 3)
    query, key, value = block.qkv(block.norm(x)).flatten(2).chunk(3, dim=1)  # (1, 4, 6) each
    weights = torch.softmax(query.transpose(1, 2) @ key / 2.0, dim=-1)  # sqrt(head_dim = 4) = 2
    attended = (weights @ value.transpose(1, 2)).transpose(1, 2).reshape_as(x)
    torch.testing.assert_close(block(x), x + block.projection(attended))


def test_down_and_upsample_sides():
    x = torch.randn(1, 4, 28, 28)
    assert Downsample(4)(x).shape == (1, 4, 14, 14)
    assert Downsample(4)(torch.randn(1, 4, 7, 7)).shape == (1, 4, 4, 4)
    assert Upsample(4)(torch.randn(1, 4, 4, 4), (7, 7)).shape == (1, 4, 7, 7)
