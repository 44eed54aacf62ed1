"""Guidance sweeps on mnist5k: the quality/diversity trade-off of classifier-free and classifier guidance.

Classifier-free guidance (Ho & Salimans 2022, eq. 6): a class-conditional DDPM run (``--cfg RUN``, trained with
``--class-conditional``), w ∈ ``--weights``. Classifier guidance (Dhariwal & Nichol 2021, Alg. 2): an unconditional DDPM
run (``--ddpm RUN``) and a noisy-classifier run of the same forward process (``--classifier RUN``), s ∈ ``--scales``.
Per scale: ``--num-samples`` images, an equal number per class (labels 0..9), by ``--sampler`` with ``--steps`` from the
same seed; FD and KID against the test digits on the features of the library's digit classifier, and that classifier's
accuracy on the intended class. FD is biased in N: the floor row is N real training digits against the same test split.
Samples are cached in the DDPM run folder (``samples_<name>_<n>_seed<s>_step<k>.pt``, as scripts/frechet_table.py).
Writes the markdown table and JSON, and a figure per sweep (one row per class, a block per scale).

    python scripts/guidance_sweep.py --cfg runs/ddpm_mnist5k_cond --ddpm runs/ddpm_mnist5k_ref \\
        --classifier runs/noisy_classifier_mnist5k --num-samples 500
"""
import argparse
import sys
from pathlib import Path

import torch
from torchvision.utils import make_grid

from frechet_table import cached_samples, timing, trained_steps, write_table
from ppl_dgm.data import load_dataset
from ppl_dgm.metrics.frechet import feature_classifier, sample_quality


