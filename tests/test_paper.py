"""The paper's numbers (checked against the paper's tables and text) and their markdown rendering."""

from pathlib import Path

import pytest

from resnet_repro import paper

REPO = Path(__file__).resolve().parents[1]


def test_table6_resnet_params_are_the_printed_strings():
    resnet = [r for r in paper.TABLE6 if r.method == "ResNet"]
    assert [r.layers for r in resnet] == [20, 32, 44, 56, 110, 1202]
    assert [r.params for r in resnet] == ["0.27M", "0.46M", "0.66M", "0.85M", "1.7M", "19.4M"]


def test_table6_errors_as_printed():
    printed = {(r.method, r.layers): r.printed for r in paper.TABLE6}
    assert printed[("ResNet", 110)] == "6.43 (6.61±0.16)"
    assert printed[("Highway [42,43]", 19)] == "7.54 (7.72±0.16)"
    assert printed[("Highway [42,43]", 32)] == "8.80"
    assert {r.model: r.error for r in paper.TABLE6 if r.model} == {
        "resnet20": 8.75,
        "resnet32": 7.51,
        "resnet44": 7.17,
        "resnet56": 6.97,
        "resnet110": 6.43,
        "resnet1202": 7.93,
    }


def test_table6_rows_in_paper_order():
    assert [r.method for r in paper.TABLE6[:6]] == [
        "Maxout [10]",
        "NIN [25]",
        "DSN [24]",
        "FitNet [35]",
        "Highway [42,43]",
        "Highway [42,43]",
    ]
    assert [r.error for r in paper.TABLE6[:4]] == [9.38, 8.81, 8.22, 8.39]
    assert paper.TABLE6_RUNS_110 == 5


def test_table1_depth_follows_blocks_per_stage():
    for depth, arch in paper.TABLE1.items():
        layers_per_block = 2 if arch.block == "basic" else 3
        # conv1 and the fc layer, plus the weighted layers of every block.
        assert layers_per_block * sum(arch.blocks_per_stage) + 2 == depth


def test_table1_multiply_adds_against_vgg():
    assert paper.TABLE1[34].mult_adds == 3.6e9
    assert paper.TABLE1[152].mult_adds == 11.3e9
    assert paper.TABLE1[34].mult_adds / paper.VGG_MULT_ADDS["vgg19"] == pytest.approx(0.18, abs=0.005)
    assert paper.TABLE1[152].mult_adds < paper.VGG_MULT_ADDS["vgg16"] == 15.3e9


def test_table2_matches_the_prose_gaps():
    t2 = paper.TABLE2
    assert t2 == {"plain18": 27.94, "resnet18": 27.88, "plain34": 28.54, "resnet34": 25.03}
    assert t2["resnet18"] - t2["resnet34"] == pytest.approx(2.8, abs=0.06)  # "by 2.8%"
    assert t2["plain34"] - t2["resnet34"] == pytest.approx(3.5, abs=0.02)  # "3.5%"


def test_tables_3_to_5_golden_values():
    t3 = {r.method: (r.top1, r.top5) for r in paper.TABLE3}
    assert t3["ResNet-152"] == (21.43, 5.71)
    assert t3["GoogLeNet [44]"] == (None, 9.15)
    t4 = {r.method: (r.top1, r.top5) for r in paper.TABLE4}
    assert t4["ResNet-152"] == (19.38, 4.49)
    assert t4["VGG [41] (ILSVRC'14)"] == (None, 8.43)
    assert "multi-scale" in paper.TABLE4_NOTE
    assert paper.TABLE5[-1].top5 == 3.57


def test_cifar_protocol_constants():
    c = paper.CIFAR
    assert (c.lr, c.milestones, c.max_iters, c.batch_size) == (0.1, (32_000, 48_000), 64_000, 128)
    assert (c.weight_decay, c.momentum, c.warmup_lr, c.warmup_until_train_error) == (1e-4, 0.9, 0.01, 80.0)
    assert paper.CIFAR_N_BY_DEPTH == {20: 3, 32: 5, 44: 7, 56: 9, 110: 18, 1202: 200}
    # Our reading: with 391 iterations per epoch the milestones fall near epochs 82/123/164.
    per_epoch = -(-c.train_images // c.batch_size)
    assert [round(i / per_epoch) for i in (*c.milestones, c.max_iters)] == [82, 123, 164]


def test_figure_values_plain_nets_degrade_with_depth():
    fig6 = paper.figure_values("fig6")
    plain_test = fig6[(fig6.panel == "plain") & (fig6.curve == "test")].set_index("model")["low"]
    assert list(plain_test) == [9.7, 10.1, 11.2, 13.2]
    assert list(plain_test.index) == ["plain20", "plain32", "plain44", "plain56"]
    fig1 = paper.figure_values("fig1").set_index(["model", "curve"])
    assert fig1.loc[("plain56", "train"), ["low", "high"]].tolist() == [5.5, 6.0]
    assert paper.FIGURE_READ_TOLERANCE == 0.3
    assert all(v.low <= v.high for v in paper.FIGURE_VALUES)


def test_render_paper_numbers_has_every_table():
    text = paper.render_paper_numbers()
    for n in range(1, 7):
        assert f"## Table {n}:" in text
    assert "| ResNet | 110 | 1.7M | 6.43 (6.61±0.16) |" in text
    assert "| ResNet | 1202 | 19.4M | 7.93 |" in text
    assert "| VGG [41] (v5) | 24.4 | 7.1 |" in text  # printed with one decimal, as in the paper
    assert "±0.3" in text


def test_write_paper_numbers_writes_the_document(tmp_path):
    path = paper.write_paper_numbers(tmp_path / "paper")
    assert path == tmp_path / "paper" / "paper_numbers.md"
    assert path.read_text(encoding="utf-8") == paper.render_paper_numbers()


def test_committed_paper_numbers_are_current():
    committed = REPO / "results" / "paper" / "paper_numbers.md"
    assert committed.read_text(encoding="utf-8") == paper.render_paper_numbers(), (
        "regenerate with: python -m resnet_repro.paper results/paper"
    )
