"""Every `# DEVIATION (paper: ...)` comment in the library, listed for the README.

python -m resnet_repro.deviations --write README.md
"""

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
_MARK = re.compile(r"#\s*DEVIATION \(paper: (?P<paper>[^)]*(?:\([^)]*\)[^)]*)*)\):\s*(?P<ours>.*)")


def find_deviations(root: Path = PACKAGE) -> list[tuple[str, str, str]]:
    """(file, what the paper does, what we do) for each marked deviation, the comment's next lines included."""
    found = []
    for path in sorted(root.rglob("*.py")):
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
