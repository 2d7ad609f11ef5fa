"""The paper's reported numbers as data: Tables 1-6, the CIFAR-10 protocol (Sec. 4.2), figure end values.

Source: He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", arXiv 1512.03385, checked
digit for digit against the paper's text. `python -m resnet_repro.paper results/paper` renders it all
as results/paper/paper_numbers.md, so the project's table of paper numbers is generated, not typed.
"""

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

# --- Table 1: ImageNet architectures -------------------------------------------------------------


@dataclass(frozen=True)
class ImageNetArch:
    """One column of Table 1."""

    depth: int
    block: str  # "basic" (two 3x3) or "bottleneck" (1x1, 3x3, 1x1), Fig. 5
    blocks_per_stage: tuple[int, int, int, int]  # conv2_x .. conv5_x
    mult_adds: float  # the paper's "FLOPs" are multiply-adds (Sec. 3.3)


TABLE1 = {
    18: ImageNetArch(18, "basic", (2, 2, 2, 2), 1.8e9),
    34: ImageNetArch(34, "basic", (3, 4, 6, 3), 3.6e9),
    50: ImageNetArch(50, "bottleneck", (3, 4, 6, 3), 3.8e9),
    101: ImageNetArch(101, "bottleneck", (3, 4, 23, 3), 7.6e9),
    152: ImageNetArch(152, "bottleneck", (3, 8, 36, 3), 11.3e9),
}
# Sec. 3.3: plain-34 is 18% of VGG-19; ResNet-152 is still cheaper than VGG-16/19.
VGG_MULT_ADDS = {"vgg16": 15.3e9, "vgg19": 19.6e9}
# Not in the paper (it reports no ImageNet parameter counts): torchvision's `num_params`, for reference.
TORCHVISION_PARAMS = {18: 11_689_512, 34: 21_797_672, 50: 25_557_032, 101: 44_549_160, 152: 60_192_808}

# --- Tables 2-5: ImageNet error (%) ----------------------------------------------------------------


@dataclass(frozen=True)
class ImageNetResult:
    """One row of Tables 3-5; None where the paper prints "–"."""

    method: str
    top1: float | None
    top5: float | None
    note: str = ""
    decimals: int = 2  # as printed; only VGG (v5) is printed with one decimal


# Table 2: top-1 error, 10-crop, ImageNet val; option A shortcuts (no extra parameters).
TABLE2 = {"plain18": 27.94, "resnet18": 27.88, "plain34": 28.54, "resnet34": 25.03}

TABLE3_PROTOCOL = "10-crop testing, ImageNet val"
TABLE3 = (
    ImageNetResult("VGG-16 [41]", 28.07, 9.33, "the authors' own test"),
    ImageNetResult("GoogLeNet [44]", None, 9.15),
    ImageNetResult("PReLU-net [13]", 24.27, 7.38),
    ImageNetResult("plain-34", 28.54, 10.02),
    ImageNetResult("ResNet-34 A", 25.03, 7.76),
    ImageNetResult("ResNet-34 B", 24.52, 7.46),
    ImageNetResult("ResNet-34 C", 24.19, 7.40),
    ImageNetResult("ResNet-50", 22.85, 6.71, "option B (Table 3 caption)"),
    ImageNetResult("ResNet-101", 21.75, 6.05, "option B"),
    ImageNetResult("ResNet-152", 21.43, 5.71, "option B"),
)

TABLE4_PROTOCOL = "single model, ImageNet val (except †: test set)"
TABLE4_NOTE = (
    "The Table 4 caption names no test protocol. Sec. 3.4 says the best results use fully-convolutional, "
    "multi-scale testing (shorter side in {224, 256, 384, 480, 640}), and Table 4 is the best-results "
    "comparison, so we read it as that multi-scale dense protocol (our reading). Do not compare 1-crop "
    "or 10-crop reproductions against Table 4."
)
TABLE4 = (
    ImageNetResult("VGG [41] (ILSVRC'14)", None, 8.43, "† test set"),
    ImageNetResult("GoogLeNet [44] (ILSVRC'14)", None, 7.89),
    ImageNetResult("VGG [41] (v5)", 24.4, 7.1, decimals=1),
    ImageNetResult("PReLU-net [13]", 21.59, 5.71),
    ImageNetResult("BN-inception [16]", 21.99, 5.81),
    ImageNetResult("ResNet-34 B", 21.84, 5.71),
    ImageNetResult("ResNet-34 C", 21.53, 5.60),
    ImageNetResult("ResNet-50", 20.74, 5.25),
    ImageNetResult("ResNet-101", 19.87, 4.60),
    ImageNetResult("ResNet-152", 19.38, 4.49),
)

