"""The README's deviation list is the one the code's `# DEVIATION` comments give."""

from pathlib import Path

from resnet_repro.deviations import find_deviations, markdown, readme_block

README = Path(__file__).resolve().parents[1] / "README.md"


def test_deviations_found_include_the_known_ones():
    papers = [paper for _, paper, _ in find_deviations()]
    assert any("two GPUs" in p for p in papers)
    assert any("per-pixel mean" in p for p in papers)


def test_readme_lists_every_deviation():
    assert readme_block(README.read_text()) == markdown(), "run: python -m resnet_repro.deviations --write README.md"
