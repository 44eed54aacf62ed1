"""The style-based generator against DCGAN on mnist5k: FD at the same N, the truncation trick over ψ, style mixing.

For each GAN run (the EMA generator, :func:`ppl_dgm.gan.experiment.load_gan_run`): ``--num-samples`` samples from seed
``--seed``, FD and KID against the test digits on the features of the library's digit classifier, and two measures of
diversity: the feature spread tr Σ_samples / tr Σ_test, and the effective number of classes exp H(ŷ) of the classifier's
labels (10 when every digit is as common as in the data, 1 when every sample is one digit). The style-based run is
repeated at every ψ of ``--truncation`` (w' = w̄ + ψ (w − w̄), Karras et al. 2019, sec. 2 / App. B): ψ = 0 gives the
image of w̄ for every z, so FD and diversity trace out the quality/diversity trade-off. The floor row is N real training
digits against the same test split (FD is biased in N).

Figures: ``stylegan_truncation.png`` (one row per ψ, the same z and noise per column) and ``stylegan_mixing.png``
(Karras et al. 2019, Fig. 3: a block per layer group; in each, row i keeps source A_i's styles and takes the group's
layers from source B_j in column j; the top row is B, the left column A; noise fixed).

    ppl-dgm train gan --arch dcgan --epochs 30 --name dcgan_mnist5k_30ep
    ppl-dgm train gan --arch stylegan --epochs 30 --r1-gamma 1 --minibatch-std --name stylegan_mnist5k_r1
    python scripts/stylegan_study.py --dcgan runs/dcgan_mnist5k_30ep --stylegan runs/stylegan_mnist5k_r1
"""
import argparse
import sys
from pathlib import Path

import torch
from torchvision.utils import make_grid, save_image

from frechet_table import write_table
from ppl_dgm.data import load_dataset
from ppl_dgm.gan.experiment import load_gan_run, sample_gan
from ppl_dgm.metrics.frechet import extract_features, feature_classifier, sample_quality

LAYER_GROUPS = {"7x7": (0, 1), "14x14": (2, 3), "28x28": (4, 5)}  # coarse, middle, fine styles of the 28x28 generator


@torch.no_grad()
def diversity(classifier, images: torch.Tensor, reference_spread: float) -> dict:
    """Feature spread tr Σ / tr Σ_test and the effective number of classes exp H(ŷ) of the classifier's labels."""
    features = extract_features(classifier, images)
    labels = torch.cat([classifier(chunk).argmax(1) for chunk in images.split(500)])
    frequency = torch.bincount(labels, minlength=10).double() / len(labels)
    entropy = -(frequency[frequency > 0] * frequency[frequency > 0].log()).sum()
    return {"feature_spread": float(torch.cov(features.T.double()).trace()) / reference_spread,
            "effective_classes": float(entropy.exp())}


def gan_samples(generator, config, n: int, seed: int, truncation: float = 1.0) -> torch.Tensor:
    """n images in [0, 1], in chunks of 500 from one seeded stream (noise maps from the global RNG, seeded too)."""
    torch.manual_seed(seed)
    rng = torch.Generator().manual_seed(seed)
    chunks = []
    for begin in range(0, n, 500):
        images, _ = sample_gan(generator, config, min(500, n - begin), generator_rng=rng, truncation=truncation)
        chunks.append(images)
    return torch.cat(chunks)


@torch.no_grad()
def truncation_figure(generator, psis, columns: int, seed: int, path: Path) -> None:
    rng = torch.Generator().manual_seed(seed)
    z = torch.randn(columns, generator.latent_dim, generator=rng)
    noise = generator.make_noise(columns, rng)
    rows = [generator.synthesize(generator.truncate(generator.styles(z), psi), noise) for psi in psis]
    save_image(((torch.cat(rows) + 1) / 2).clamp(0, 1), path, nrow=columns, padding=2, pad_value=1.0)