TABLE5_PROTOCOL = "ensembles, top-5 error on the ImageNet test set (test server)"
TABLE5 = (
    ImageNetResult("VGG [41] (ILSVRC'14)", None, 7.32),
    ImageNetResult("GoogLeNet [44] (ILSVRC'14)", None, 6.66),
    ImageNetResult("VGG [41] (v5)", None, 6.8, decimals=1),
    ImageNetResult("PReLU-net [13]", None, 4.94),
    ImageNetResult("BN-inception [16]", None, 4.82),
    ImageNetResult("ResNet (ILSVRC'15)", None, 3.57, "six models of different depth, two of 152 layers"),
)

# --- Table 6: CIFAR-10 test error (%), all methods with data augmentation --------------------------


@dataclass(frozen=True)
class Table6Row:
    """One row of Table 6; `error` is the single (or best) run, mean/std only where the paper gives them."""

    method: str
    layers: int | None
    params: str | None  # as printed, e.g. "0.27M"
    error: float
    mean: float | None = None
    std: float | None = None

    @property
    def printed(self) -> str:
        """The error cell as the paper prints it, e.g. "6.43 (6.61±0.16)"."""
        if self.mean is None:
            return f"{self.error:.2f}"
        return f"{self.error:.2f} ({self.mean:.2f}±{self.std:.2f})"

    @property
    def model(self) -> str | None:
        """Our registry name for the paper's ResNet rows ("resnet110"), None for other methods."""
        return f"resnet{self.layers}" if self.method == "ResNet" else None


TABLE6_CAPTION = "For ResNet-110, we run it 5 times and show 'best (mean±std)' as in [43]."
TABLE6_RUNS_110 = 5
TABLE6 = (
    Table6Row("Maxout [10]", None, None, 9.38),
    Table6Row("NIN [25]", None, None, 8.81),
    Table6Row("DSN [24]", None, None, 8.22),
    Table6Row("FitNet [35]", 19, "2.5M", 8.39),
    Table6Row("Highway [42,43]", 19, "2.3M", 7.54, mean=7.72, std=0.16),
    Table6Row("Highway [42,43]", 32, "1.25M", 8.80),
    Table6Row("ResNet", 20, "0.27M", 8.75),
    Table6Row("ResNet", 32, "0.46M", 7.51),
    Table6Row("ResNet", 44, "0.66M", 7.17),
    Table6Row("ResNet", 56, "0.85M", 6.97),
    Table6Row("ResNet", 110, "1.7M", 6.43, mean=6.61, std=0.16),
    Table6Row("ResNet", 1202, "19.4M", 7.93),
)

# --- Sec. 4.2: the CIFAR-10 protocol -----------------------------------------------------------------


@dataclass(frozen=True)
class CifarProtocol:
    """The training and testing recipe of Sec. 4.2, in the paper's units (iterations, percent)."""

    lr: float = 0.1
    lr_decay: float = 0.1  # "divide it by 10"
    milestones: tuple[int, ...] = (32_000, 48_000)
    max_iters: int = 64_000  # "determined on a 45k/5k train/val split"
    batch_size: int = 128  # "on two GPUs"
    gpus: int = 2
    weight_decay: float = 1e-4
    momentum: float = 0.9
    warmup_lr: float = 0.01  # ResNet-110: "0.1 is slightly too large to start converging"
    warmup_until_train_error: float = 80.0  # percent; "about 400 iterations"
    warmup_about_iters: int = 400
    train_images: int = 50_000
    test_images: int = 10_000
    schedule_split: tuple[int, int] = (45_000, 5_000)
    pad: int = 4  # pad 4 pixels per side, random 32x32 crop or its horizontal flip
    crop: int = 32
    filters: tuple[int, int, int] = (16, 32, 64)  # on 32x32, 16x16, 8x8 maps; 6n+2 weighted layers


CIFAR = CifarProtocol()
# Sec. 4.2: n = {3, 5, 7, 9} gives 20/32/44/56 layers; n = 18 gives 110; n = 200 gives 1202.
CIFAR_N_BY_DEPTH = {6 * n + 2: n for n in (3, 5, 7, 9, 18, 200)}

# --- End-of-training values read off the curves of Figs. 1, 4 and 6 (not printed in the paper) ------------

FIGURE_READ_TOLERANCE = 0.3  # percentage points; these are read from the figure images, not printed


