"""Image benchmark: the conv VAE on Fashion-MNIST, every latent sampler scored by an independent judge.

Two models train in this process (`training.executor: local`) on one Parquet of real training images: a plain conv
VAE and a CVAE (`model.conditional: true`). Each gets its aggregate-posterior statistics and its own evaluation
(`run_evaluation`: its `choice` is what `sampler: auto` uses). Then each sampler generates `--images-per-sampler`
images with `ShardGenerator`, and a judge scores them: an `ImageReference` (a LeNet) fitted on a seeded subset of
the real TRAIN images, with the real TEST images, which neither VAE nor the evaluation ever sees, as its holdout.
The evaluation's own reference is another classifier on another sample (the table's TRAIN rows, with its own holdout
split as holdout), so its choice and the judge's scores are independent measurements. See benchmarks/README.md for
the protocol and the last results.

    python benchmarks/images.py [--epochs N] [--train-rows N] [--latent-dim L] [--images-per-sampler N]
                                [--seed S] [--out out/bench-images] [--quick]

The full run needs Fashion-MNIST (`make bench-install`); without it, and with --quick, it runs on the shipped
3,000-image slice of the test set (split 80/20, seeded). Never part of `make test`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch

from vae_pipeline import fashion_mnist
from vae_pipeline.bundle import ModelBundle, load_bundle
from vae_pipeline.config import PipelineConfig, SamplerConfig, parse_config
from vae_pipeline.data import open_source
from vae_pipeline.evaluation.image_plots import render_image_grid
from vae_pipeline.evaluation.image_reference import ImageReference
from vae_pipeline.evaluation.job import candidates, run_evaluation
from vae_pipeline.executor import one_thread
from vae_pipeline.generation.job import load_artifacts
from vae_pipeline.generation.plan import ShardSpec
from vae_pipeline.generation.worker import ShardGenerator
from vae_pipeline.image_columns import image_values
from vae_pipeline.posterior.aggregate import AggregatePosterior
from vae_pipeline.posterior.job import run_statistics
from vae_pipeline.samplers.base import LatentSample
from vae_pipeline.samplers.registry import build_sampler
from vae_pipeline.split import Split, split_codes
from vae_pipeline.training.job import run_training

REPO = Path(__file__).resolve().parents[1]
FD_CUT = 0.30  # the best aggregate-posterior sampler cuts the prior's FD by at least this share
TSTR_SHARE = 0.85  # auto's TSTR accuracy reaches this share of train-on-real accuracy
CONDITIONAL_ACCURACY = 0.85  # the CVAE's conditional images get their requested class this often
QUICK = {"epochs": 2, "images_per_sampler": 1_000, "judge_rows": 2_400, "evaluation_rows": 400}
GRID_IMAGES = 300


# ----------------------------------------------------------------------------------------------- the images


@dataclass(frozen=True)
class RealImages:
    train: np.ndarray  # uint8 (N, 1, 28, 28): the VAEs' table and the judge's training pool
    train_labels: np.ndarray  # int64 codes into CLASS_NAMES
    test: np.ndarray  # uint8 (M, 1, 28, 28): the judge's holdout and the TSTR test set; no VAE sees them
    test_labels: np.ndarray
    source: str


def real_images(args: argparse.Namespace) -> RealImages:
    """Fashion-MNIST's 60k/10k split, or the shipped slice split 80/20 (seeded); `--train-rows` subsets the train."""
    if args.quick or not fashion_mnist.is_installed():
        table = pq.read_table(fashion_mnist.SLICE_PATH)
        images = image_values(table.column("image"))
        labels = np.array([fashion_mnist.CLASS_NAMES.index(n) for n in table.column("label").to_pylist()])
        order = np.random.default_rng(args.seed).permutation(len(images))
        cut = int(0.8 * len(images))
        train, test = np.sort(order[:cut]), np.sort(order[cut:])
        source = f"shipped slice ({len(images)} test-set images, 80/20 seeded split)"
        real = RealImages(images[train], labels[train], images[test], labels[test], source)
    else:
        train_images, train_labels = fashion_mnist.load_fashion_mnist("train")
        test_images, test_labels = fashion_mnist.load_fashion_mnist("test")
        real = RealImages(train_images, train_labels, test_images, test_labels, "Fashion-MNIST train/test")
    if args.train_rows and args.train_rows < len(real.train):
        keep = np.sort(np.random.default_rng(args.seed).choice(len(real.train), args.train_rows, replace=False))
        real = RealImages(real.train[keep], real.train_labels[keep], real.test, real.test_labels, real.source)
    return real


