"""The model table: parameters and multiply-adds of every architecture beside the paper's numbers.

One row per registered net with its paper defaults (Table 1, Sec. 4.2), plus the variants the
paper compares (ResNet-34 with options B and C, Table 3) or that users meet (torchvision's option-B
ResNet-18/34 and its stride-on-3x3 ResNet-50). Nets are built on the "meta" device: counting needs
only shapes, so even ResNet-1202 costs about two seconds.
"""

import math
from pathlib import Path

import pandas as pd
import torch

import resnet_repro
from resnet_repro import paper
from resnet_repro.errors import UserError
from resnet_repro.flops import count_multiply_adds, count_parameters
from resnet_repro.models import build_model, list_models, model_info

FORMATS = ("table", "csv", "json", "markdown")

# The paper's complexity figures, taken from resnet_repro/paper.py (the one copy of the paper's numbers).
PAPER = {
    # Table 6, ResNets with option A; millions of parameters ("0.27M" -> 0.27).
    "params_M": {row.model: float(row.params.rstrip("M")) for row in paper.TABLE6 if row.model},
    # Table 1 (one column per depth, plain and residual alike) and Sec. 3.3 (plain-34); 1e9.
    "mult_adds_G": {
        **{f"resnet{depth}": arch.mult_adds / 1e9 for depth, arch in paper.TABLE1.items()},
        "plain18": paper.TABLE1[18].mult_adds / 1e9,
        "plain34": paper.TABLE1[34].mult_adds / 1e9,
    },
    "vgg19_mult_adds_G": paper.VGG_MULT_ADDS["vgg19"] / 1e9,  # Sec. 3.3, the comparison point (not built here)
}

# torchvision's ResNets (option B) as reported by its model docs; not the paper's numbers.
TORCHVISION_PARAMS = {f"resnet{depth}": count for depth, count in paper.TORCHVISION_PARAMS.items()}

# Extra rows: (name, keyword arguments), each listed after its default row.
VARIANTS = [
    ("resnet18", {"shortcut": "B"}),
    ("resnet34", {"shortcut": "B"}),
    ("resnet34", {"shortcut": "C"}),
    ("resnet50", {"stride_in_1x1": False}),
]

FOOTNOTES = [
    "Multiply-adds of the conv and FC layers for one image at 32x32 (CIFAR-10) or 224x224 "
    "(ImageNet); the paper's 'FLOPs' are multiply-adds (Sec. 3.3).",
    "Paper params: Table 6 (CIFAR ResNets; the plain nets have the same counts, Sec. 4.2). "
    "Paper multiply-adds: Table 1 and Sec. 3.3 (plain-34).",
    f"VGG-19, the paper's comparison point, has {PAPER['vgg19_mult_adds_G']} x10^9 multiply-adds "
    "(Sec. 3.3); it is not built here.",
    "ResNet-50: Table 1's 3.8 is our count truncated, not rounded. With the stride on the 3x3 "
    "(torchvision's 'v1.5') the count rises to about 4.1.",
    "torchvision params: its option-B ResNets; where the stride sits does not change the count.",
]


def model_row(name: str, **kwargs) -> dict:
    """One row of the table for `build_model(name, **kwargs)`."""
    info = model_info(name)
    with torch.device("meta"):
        model = build_model(name, **kwargs)
    shortcut = kwargs.get("shortcut", info.shortcut)
    bottleneck = info.family == "imagenet" and info.depth >= 50
    default = not kwargs
    return {
        "model": name,
        "family": info.family,
        "depth": info.depth,
        "net": "residual" if info.residual else "plain",
        "shortcut": shortcut or "none",
        "stride_on": ("1x1" if kwargs.get("stride_in_1x1", True) else "3x3") if bottleneck else "",
        "params": count_parameters(model),
        "params_paper_M": PAPER["params_M"].get(name, math.nan) if default else math.nan,
        "params_torchvision": TORCHVISION_PARAMS.get(name) if shortcut == "B" else None,
        "mult_adds": count_multiply_adds(model, info.input_size),
        "mult_adds_paper_G": PAPER["mult_adds_G"].get(name, math.nan) if default else math.nan,
    }


def model_table(family: str | None = None) -> pd.DataFrame:
    """One row per registered architecture (and its listed variants), in registry order."""
    rows = []
    for name in list_models(family):
        rows.append(model_row(name))
        rows.extend(model_row(name, **kwargs) for variant, kwargs in VARIANTS if variant == name)
    frame = pd.DataFrame(rows)
    frame["params_torchvision"] = frame["params_torchvision"].astype("Int64")
    return frame


def display_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The table as strings, in the paper's units, for humans."""

    def maybe(values, fmt):
        return [fmt(v) if pd.notna(v) else "" for v in values]

    return pd.DataFrame(
        {
            "model": frame["model"],
            "family": frame["family"],
            "depth": frame["depth"].astype(str),
            "net": frame["net"],
            "shortcut": frame["shortcut"],
            "stride on": frame["stride_on"],
            "params": maybe(frame["params"], lambda v: f"{v:,}"),
            "paper params": maybe(frame["params_paper_M"], lambda v: f"{v:g}M"),
            "torchvision params": maybe(frame["params_torchvision"], lambda v: f"{v:,}"),
            "mult-adds (1e9)": maybe(frame["mult_adds"], lambda v: f"{v / 1e9:.3f}"),
            "paper mult-adds (1e9)": maybe(frame["mult_adds_paper_G"], lambda v: f"{v:g}"),
        }
    )


def provenance(command: str) -> str:
    """One line saying how a rendered table was made."""
    return f"Generated by `{command}` (resnet-repro {resnet_repro.__version__}, torch {torch.__version__})."


def render(frame: pd.DataFrame, fmt: str, command: str = "resnet-repro models") -> str:
    """The table as text in `fmt` (table, csv, json or markdown)."""
    if fmt == "csv":
        return frame.to_csv(index=False)
    if fmt == "json":
        return frame.to_json(orient="records", indent=2) + "\n"
    if fmt == "table":
        notes = "".join(f"\n{i}. {note}" for i, note in enumerate(FOOTNOTES, 1))
        return display_frame(frame).to_string(index=False) + "\n" + notes + "\n"
    if fmt == "markdown":
        return _markdown(display_frame(frame), command)
    raise UserError(f"unknown table format {fmt!r}: valid are {', '.join(FORMATS)}")


_RULE = {"model": "---", "family": "---", "net": "---", "shortcut": ":---:", "stride on": ":---:"}


def _markdown(shown: pd.DataFrame, command: str) -> str:
    lines = [
        "# Model table: parameters and multiply-adds (Table 1, Table 6)",
        "",
        "| " + " | ".join(shown.columns) + " |",
        # Text columns left or centred, numbers right-aligned.
        "|" + "|".join(_RULE.get(column, "---:") for column in shown.columns) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in shown.itertuples(index=False)]
    lines += [""] + [f"{i}. {note}" for i, note in enumerate(FOOTNOTES, 1)]
    lines += ["", provenance(command), ""]
    return "\n".join(lines)


def write_results(frame: pd.DataFrame, directory: str | Path, command: str) -> list[Path]:
    """Write `models.md` and `models.csv` into `directory`; return their paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    markdown, csv = directory / "models.md", directory / "models.csv"
    markdown.write_text(render(frame, "markdown", command))
    csv.write_text(render(frame, "csv"))
    return [markdown, csv]