@dataclass(frozen=True)
class FigureValue:
    """An approximate end-of-training error (%) read off a figure: the range [low, high], ±0.3 points."""

    figure: str  # "fig1", "fig4", "fig6"
    panel: str
    model: str
    curve: str  # "train", "test", or "val (center crop)" for Fig. 4
    low: float
    high: float


def _fv(figure, panel, model, curve, low, high=None):
    return FigureValue(figure, panel, model, curve, low, low if high is None else high)


FIGURE_VALUES = (
    _fv("fig1", "training / test error", "plain20", "train", 1.3, 1.5),
    _fv("fig1", "training / test error", "plain20", "test", 9.7),
    _fv("fig1", "training / test error", "plain56", "train", 5.5, 6.0),
    _fv("fig1", "training / test error", "plain56", "test", 13.3),
    _fv("fig4", "plain", "plain18", "val (center crop)", 31.5),
    _fv("fig4", "plain", "plain34", "val (center crop)", 32.6),
    _fv("fig4", "ResNet", "resnet18", "val (center crop)", 31.1),
    _fv("fig4", "ResNet", "resnet34", "val (center crop)", 28.3),
    _fv("fig4", "ResNet", "resnet34", "train", 24.0, 25.0),
    _fv("fig6", "plain", "plain20", "test", 9.7),
    _fv("fig6", "plain", "plain32", "test", 10.1),
    _fv("fig6", "plain", "plain44", "test", 11.2),
    _fv("fig6", "plain", "plain56", "test", 13.2),
    _fv("fig6", "plain", "plain20", "train", 1.3),
    _fv("fig6", "plain", "plain32", "train", 1.5),
    _fv("fig6", "plain", "plain44", "train", 2.7),
    _fv("fig6", "plain", "plain56", "train", 6.0),
    _fv("fig6", "ResNet", "resnet20", "test", 8.8),
    _fv("fig6", "ResNet", "resnet32", "test", 7.5),
    _fv("fig6", "ResNet", "resnet44", "test", 7.1, 7.3),
    _fv("fig6", "ResNet", "resnet56", "test", 7.1, 7.3),
    _fv("fig6", "ResNet", "resnet110", "test", 6.6, 6.9),
    _fv("fig6", "ResNet-110 vs 1202", "resnet110", "test", 6.6, 6.7),
    _fv("fig6", "ResNet-110 vs 1202", "resnet1202", "test", 7.9, 8.1),
    _fv("fig6", "ResNet-110 vs 1202", "resnet110", "train", 0.1),
    _fv("fig6", "ResNet-110 vs 1202", "resnet1202", "train", 0.1),
)
FIGURE_NOTES = {
    "fig1": "Plain nets. Caption: 'The deeper network has higher training error, and thus test error.' "
    "Steps at about 3.2e4 and 4.8e4 iterations (the lr drops); curves start above 20%.",
    "fig4": "ImageNet; thin = training error, bold = center-crop validation error; lr drops near 15e4 and "
    "30e4. Center-crop values sit above Table 2's 10-crop values.",
    "fig6": "Dashed = training error, bold = test error. 'The error of plain-110 is higher than 60% and not "
    "displayed.' ResNet training errors end at about 0.1-1.7% (ResNet-20 highest); "
    "ResNet-1202 reaches training error < 0.1%.",
}

# --- As data frames and as one markdown document -------------------------------------------------------


def as_frame(rows) -> pd.DataFrame:
    """A tuple of the dataclass rows above as a DataFrame, one column per field."""
    return pd.DataFrame([dataclasses.asdict(row) for row in rows])


def figure_values(figure: str) -> pd.DataFrame:
    """The read-off end values of one figure ("fig1", "fig4", "fig6") as a DataFrame."""
    return as_frame([v for v in FIGURE_VALUES if v.figure == figure])


def _num(x, decimals=None):
    """A paper cell as printed: "–" where the paper has none, else `decimals` places."""
    if x is None:
        return "–"
    return str(x) if decimals is None else f"{x:.{decimals}f}"


def _imagenet_frame(rows, columns=("top-1", "top-5")) -> pd.DataFrame:
    data = {"method": [r.method for r in rows]}
    if "top-1" in columns:
        data["top-1"] = [_num(r.top1, r.decimals) for r in rows]
    data["top-5"] = [_num(r.top5, r.decimals) for r in rows]
    data["note"] = [r.note for r in rows]
    return pd.DataFrame(data)