def pixels(images: np.ndarray) -> np.ndarray:
    """uint8 images -> float32 [0, 1], as the judge takes them."""
    return images.astype(np.float32) / 255.0


def fit_judge(real: RealImages, args: argparse.Namespace) -> ImageReference:
    """A LeNet on a seeded subset of the real training images; the real test images are its holdout."""
    rng = np.random.default_rng(args.seed + 1)  # another draw than --train-rows'
    rows = min(args.judge_rows, len(real.train))
    keep = np.sort(rng.choice(len(real.train), rows, replace=False))
    return ImageReference.fit(
        pixels(real.train[keep]),
        real.train_labels[keep],
        pixels(real.test),
        real.test_labels,
        seed=args.seed,
        n_classes=len(fashion_mnist.CLASS_NAMES),
    )


# ----------------------------------------------------------------------------------------------- the models


@dataclass
class Model:
    name: str  # "vae" or "cvae"
    config: PipelineConfig
    statistics_url: str
    report: dict[str, Any]
    bundle: ModelBundle
    posterior: AggregatePosterior
    train_seconds: float | None  # wall clock around run_training; None when a trained bundle was reused
    train_rows: int  # rows in the TRAIN split: what each epoch's gradient steps see
    epoch_seconds: list[float] = field(default_factory=list)


def pipeline_config(table_url: str, name: str, conditional: bool, args: argparse.Namespace) -> PipelineConfig:
    root = args.out / name
    return parse_config(
        {
            "model_url": str(root / "model"),
            "data": {"input_url": table_url, "label_column": "label", "split_seed": args.seed},
            "model": {"architecture": "conv", "latent_dim": args.latent_dim, "conditional": conditional},
            "training": {"epochs": args.epochs, "batch_size": args.batch_size, "seed": args.seed, "executor": "local"},
            "statistics": {"executor": "local", "seed": args.seed},
            "evaluation": {"rows": args.evaluation_rows, "seed": args.seed},
            "generation": {"seed": args.seed, "executor": "local", "output_url": str(root / "synthetic")},
        }
    )


def train_model(table_url: str, name: str, conditional: bool, args: argparse.Namespace) -> Model:
    config = pipeline_config(table_url, name, conditional, args)
    if not args.reuse_models:  # a rerun would otherwise resume from old checkpoints and time nothing
        shutil.rmtree(config.model_url, ignore_errors=True)
    print(f"training {name} ({args.epochs} epochs) ...", flush=True)
    started = time.perf_counter()
    run_training(config)
    seconds = time.perf_counter() - started
    bundle = load_bundle(config.model_url)
    epoch_seconds = [float(m["seconds"]) for m in bundle.metrics]
    statistics_url = run_statistics(config, model_url=config.model_url)
    print(f"evaluating {name} (the pipeline's own choice for `auto`) ...", flush=True)
    report_url = run_evaluation(config, model_url=config.model_url, statistics_url=statistics_url)
    report = json.loads(Path(report_url).read_text())
    bundle, posterior = load_artifacts(config.model_url, statistics_url)
    trained_now = seconds > 0.5 * sum(epoch_seconds)  # else run_training reused the bundle (--reuse-models)
    return Model(
        name, config, statistics_url, report, bundle, posterior, seconds if trained_now else None,
        train_rows(bundle), epoch_seconds,
    )  # fmt: skip


