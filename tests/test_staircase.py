"""The staircase figure's class grouping (``phaseprobe.plots.staircase``).

Synthetic records with a known answer: four classes along a linear grid, class 0 lost at the
first transition's step, class 1 at the second's, class 2 never learned, class 3 kept to the end;
and one class lost far from any transition. The figure itself is rendered and its panel titles
checked.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from phaseprobe.plots.staircase import class_loss_points, group_classes, staircase_figure

XS = np.round(np.linspace(0.01, 0.10, 10), 6)


def _records(lost_at: dict[int, float | None], seeds=(0, 1, 2)) -> pd.DataFrame:
    rows = []
    for s in seeds:
        for i, x in enumerate(XS):
            r = dict(branch="up", seed=s, alpha_index=i, strength=x, alpha=x / 2, convention="wd", final=True,
                     diverged=False, dataset="fashion-mnist", train_error=1.0 + x, loss=1.2 + 2 * x, test_acc=0.5)
            for k, at in lost_at.items():
                learned = (at is None) or (at is not np.nan and x < at)
                if at is not None and np.isnan(at):
                    learned = False
                r[f"class_acc_{k}"] = 0.9 if learned else 0.1
                r[f"class_prec_{k}"] = 0.9 if learned else 0.0
            rows.append(r)
    return pd.DataFrame(rows)


TRANSITIONS = [
    dict(branch="up", observable="test_acc", strength_c=0.03, strength_lo=0.03, strength_hi=0.04, order="first (jump)"),
    dict(branch="up", observable="test_acc", strength_c=0.07, strength_lo=0.07, strength_hi=0.08, order="continuous"),
]


def test_loss_points_and_groups():
    df = _records({0: 0.04, 1: 0.08, 2: np.nan, 3: None, 4: 0.10})
    loss = class_loss_points(df)
    assert loss[0] == 0.04 and loss[1] == 0.08 and loss[4] == 0.10
    assert loss[3] is None and np.isnan(loss[2])
    groups = dict(group_classes(loss, TRANSITIONS, XS))
    assert groups["lost at T1 (0.03)"] == [0]
    assert groups["lost at T2 (0.07)"] == [1]
    assert groups["never learned by half of the seeds"] == [2]
    assert groups["still learned at the end of the grid"] == [3]
    assert groups["lost where no transition was detected"] == [4]


def test_a_class_lost_by_one_seed_of_three_is_kept():
    df = _records({0: 0.04, 1: None}, seeds=(0,))
    df = pd.concat([df, _records({0: None, 1: None}, seeds=(1, 2))])
    assert class_loss_points(df)[0] is None  # two of three seeds still learn it: not lost


def test_figure_draws_every_group_and_transition():
    df = _records({0: 0.04, 1: 0.08, 2: np.nan, 3: None})
    fig = staircase_figure(df, TRANSITIONS, title="t")
    titles = [ax.get_title() for ax in fig.axes]
    assert "lost at T1 (0.03)" in titles and "lost at T2 (0.07)" in titles
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert "T1" in texts and "T2" in texts
    assert fig.axes[0].get_xscale() == "linear"  # a linear grid is drawn on a linear axis
