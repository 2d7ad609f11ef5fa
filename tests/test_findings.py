"""The paper's claims checked on records: Fig. 7's two claims and the two footnote ablations."""

import pandas as pd

from resnet_repro import findings
from resnet_repro.experiment import PROFILES


def response_table(medians: dict[str, float]) -> pd.DataFrame:
    return pd.DataFrame({"net": list(medians), "median std": list(medians.values())})


def test_response_findings_shown_when_resnets_respond_less_and_deeper_ones_least():
    lines = findings.response_findings(
        response_table({"plain20": 2.0, "plain56": 1.8, "resnet20": 1.2, "resnet56": 1.0, "resnet110": 0.8})
    )
    assert len(lines) == 3 and all(": shown" in line for line in lines)
    assert "resnet20 1.20 vs plain20 2.00" in lines[0]


def test_response_findings_say_not_shown_with_the_numbers():
    lines = findings.response_findings(response_table({"plain20": 1.0, "resnet20": 1.2, "resnet56": 1.3}))
    assert "ResNets respond less than their plain counterparts (Fig. 7): NOT shown" in lines[0]
    assert "the deeper ResNet, the smaller the responses (Fig. 7): NOT shown" in lines[1]
    assert "resnet20 1.20, resnet56 1.30" in lines[1]


def ablation(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([{"net": "resnet20", "seeds": 1, **row} for row in rows])


def test_shortcut_findings_compare_b_with_a_and_c_with_b_and_name_the_noise():
    table = ablation(
        [
            {"variant": "A", "test error mean": 26.0},
            {"variant": "B", "test error mean": 25.5},
            {"variant": "C", "test error mean": 25.9},
        ]
    )
    lines = findings.ablation_findings(table, "shortcut", PROFILES["quick"])
    assert lines[0].startswith("resnet20: B slightly better than A (Table 3, on ImageNet): shown")
    assert lines[1].startswith("resnet20: C marginally better than B (Table 3, on ImageNet): NOT shown")
    assert all("one seed per arm" in line for line in lines)


def test_warmup_findings_on_when_each_arm_started_converging():
    table = ablation(
        [
            {"variant": "0.01 warm-up", "train < 90% from iter.": 40, "test error mean": 30.0},
            {"variant": "0.1 from the start", "train < 90% from iter.": 400, "test error mean": 31.0},
        ]
    )
    quick = findings.ablation_findings(table, "warmup", PROFILES["quick"])
    assert quick[0].endswith(
        "shown - training error below 90% for good from iteration 400 (0.1 from the start) vs 40 (0.01 warm-up)"
    )
    assert "not tested at this budget" in quick[1]
    paper = findings.ablation_findings(table, "warmup", PROFILES["paper"])
    assert "still reaches similar accuracy, within a point (Sec. 4.2): NOT shown" in paper[1]
    never = table.assign(**{"train < 90% from iter.": [40, pd.NA]})
    assert "never stayed below 90%" in findings.ablation_findings(never, "warmup", PROFILES["quick"])[0]


def test_warmup_finding_is_not_shown_when_neither_arm_converged():
    table = ablation(
        [
            {"variant": "0.01 warm-up", "train < 90% from iter.": pd.NA, "test error mean": 90.0},
            {"variant": "0.1 from the start", "train < 90% from iter.": pd.NA, "test error mean": 90.0},
        ]
    )
    line = findings.ablation_findings(table, "warmup", PROFILES["quick"])[0]
    assert ": NOT shown - 0.01 warm-up never stayed below 90% training error either" in line


def depth_summary(test_errors: dict[int, float]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "depth": d,
                "family": "cifar",
                "residual": True,
                "final_train_error": e,
                "final_test_error": e,
                "profile": "paper",
            }
            for d, e in test_errors.items()
        ]
    )


def test_deeper_resnet_finding_needs_every_step_deeper_to_be_better_and_says_1202_apart():
    lines = findings.depth_findings(depth_summary({20: 8.7, 56: 7.0, 110: 7.2, 1202: 7.9}), PROFILES["paper"])
    assert lines[0].startswith("deeper ResNet, lower test error (Fig. 6, Table 6): NOT shown")
    assert "ResNet-20 8.7%, ResNet-56 7.0%, ResNet-110 7.2%" in lines[0]  # 110 worse than 56; 1202 left out
    assert lines[1] == "ResNet-1202 overfits: worse than ResNet-110 (Table 6): shown - 7.9% vs 7.2% test error"
    shown = findings.depth_findings(depth_summary({20: 8.7, 56: 7.0, 110: 6.4}), PROFILES["paper"])
    assert shown == [
        "deeper ResNet, lower test error (Fig. 6, Table 6): shown - ResNet-20 8.7%, ResNet-56 7.0%, ResNet-110 6.4%"
    ]