@torch.no_grad()
def mixing_figure(generator, sources: int, seed: int, truncation: float, path: Path) -> None:
    """One block per layer group: a (sources + 1) x (sources + 1) grid with B on top, A on the left, mixes inside."""
    rng = torch.Generator().manual_seed(seed)
    styles_a = generator.truncate(generator.styles(torch.randn(sources, generator.latent_dim, generator=rng)), truncation)
    styles_b = generator.truncate(generator.styles(torch.randn(sources, generator.latent_dim, generator=rng)), truncation)
    noise = [n.expand(sources, -1, -1, -1) for n in generator.make_noise(1, rng)]

    def render(styles):
        return ((generator.synthesize(styles, noise) + 1) / 2).clamp(0, 1)

    images_a, images_b, blank = render(styles_a), render(styles_b), torch.ones(1, 1, 28, 28)
    blocks = []
    for layers in LAYER_GROUPS.values():
        cells = [torch.cat([blank, images_b])]
        for i in range(sources):
            mixed = styles_a[i : i + 1].expand(sources, -1, -1).clone()
            mixed[:, list(layers)] = styles_b[:, list(layers)]
            cells.append(torch.cat([images_a[i : i + 1], render(mixed)]))
        blocks.append(make_grid(torch.cat(cells), nrow=sources + 1, padding=2, pad_value=1.0))
    save_image(make_grid(torch.stack(blocks), nrow=len(blocks), padding=8, pad_value=1.0), path)


def markdown(rows: dict) -> str:
    lines = ["| samples | FD | KID (mean ± std over subsets) | feature spread (tr Σ / tr Σ_test) | effective classes |",
             "|---|---:|---:|---:|---:|"]
    for name, row in rows.items():
        lines.append(f"| {name} | {row['fd']:.1f} | {row['kid']:.1f} ± {row['kid_std']:.1f} | "
                     f"{row['feature_spread']:.3f} | {row['effective_classes']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dcgan", nargs="*", default=[], help="baseline GAN runs (any arch)")
    parser.add_argument("--stylegan", required=True, help="a run trained with --arch stylegan")
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--truncation", type=float, nargs="+", default=[1.0, 0.75, 0.5, 0.25, 0.0], help="ψ values")
    parser.add_argument("--figure-truncation", type=float, default=1.0, help="ψ of the style-mixing figure")
    parser.add_argument("--columns", type=int, default=10, help="samples per row of the truncation figure")
    parser.add_argument("--sources", type=int, default=5, help="sources A and B in the style-mixing figure")
    parser.add_argument("--classifier-dir", default="runs", help="where the FD feature classifier is cached")
    parser.add_argument("--figure-dir", default="docs/images")
    parser.add_argument("--json", default="runs/stylegan_study.json")
    parser.add_argument("--markdown", default="runs/stylegan_study.md")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.num_samples < 2:
        parser.error(f"--num-samples must be at least 2, got {args.num_samples}")
    classifier = feature_classifier("mnist5k", cache_dir=args.classifier_dir)
    test_features = extract_features(classifier, load_dataset("mnist5k", "test").tensors[0])
    reference_spread = float(torch.cov(test_features.T.double()).trace())
    train_images = load_dataset("mnist5k", "train").tensors[0]

    def measure(images: torch.Tensor) -> dict:
        return sample_quality(images, classifier=classifier, seed=args.seed) | diversity(classifier, images, reference_spread)

    rows = {f"floor: {args.num_samples} real training digits": measure(train_images[: args.num_samples])}
    for run in args.dcgan:
        generator, config = load_gan_run(run, device="cpu")
        rows[f"{Path(run).name} ({config.arch}, EMA)"] = measure(gan_samples(generator, config, args.num_samples, args.seed))
    generator, config = load_gan_run(args.stylegan, device="cpu")
    if config.arch != "stylegan":
        raise SystemExit(f"--stylegan {args.stylegan}: a run with arch 'stylegan' is needed, got {config.arch!r}")
    for psi in args.truncation:
        rows[f"{Path(args.stylegan).name} (EMA), ψ = {psi:g}"] = measure(gan_samples(generator, config, args.num_samples, args.seed, psi))
    figure_dir = Path(args.figure_dir)
    figure_dir.mkdir(parents=True, exist_ok=True)
    truncation_figure(generator, args.truncation, args.columns, args.seed, figure_dir / "stylegan_truncation.png")
    mixing_figure(generator, args.sources, args.seed, args.figure_truncation, figure_dir / "stylegan_mixing.png")
    print(f"wrote {figure_dir / 'stylegan_truncation.png'} and {figure_dir / 'stylegan_mixing.png'}")
    write_table(markdown(rows), rows, args.markdown, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
