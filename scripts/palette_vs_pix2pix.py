"""Palette (image-conditioned diffusion) against pix2pix on the same paired task and held-out pairs: one markdown table
(L1, FD, KID, network calls and seconds per image) and a picture (source / pix2pix / Palette / target rows).

Both translate the first ``--num-images`` of the task's 1,000 held-out sources (mnist5k's test split, the pairs of
pix2pix's ``test_l1``); Palette draws one posterior sample per source with ``--sampler`` at each of ``--steps``. L1 is the
mean |output − target| in [0, 1] pixel units; FD and KID compare the outputs with the targets on the features of the
library's digit classifier (``ppl_dgm.metrics.frechet``). Seconds are wall time of the translation alone, on this device.

    python scripts/palette_vs_pix2pix.py runs/palette_edges2digit runs/pix2pix_edges2digit --steps 10 50
"""
import argparse
import json
import time
from pathlib import Path

import torch
from torchvision.utils import save_image

from ppl_dgm.data.pairs import load_pairs
from ppl_dgm.diffusion.palette import translate_held_out, translation_quality
from ppl_dgm.diffusion.sampling import SAMPLER_NAMES
from ppl_dgm.gan.translation import translate_test_sources
from ppl_dgm.runs import load_run

GRID_PAIRS = 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("palette_run", help="a Palette run folder, e.g. runs/palette_edges2digit")
    parser.add_argument("pix2pix_run", help="a pix2pix run folder of the same task, e.g. runs/pix2pix_edges2digit")
    parser.add_argument("--num-images", type=int, default=1000, help="held-out pairs (all 1,000 by default)")
    parser.add_argument("--sampler", default="ddim", choices=SAMPLER_NAMES)
    parser.add_argument("--steps", type=int, nargs="+", default=[None], help="one Palette row per value (default: the run's sample_steps)")
    parser.add_argument("--batch-size", type=int, default=250, help="Palette sampling batch")
    parser.add_argument("--seed", type=int, default=0, help="seeds Palette's noise")
    parser.add_argument("--classifier-dir", default="runs", help="where the FD feature classifier is cached")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default=None, help="PNG (default: docs/images/palette_vs_pix2pix_<task>.png)")
    parser.add_argument("--json", default=None, help="also write the rows as JSON here")
    args = parser.parse_args()

    palette = load_run(args.palette_run, device=args.device, family="palette")
    pix2pix = load_run(args.pix2pix_run, device=args.device, family="pix2pix")
    task = palette.config.task
    if pix2pix.config.task != task:
        raise SystemExit(f"the runs translate different tasks: {args.palette_run} {task!r}, {args.pix2pix_run} {pix2pix.config.task!r}")
    source, target, _ = (t[: args.num_images] for t in load_pairs(task, "test").tensors)

    started = time.perf_counter()
    pix2pix_outputs = translate_test_sources(pix2pix.model, pix2pix.config, len(source)).cpu()
    rows = [("source copied (no model)", source, 0, 0.0),
            (f"pix2pix ({Path(args.pix2pix_run).name}, {len(pix2pix.metrics)} epochs)", pix2pix_outputs, 1,
             (time.perf_counter() - started) / len(source))]
    for steps in args.steps:
        started = time.perf_counter()
        _, outputs, _, calls = translate_held_out(palette.model, palette.config, len(source), sampler=args.sampler, steps=steps,
                                                  batch_size=args.batch_size, seed=args.seed, progress=True)
        steps_label = steps or (palette.config.sample_steps if args.sampler == "ddim" else "default")
        rows.append((f"Palette ({Path(args.palette_run).name}, {len(palette.metrics)} epochs), {args.sampler} {steps_label} steps",
                     outputs, calls, (time.perf_counter() - started) / len(source)))

    results = []
    print(f"\n{task}: first {len(source)} held-out pairs of mnist5k's test split; device {palette.device}\n")
    print("| method | network calls per image | seconds per image | L1 | FD | KID (± std over subsets) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, outputs, calls, seconds in rows:
        quality = translation_quality(outputs, target, cache_dir=args.classifier_dir)
        results.append({"method": name, "network_calls_per_image": calls, "seconds_per_image": seconds, **quality})
        print(f"| {name} | {calls} | {seconds:.4f} | {quality['test_l1']:.4f} | {quality['fd']:.2f} | "
              f"{quality['kid']:.1f} ± {quality['kid_std']:.1f} |")

    out = Path(args.out or f"docs/images/palette_vs_pix2pix_{task}.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    pictures = [source[:GRID_PAIRS], pix2pix_outputs[:GRID_PAIRS], *(row[1][:GRID_PAIRS] for row in rows[2:]), target[:GRID_PAIRS]]
    save_image(torch.cat(pictures), out, nrow=GRID_PAIRS, padding=2, pad_value=1.0)
    palette_rows = ", ".join(f"Palette {steps or 'default'} steps" for steps in args.steps)
    print(f"\nwrote {out} (rows: source, pix2pix, {palette_rows}, target)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