def train_rows(bundle: ModelBundle) -> int:
    """Rows the bundle's epochs trained on: the TRAIN split of its table under its own data config."""
    data = bundle.config.data
    source = open_source(data)
    return int(sum((split_codes(batch, data) == Split.TRAIN).sum() for batch in source.batches(data.batch_rows)))


# ----------------------------------------------------------------------------------------------- generation


class RecordingSampler:
    """A fitted sampler that keeps the class it drew for each row, in row order.

    A plain VAE decodes its label column from the latent, so a conditional sampler's requested class is not in the
    generated table; this keeps it, to score whether the images show it.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.classes: list[np.ndarray] = []

    def affine_form(self) -> tuple[np.ndarray, np.ndarray] | None:
        return self.inner.affine_form()  # type: ignore[no-any-return]

    def sample(self, n: int, *, generator: np.random.Generator) -> LatentSample:
        drawn: LatentSample = self.inner.sample(n, generator=generator)
        if drawn.classes is not None:
            self.classes.append(drawn.classes)
        return drawn


@dataclass(frozen=True)
class Generated:
    images: np.ndarray  # float32 (N, 1, 28, 28) in [0, 1]
    labels: np.ndarray  # the generated label column, as codes into CLASS_NAMES
    requested: np.ndarray | None  # the class each image was asked for (a CVAE's condition, a conditional draw)
    seconds: float  # ShardGenerator.generate alone (sampler fit excluded)


def generate(model: Model, sampler: SamplerConfig, rows: int, seed: int) -> Generated:
    recorder = RecordingSampler(build_sampler(sampler).fit(model.posterior))
    generator = ShardGenerator(model.bundle, model.posterior, recorder)  # type: ignore[arg-type]
    started = time.perf_counter()
    table = generator.generate(ShardSpec(index=0, rows=rows, seed=seed))
    seconds = time.perf_counter() - started
    labels = class_codes(table.column("label").to_pylist())
    if model.bundle.transform.conditional:  # a CVAE's label column is its condition
        requested: np.ndarray | None = labels
    elif recorder.classes:
        names = [str(label) for label in model.posterior.class_labels]
        requested = class_codes([names[i] for i in np.concatenate(recorder.classes)])
    else:
        requested = None
    return Generated(pixels(image_values(table.column("image"))), labels, requested, seconds)


def class_codes(names: list[Any]) -> np.ndarray:
    index = {name: code for code, name in enumerate(fashion_mnist.CLASS_NAMES)}
    return np.array([index[str(name)] for name in names], dtype=np.int64)


# ----------------------------------------------------------------------------------------------- scoring


def predictions(judge: ImageReference, images: np.ndarray) -> np.ndarray:
    """The judge's class for each image."""
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), 1_024):
            out.append(judge.classifier(torch.from_numpy(images[start : start + 1_024])).argmax(1).numpy())
    return np.concatenate(out)