def render_paper_numbers() -> str:
    """The whole module as one markdown document (results/paper/paper_numbers.md)."""
    # Imported here because tables.py imports this module for Table 6.
    from resnet_repro.tables import render_markdown

    table1 = pd.DataFrame(
        {
            "layers": [a.depth for a in TABLE1.values()],
            "block": [a.block for a in TABLE1.values()],
            "blocks per stage": ["-".join(map(str, a.blocks_per_stage)) for a in TABLE1.values()],
            "multiply-adds (1e9)": [f"{a.mult_adds / 1e9:.1f}" for a in TABLE1.values()],
        }
    )
    table2 = pd.DataFrame(
        {
            "layers": [18, 34],
            "plain": [TABLE2["plain18"], TABLE2["plain34"]],
            "ResNet": [TABLE2["resnet18"], TABLE2["resnet34"]],
        }
    )
    table6 = pd.DataFrame(
        {
            "method": [r.method for r in TABLE6],
            "# layers": [_num(r.layers) for r in TABLE6],
            "# params": [_num(r.params) for r in TABLE6],
            "error (%)": [r.printed for r in TABLE6],
        }
    )
    protocol = pd.DataFrame(
        {
            "item": [f.name for f in dataclasses.fields(CIFAR)],
            "value": [str(getattr(CIFAR, f.name)) for f in dataclasses.fields(CIFAR)],
        }
    )
    depths = ", ".join(f"n={n} → {d}" for d, n in CIFAR_N_BY_DEPTH.items())
    figures = as_frame(FIGURE_VALUES)
    figures["error (%)"] = [f"{v.low:g}" + ("" if v.low == v.high else f"–{v.high:g}") for v in FIGURE_VALUES]
    figures = figures.drop(columns=["low", "high"])
    vgg = ", ".join(f"{k.upper()}: {v / 1e9:.1f}e9" for k, v in VGG_MULT_ADDS.items())

    sections = [
        "# The paper's reported numbers\n\n"
        'He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition" (arXiv 1512.03385). '
        "Generated by `python -m resnet_repro.paper results/paper` from `resnet_repro/paper.py`; "
        "do not edit by hand. Errors in %.",
        render_markdown(
            table1,
            title="Table 1: ImageNet architectures",
            footer=f'The paper\'s "FLOPs" are multiply-adds. VGG (Sec. 3.3): {vgg}; plain-34 is '
            "18% of VGG-19. The paper reports no ImageNet parameter counts.",
        ),
        render_markdown(
            table2,
            title="Table 2: top-1 error, 10-crop, ImageNet val",
            footer="Option A shortcuts: the ResNets have no extra parameters.",
        ),
        render_markdown(
            _imagenet_frame(TABLE3),
            title=f"Table 3: {TABLE3_PROTOCOL}",
            footer="Caption: ResNet-50/101/152 are of option B.",
        ),
        render_markdown(_imagenet_frame(TABLE4), title=f"Table 4: {TABLE4_PROTOCOL}", footer=TABLE4_NOTE),
        render_markdown(
            _imagenet_frame(TABLE5, columns=("top-5",)),
            title=f"Table 5: {TABLE5_PROTOCOL}",
            footer="Won first place in ILSVRC 2015.",
        ),
        render_markdown(
            table6,
            title="Table 6: CIFAR-10 test error, all methods with data augmentation",
            footer=f'Caption: "{TABLE6_CAPTION}" Table 6 has no plain-net rows.',
        ),
        render_markdown(
            protocol,
            title="Sec. 4.2: the CIFAR-10 protocol",
            footer=f"Depths 6n+2: {depths}. Warm-up (lr {CIFAR.warmup_lr} until training "
            f"error < {CIFAR.warmup_until_train_error:g}%) is for ResNet-110; for ResNet-1202 the paper says only "
            '"trained as described above".',
        ),
        render_markdown(
            figures,
            title="Figures 1, 4, 6: end-of-training values read off the figures",
            footer=f"Read from the figure images, ±{FIGURE_READ_TOLERANCE} points.\n\n"
            + "\n\n".join(f"{k}: {v}" for k, v in FIGURE_NOTES.items()),
        ),
    ]
    return "\n\n".join(s.rstrip("\n") for s in sections) + "\n"


def write_paper_numbers(out_dir) -> Path:
    """Write paper_numbers.md into `out_dir` and return its path."""
    path = Path(out_dir) / "paper_numbers.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_paper_numbers(), encoding="utf-8")
    return path


if __name__ == "__main__":
    print(write_paper_numbers(sys.argv[1] if len(sys.argv) > 1 else "results/paper"))
