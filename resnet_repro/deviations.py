"""The deviation ledger: every intentional departure from the paper, in the code and in the results.

Two kinds: each `# DEVIATION (paper: ...)` comment in the library and the experiment specs, and the
data-level ones read from the run records a table was built from (the JPEG copy of CIFAR-10, BN over
another number of images per device, a scaled-down profile, bf16 or compile), each with the option
that restores the paper's behaviour where one exists. `resnet-repro deviations` prints the ledger of
results/; `python -m resnet_repro.deviations --write README.md` refreshes the README's code list.
"""

import json
import re
from pathlib import Path

import pandas as pd

PACKAGE = Path(__file__).resolve().parent
_MARK = re.compile(r"#\s*DEVIATION \(paper: (?P<paper>[^)]*(?:\([^)]*\)[^)]*)*)\):\s*(?P<ours>.*)")


EXPERIMENTS = PACKAGE.parent / "experiments"
# Sec. 4.2: "a mini-batch size of 128 on two GPUs", and Caffe's BN normalises per GPU.
PAPER_BN_IMAGES = 64
# Sec. 3.4 gives batch 256; the authors' released models were trained on eight GPUs, 32 images each.
IMAGENET_BN_IMAGES = 32


def find_deviations(root: Path = PACKAGE) -> list[tuple[str, str, str]]:
    """(file, what the paper does, what we do) for each marked deviation, the comment's next lines included."""
    found = []
    paths = sorted(root.rglob("*.py"))
    if root == PACKAGE and EXPERIMENTS.is_dir():  # the experiment specs' own budgets are departures too
        paths += sorted(EXPERIMENTS.glob("*.py"))
    for path in paths:
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            match = _MARK.search(line)
            if not match:
                continue
            ours = [match["ours"].strip()]
            for follow in lines[i + 1 :]:  # the comment may continue on the next lines
                stripped = follow.strip()
                if not stripped.startswith("#") or "DEVIATION" in stripped:
                    break
                ours.append(stripped.lstrip("# "))
            found.append((str(path.relative_to(root.parent)), match["paper"].strip(), " ".join(ours)))
    return found


def data_deviations(summary: pd.DataFrame, profile: str) -> list[dict]:
    """The departures a table's runs made, read from their records: what, the paper's, ours, how to restore."""
    out = []

    def add(what: str, paper: str, ours: str, restore: str) -> None:
        out.append({"what": what, "paper": paper, "ours": ours, "restore": restore})

    if len(summary) == 0:
        return out
    if any(str(c).startswith("cifar10-jpg") for c in summary["data_copy"]):
        add(
            "data",
            "the original CIFAR-10 images",
            "a JPEG (quality 75) copy of all 60,000 images: errors sit somewhat above the paper's",
            "--data a torchvision CIFAR-10 root or its python archive",
        )
    imagenet = (summary["family"] == "imagenet").any()
    if imagenet and any("first" in str(c) and "classes" in str(c) for c in summary["data_copy"]):
        add(
            "data",
            "ILSVRC-2012: 1000 classes, 1.28M training and 50k validation images",
            "the first classes of a copy only (--subset): errors are not comparable with the paper's",
            "leave out --subset, on a full copy",
        )
    per_device = sorted({int(b) // int(w) for b, w in zip(summary["batch_size"], summary["world_size"], strict=True)})
    paper_bn, paper_setup, restore = (
        (IMAGENET_BN_IMAGES, "256 on eight GPUs", "--devices 8 --strategy ddp (batch 256)")
        if imagenet
        else (PAPER_BN_IMAGES, "128 on two GPUs", "--devices 2 --strategy ddp (batch 128)")
    )
    if per_device != [paper_bn]:
        add(
            "batch normalisation",
            f"BN over {paper_bn} images per GPU ({paper_setup})",
            f"BN over {', '.join(map(str, per_device))} images per device",
            restore,
        )
    if profile != "paper":
        iters = ", ".join(str(int(i)) for i in sorted(set(summary["max_iters"])))
        add(
            "schedule",
            "60e4 iterations, lr /10 on plateaus" if imagenet else "64k iterations, lr /10 at 32k and 48k",
            f"the {profile} profile: {iters} iterations" + ("" if imagenet else ", the same shape"),
            "--profile paper",
        )
    if imagenet and summary["precise_bn_images"].isna().any():
        add(
            "BN statistics",
            "the released models: BN mean and variance averaged over many training images after training",
            "the running averages of training",
            "--precise-bn 50000 (train)",
        )
    if (summary["precision"] != "32-true").any():
        add("arithmetic", "fp32", ", ".join(sorted(set(summary["precision"]))), "--precision 32-true (the default)")
    if summary["compile"].astype(bool).any():
        add("execution", "eager", "torch.compile of the network", "leave out --compile")
    return out


def ledger(results_dir: Path) -> str:
    """results/deviations.md: the code's markers, then each rendered artifact's data-level departures."""
    lines = [
        "# Deviations from the paper",
        "",
        "Generated by `resnet-repro report` (and printed by `resnet-repro deviations`): every intentional "
        "departure from He et al. (2015), with how to restore the paper's behaviour where an option does.",
        "",
        "## In the code",
        "",
        markdown(),
        "",
        "## In the committed results",
        "",
    ]
    for path in sorted(Path(results_dir).glob("*/*-provenance.json")):
        p = json.loads(path.read_text())
        rows = p.get("deviations")
        lines += [f"### {p['artifact']} ({p['profile']} profile)", ""]
        if rows is None:
            lines += ["not recorded (rendered before the ledger existed: run `resnet-repro report` again)", ""]
            continue
        if not rows:
            lines += ["none: these runs followed the paper's protocol", ""]
            continue
        lines += ["| what | the paper | these runs | to restore |", "|---|---|---|---|"]
        lines += [f"| {d['what']} | {d['paper']} | {d['ours']} | `{d['restore']}` |" for d in rows]
        lines.append("")
    return "\n".join(lines)


def markdown() -> str:
    rows = ["| where | the paper | ours |", "|---|---|---|"]
    rows += [f"| `{where}` | {paper} | {ours} |" for where, paper, ours in find_deviations()]
    return "\n".join(rows)


START, END = "<!-- deviations:start -->", "<!-- deviations:end -->"


def readme_block(readme_text: str) -> str:
    """What the README holds between its deviation markers."""
    return readme_text.split(START, 1)[1].split(END, 1)[0].strip()


def write_readme(path: Path) -> None:
    """Replace the README's deviation list with the current one."""
    text = path.read_text()
    head, rest = text.split(START, 1)
    path.write_text(f"{head}{START}\n{markdown()}\n{END}{rest.split(END, 1)[1]}")


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["--write"]:
        write_readme(Path(sys.argv[2]))
    else:
        print(markdown())