def intended_classes(num_samples: int, batch_size: int) -> torch.Tensor:
    """The labels ``sample_run`` uses batch by batch: each batch of size b is b // 10 of class 0, then of class 1, ..."""
    return torch.cat([torch.arange(10).repeat_interleave(min(batch_size, num_samples - begin) // 10)
                      for begin in range(0, num_samples, batch_size)])


@torch.no_grad()
def class_accuracy(classifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    predicted = torch.cat([classifier(chunk).argmax(1) for chunk in images.split(500)])
    return float((predicted == labels).double().mean())


def sweep(run: Path, kind: str, scales, args, digit_classifier, classifier_run: Path | None = None) -> dict:
    """Rows {label: quality | accuracy | timing} and the samples of each scale, for one DDPM run (or, for classifier-free
    guidance, a class-conditional latent-DDPM run)."""
    from ppl_dgm.diffusion.experiment import build_schedule, load_ddpm_run, sample_run
    from ppl_dgm.runs import run_family

    if run_family(run) == "latent-ddpm":
        from ppl_dgm.diffusion.latent import load_latent_ddpm_run, sample_latent_ddpm

        if kind != "w":
            raise SystemExit(f"{run}: classifier guidance needs a pixel DDPM run; a latent-DDPM run takes --cfg only")
        model, config = load_latent_ddpm_run(run, device=args.device)
        if not config.class_conditional:
            raise SystemExit(f"{run}: --cfg needs a class-conditional run (trained with --class-conditional)")
        schedule, tag = build_schedule(config), ""

        def sample_at(scale):
            return lambda size, generator, callback: sample_latent_ddpm(
                model, schedule, size, sampler=args.sampler, steps=args.steps, generator=generator, progress=True, callback=callback,
                guidance_scale=scale)
    else:
        net, config = load_ddpm_run(run, device=args.device)
        guiding, tag = None, ""
        if classifier_run is not None:
            from ppl_dgm.diffusion.classifier_experiment import guiding_classifier

            guiding = guiding_classifier(classifier_run, config, ddpm_name=repr(str(run)), device=args.device)
            tag = f"_{classifier_run.name}{trained_steps(classifier_run)}"

        def sample_at(scale):
            options = {"guidance_scale": scale} if kind == "w" else {"classifier": guiding, "classifier_scale": scale}
            return lambda size, generator, callback: sample_run(net, config, size, sampler=args.sampler, steps=args.steps,
                                                                generator=generator, progress=True, callback=callback, **options)[0]
    labels = intended_classes(args.num_samples, args.batch_size)
    rows, samples_by_scale = {}, {}
    for scale in scales:
        draw = sample_at(scale)
        name = f"{'cfg' if kind == 'w' else 'cg'}{scale:g}{tag}_{args.sampler}{args.steps}"
        samples, seconds, nfe = cached_samples(run, name, args.num_samples, args.seed, args.device, args.batch_size, draw)
        quality = sample_quality(samples, classifier=digit_classifier, seed=args.seed)
        rows[f"{run.name} {kind} = {scale:g}"] = quality | {"class_accuracy": class_accuracy(digit_classifier, samples, labels),
                                                           kind: scale} | timing(seconds, nfe, len(samples))
        samples_by_scale[scale] = samples
    return {"rows": rows, "samples": samples_by_scale, "labels": labels}


def figure(samples_by_scale: dict, labels: torch.Tensor, kind: str, per_class: int, title: str, path: Path) -> None:
    """A block per scale, side by side; in each block one row per class (its first ``per_class`` samples)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = torch.cat([(labels == c).nonzero()[:per_class, 0] for c in range(10)])
    fig, axes = plt.subplots(1, len(samples_by_scale), figsize=(1.6 + 0.32 * per_class * len(samples_by_scale), 4.2), squeeze=False)
    for axis, (scale, samples) in zip(axes[0], samples_by_scale.items()):
        grid = make_grid(samples[order], nrow=per_class, padding=1, pad_value=1.0)
        axis.imshow(grid.permute(1, 2, 0).numpy(), cmap="gray", vmin=0, vmax=1)
        axis.set_title(f"{kind} = {scale:g}")
        axis.set_xticks([]), axis.set_yticks([])
        for spine in axis.spines.values():
            spine.set_visible(False)
    side = next(iter(samples_by_scale.values())).shape[-1]
    axes[0][0].set_yticks([1 + (side + 1) * c + side / 2 for c in range(10)], [str(c) for c in range(10)])  # the intended class
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(rows: dict) -> str:
    lines = ["| samples | N | FD | KID (± std) | intended class | NFE | s/sample |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, row in rows.items():
        accuracy = f"{100 * row['class_accuracy']:.1f}%" if "class_accuracy" in row else ""
        per_sample = f"{row['seconds_per_sample']:.3f}" if row.get("seconds_per_sample") else ""
        lines.append(f"| {name} | {row['num_samples']} | {row['fd']:.2f} | {row['kid']:.4f} ± {row['kid_std']:.4f} | {accuracy} | "
                     f"{row.get('nfe', '')} | {per_sample} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg", default=None, help="a class-conditional DDPM run: classifier-free guidance sweep")
    parser.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.5, 1.0, 2.0, 4.0], help="w of classifier-free guidance")
    parser.add_argument("--ddpm", default=None, help="an unconditional DDPM run: classifier guidance sweep (with --classifier)")
    parser.add_argument("--classifier", default=None, help="a noisy-classifier run of the --ddpm run's forward process")
    parser.add_argument("--scales", type=float, nargs="+", default=[0.0, 1.0, 2.0, 4.0, 8.0], help="s of classifier guidance")
    parser.add_argument("--num-samples", type=int, default=500, help="samples per scale, a multiple of 10 (equal per class)")
    parser.add_argument("--sampler", default="dpmpp-2m")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=250, help="images sampled at once, a multiple of 10")
    parser.add_argument("--per-class", type=int, default=8, help="images per class in the figures")
    parser.add_argument("--classifier-dir", default="runs", help="where the FD feature classifier is cached")
    parser.add_argument("--figure-dir", default="docs/images")
    parser.add_argument("--json", default="runs/guidance_sweep.json")
    parser.add_argument("--markdown", default="runs/guidance_sweep.md")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cfg is None and args.ddpm is None:
        parser.error("give --cfg RUN (classifier-free guidance) and/or --ddpm RUN --classifier RUN (classifier guidance)")
    if (args.ddpm is None) != (args.classifier is None):
        parser.error("classifier guidance needs both --ddpm RUN and --classifier RUN")
    if args.num_samples % 10 or args.batch_size % 10 or args.num_samples < 10:
        parser.error(f"--num-samples and --batch-size must be positive multiples of 10 (one class per row), got "
                     f"{args.num_samples} and {args.batch_size}")
    digit_classifier = feature_classifier("mnist5k", cache_dir=args.classifier_dir, device=args.device)
    print(f"digit classifier: test accuracy {digit_classifier.test_accuracy:.4f} ({digit_classifier.cache_path})")
    train_images, train_labels = load_dataset("mnist5k", "train").tensors[:2]
    real, real_labels = train_images[: args.num_samples], train_labels[: args.num_samples]
    rows = {f"floor: {args.num_samples} real training digits": sample_quality(real, classifier=digit_classifier, seed=args.seed)
            | {"class_accuracy": class_accuracy(digit_classifier, real, real_labels)}}
    figures = []
    if args.cfg is not None:
        result = sweep(Path(args.cfg), "w", args.weights, args, digit_classifier)
        rows.update(result["rows"])
        figures.append(("w", result, f"classifier-free guidance, {Path(args.cfg).name}", f"guidance_cfg_{Path(args.cfg).name}.png"))
    if args.ddpm is not None:
        result = sweep(Path(args.ddpm), "s", args.scales, args, digit_classifier, Path(args.classifier))
        rows.update(result["rows"])
        figures.append(("s", result, f"classifier guidance, {Path(args.ddpm).name} + {Path(args.classifier).name}",
                        "guidance_classifier.png"))
    for kind, result, title, name in figures:
        title = f"{title} ({args.sampler}, {args.steps} steps)"
        figure(result["samples"], result["labels"], kind, args.per_class, title, Path(args.figure_dir) / name)
        print(f"wrote {Path(args.figure_dir) / name}")
    write_table(markdown(rows), rows, args.markdown, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