def score_samplers(
    model: Model, names: list[str], judge: ImageReference, args: argparse.Namespace
) -> tuple[dict[str, dict[str, Any]], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Each named candidate's images scored by the judge; also the first images of each, for the grid."""
    found = {c.name: c.sampler for c in candidates(model.posterior, model.config.evaluation)}
    scores: dict[str, dict[str, Any]] = {}
    shown: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in names:
        made = generate(model, found[name], args.images_per_sampler, args.seed)
        started = time.perf_counter()
        entry = judge.score(made.images, made.labels, requested=made.requested)
        predicted = predictions(judge, made.images)
        entry["label_agreement"] = float(np.mean(predicted == made.labels))  # judge vs the generated label column
        entry["generation_seconds"] = made.seconds
        entry["images_per_second"] = len(made.images) / made.seconds
        entry["scoring_seconds"] = time.perf_counter() - started
        entry["sampler"] = found[name].model_dump(mode="json")
        scores[name] = entry
        shown[name] = (made.images[:GRID_IMAGES], made.labels[:GRID_IMAGES])
        print(
            f"  {model.name}/{name}: FD {entry['frechet_distance']:.2f}, TSTR {entry['tstr_accuracy']:.3f}, "
            f"{entry['images_per_second']:,.0f} images/s",
            flush=True,
        )
    return scores, shown


def cvae_names(model: Model) -> list[str]:
    """The CVAE's prior, its conditional sampler and its evaluation's choice."""
    return list(dict.fromkeys(["prior", "conditional", auto_choice(model.report)[0]]))


def write_grid(path: Path, real: RealImages, shown: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Real test images, then each scored sampler's first images (labels from the generated column), one PNG."""
    real_images = (pixels(real.test[:GRID_IMAGES]), real.test_labels[:GRID_IMAGES])
    png = render_image_grid(real_images, dict(shown), list(shown), list(fashion_mnist.CLASS_NAMES))
    path.write_bytes(png)


# ----------------------------------------------------------------------------------------------- targets


def aggregate_posterior_names(scores: dict[str, dict[str, Any]]) -> list[str]:
    """Every sampler fitted to the aggregate posterior: all but the prior (at any temperature)."""
    return [name for name in scores if name.split("@")[0] != "prior"]


def targets(result: dict[str, Any]) -> list[tuple[str, bool, str]]:
    """(target, met, the numbers behind it); `auto` is the plain VAE's evaluation choice."""
    vae, cvae = result["models"]["vae"], result["models"]["cvae"]
    scores, prior_fd = vae["scores"], vae["scores"]["prior"]["frechet_distance"]
    real_accuracy = result["judge"]["train_on_real_accuracy"]
    best = min(aggregate_posterior_names(scores), key=lambda n: scores[n]["frechet_distance"])
    best_fd = scores[best]["frechet_distance"]
    auto = vae["auto"] + ("" if vae["auto_passed_privacy_guard"] else " (top-ranked: none passed the privacy guard)")
    auto_fd, auto_tstr = scores[vae["auto"]]["frechet_distance"], scores[vae["auto"]]["tstr_accuracy"]
    cond, plain_cond = (
        cvae["scores"]["conditional"]["conditional_accuracy"],
        scores["conditional"]["conditional_accuracy"],
    )
    tstr_target = f"TSTR on auto's images >= {TSTR_SHARE:.0%} of train-on-real"
    return [
        (f"best aggregate-posterior sampler cuts the prior's FD by >= {FD_CUT:.0%}", best_fd <= (1 - FD_CUT) * prior_fd,
         f"{best}: FD {best_fd:.2f} vs prior {prior_fd:.2f} ({_cut(best_fd, prior_fd)})"),
        ("auto (the evaluation's choice) is that sampler", vae["auto"] == best,
         f"auto chose {auto}; the judge's lowest FD is {best}"),
        (f"auto's FD cuts the prior's by >= {FD_CUT:.0%}", auto_fd <= (1 - FD_CUT) * prior_fd,
         f"auto {vae['auto']}: FD {auto_fd:.2f} ({_cut(auto_fd, prior_fd)})"),
        (tstr_target, auto_tstr >= TSTR_SHARE * real_accuracy,
         f"{auto_tstr:.3f} vs {real_accuracy:.3f} ({_ratio(auto_tstr, real_accuracy)})"),
        (f"CVAE conditional images get their class >= {CONDITIONAL_ACCURACY:.0%}", cond >= CONDITIONAL_ACCURACY,
         f"{cond:.3f} (plain VAE's conditional sampler: {_fmt(plain_cond)})"),
    ]  # fmt: skip


def _cut(value: float, prior: float) -> str:
    """The FD cut against the prior's, as a share: 30% is an FD 0.7 times the prior's."""
    return f"{1 - value / prior:.0%} cut"


def _ratio(value: float | None, base: float) -> str:
    return "-" if value is None else f"{value / base:.0%}"


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


# ----------------------------------------------------------------------------------------------- output


def print_results(result: dict[str, Any]) -> None:
    judge = result["judge"]
    real_accuracy, floor = judge["train_on_real_accuracy"], judge["frechet_floor"]
    print(
        f"\nFashion-MNIST images ({result['data']['source']}): {result['data']['table_rows']:,} training images "
        f"({result['models']['vae']['train_rows']:,} in the TRAIN split), {result['epochs']} epochs, latent "
        f"{result['latent_dim']}, {result['images_per_sampler']:,} images per sampler; judge trained on "
        f"{judge['train_images']:,} real train images, tested on {judge['test_images']:,} real test images"
    )
    header = (
        f"{'sampler':<30} {'FD':>7} {'vs prior':>8} {'prec':>6} {'recall':>6} {'dens':>6} {'cover':>6} "
        f"{'TSTR':>6} {'/real':>6} {'cond':>6} {'label':>6} {'img/s':>8}"
    )
    print(header)
    print("-" * len(header))
    print(
        f"{'real train images':<30} {floor:>7.2f} {'':>8} {judge['precision']:>6.3f} {judge['recall']:>6.3f} "
        f"{judge['density']:>6.3f} {judge['coverage']:>6.3f} {real_accuracy:>6.3f} {'100%':>6}"
    )
    for model_name in ("vae", "cvae"):
        model = result["models"][model_name]
        prior_fd = model["scores"]["prior"]["frechet_distance"]
        for name, entry in model["scores"].items():
            tag = f"{model_name}/{name}" + (" (auto)" if name == model["auto"] else "")
            fd = entry["frechet_distance"]
            print(
                f"{tag:<30} {fd:>7.2f} {f'{fd / prior_fd - 1:+.0%}' if name != 'prior' else '':>8} "
                f"{entry['precision']:>6.3f} {entry['recall']:>6.3f} {entry['density']:>6.3f} "
                f"{entry['coverage']:>6.3f} {entry['tstr_accuracy']:>6.3f} "
                f"{_ratio(entry['tstr_accuracy'], real_accuracy):>6} {_fmt(entry['conditional_accuracy']):>6} "
                f"{entry['label_agreement']:>6.3f} {entry['images_per_second']:>8,.0f}"
            )
    print(
        "FD: Fréchet distance in the judge's 84 features (real train images: the floor); vs prior: FD change against "
        "the same model's prior; cond: the judge gives the requested class (CVAE: its condition; plain VAE: only the "
        "conditional sampler requests one); label: the judge agrees with the generated label column"
    )
    print_speed(result)
    print("\ntargets:")
    for name, met, detail in result["targets"]:
        print(f"  {'met' if met else 'MISSED':<7} {name}: {detail}")


def print_speed(result: dict[str, Any]) -> None:
    speed = result["speed"]
    print(f"\nspeed (torch threads: {speed['torch_threads']}, load average at the end {speed['load_average']:.2f}):")
    for name in ("vae", "cvae"):
        model = result["models"][name]
        epochs = model["epoch_seconds"]
        wall = "-" if model["train_seconds"] is None else f"{model['train_seconds']:.0f} s"
        print(
            f"  {name}: {np.mean(epochs):.1f} s/epoch (median {np.median(epochs):.1f}), "
            f"{model['train_rows'] / np.mean(epochs):,.0f} training images/s (an epoch includes its validation pass); "
            f"run_training wall {wall}; generation {model['generation_images_per_second']:,.0f} images/s "
            "(median over its samplers)"
        )
    print(f"  judge fitted in {result['judge']['seconds']:.0f} s; whole run {speed['total_seconds'] / 60:.1f} min")


def auto_choice(report: dict[str, Any]) -> tuple[str, bool]:
    """The evaluation's choice, and whether it passed the privacy guard (if none did: the top-ranked sampler)."""
    choice = report["choice"]
    return (choice["name"], True) if choice is not None else (report["samplers"][0]["name"], False)


def model_result(model: Model, scores: dict[str, dict[str, Any]]) -> dict[str, Any]:
    auto, passed = auto_choice(model.report)
    ranking = [(e["name"], round(e["composite"], 4), e["privacy_ok"]) for e in model.report["samplers"]]
    return {
        "model_url": model.config.model_url,
        "auto": auto,
        "auto_passed_privacy_guard": passed,
        "evaluation_ranking": ranking,
        "train_seconds": model.train_seconds,
        "train_rows": model.train_rows,
        "epoch_seconds": model.epoch_seconds,
        "training_images_per_second": model.train_rows / float(np.mean(model.epoch_seconds)),
        "generation_images_per_second": float(np.median([e["images_per_second"] for e in scores.values()])),
        "final_val_loss": model.bundle.metrics[-1].get("val_loss"),
        "latent": model.report["latent"],
        "scores": scores,
    }


def judge_result(judge: ImageReference, seconds: float, real: RealImages) -> dict[str, Any]:
    reference = judge.reference()
    return {
        "train_images": reference["images"],
        "test_images": len(real.test),
        "train_on_real_accuracy": reference["tstr_accuracy"],
        "frechet_floor": reference["frechet_floor"],
        **{key: reference[key] for key in ("precision", "recall", "density", "coverage")},
        "seconds": seconds,
    }


def commit() -> str | None:
    found = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True, text=True)
    return found.stdout.strip() or None


# ----------------------------------------------------------------------------------------------- main


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    real = real_images(args)
    args.out.mkdir(parents=True, exist_ok=True)
    table_url = str(args.out / "fashion-mnist-train.parquet")
    if not (args.reuse_models and Path(table_url).exists()):  # a new file is new input: training would rerun
        pq.write_table(fashion_mnist.fashion_mnist_table(real.train, real.train_labels), table_url)
    with one_thread():  # training's local executor runs on one thread too
        print(f"judge: fitting on {min(args.judge_rows, len(real.train)):,} real train images ...", flush=True)
        judge_started = time.perf_counter()
        judge = fit_judge(real, args)
        judge_seconds = time.perf_counter() - judge_started
        vae = train_model(table_url, "vae", conditional=False, args=args)
        cvae = train_model(table_url, "cvae", conditional=True, args=args)
        vae_names = [c.name for c in candidates(vae.posterior, vae.config.evaluation)]
        vae_scores, vae_shown = score_samplers(vae, vae_names, judge, args)
        cvae_scores, cvae_shown = score_samplers(cvae, cvae_names(cvae), judge, args)
        torch_threads = torch.get_num_threads()
    write_grid(args.out / "vae" / "images.png", real, vae_shown)
    write_grid(args.out / "cvae" / "images.png", real, cvae_shown)
    result: dict[str, Any] = {
        "commit": commit(),
        "data": {"source": real.source, "table_rows": len(real.train), "test_rows": len(real.test)},
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "latent_dim": args.latent_dim,
        "images_per_sampler": args.images_per_sampler,
        "seed": args.seed,
        "judge": judge_result(judge, judge_seconds, real),
        "models": {"vae": model_result(vae, vae_scores), "cvae": model_result(cvae, cvae_scores)},
    }
    result["targets"] = targets(result)
    result["speed"] = {
        "torch_threads": torch_threads,
        "load_average": os.getloadavg()[0],
        "total_seconds": time.perf_counter() - started,
    }
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-rows", type=int, default=None, help="a seeded subset of the training images")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--latent-dim", type=int, default=16)
    parser.add_argument("--images-per-sampler", type=int, default=10_000)
    parser.add_argument("--judge-rows", type=int, default=10_000, help="real train images the judge learns from")
    parser.add_argument("--evaluation-rows", type=int, default=2_000, help="the pipeline's evaluation.rows")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="default out/bench-images (--quick: ...-quick)")
    parser.add_argument("--reuse-models", action="store_true", help="keep trained bundles (rescoring only)")
    parser.add_argument("--quick", action="store_true", help="the shipped slice, few epochs, small counts")
    args = parser.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            if getattr(args, key) == parser.get_default(key):
                setattr(args, key, value)
    if args.out is None:
        args.out = Path("out/bench-images-quick" if args.quick else "out/bench-images")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    result = run(args)
    path = args.out / "results.json"
    path.write_text(json.dumps(result, indent=2, default=float))
    print_results(result)
    print(f"\nresults: {path}; image grids: {args.out / 'vae' / 'images.png'}, {args.out / 'cvae' / 'images.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
