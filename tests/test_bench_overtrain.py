"""`bench/backtest.py --real DIR` reads the over-training testbed's per-run JSON (Gadre et al. 2024,
`exp_data/models` of mlfoundations/scaling) and cuts it by model size, as the authors did."""

import importlib.util
import json
import os

import numpy as np


def _bench():
    spec = importlib.util.spec_from_file_location(
        "bench_backtest", os.path.join(os.path.dirname(__file__), "..", "bench", "backtest.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def _run(dataset: str, params: int, tokens: int, losses: dict[str, float]) -> dict:
    """One run's JSON in the testbed's layout: the loss on several validation splits."""
    return {"name": f"{dataset}-{params}-{tokens}", "dataset_name": dataset,
            "hyperparameters": {"params": params, "tokens": tokens},
            "results": [{"loss": loss, "val_data": [f"training/eval_data/val_tok_mult/{split}/00000001.tar"]}
                        for split, loss in losses.items()]}


def test_overtraining_testbed_gives_one_table_per_corpus_on_its_own_split_cut_by_size(tmp_path):
    bench = _bench()
    sizes = [1e7, 8e7, 4e8, 1.4e9, 7e9]
    for i, n in enumerate(sizes):
        for m in (20, 80):
            for dataset, own in (("c4_original", "paloma_c4_en"), ("rpj", "paloma_redpajama")):
                run = _run(dataset, int(n), int(m * n), {"openlm": 9.0, own: 5.0 - 0.1 * i - 0.01 * m, "paloma_ptb": 8.0})
                (tmp_path / f"{dataset}-{i}-{m}.json").write_text(json.dumps(run))
    tables = bench.real_tables(str(tmp_path))
    assert sorted(tables) == ["overtrain_c4", "overtrain_rpj"]
    c4 = tables["overtrain_c4"]
    assert len(c4["params"]) == 10
    np.testing.assert_allclose(c4["eval_loss"][c4["params"] == 1e7], [4.8, 4.2])  # its own split, not openlm's
    by, frac = bench.real_cut("overtrain_c4", c4)
    assert by == "params" and round(len(c4["params"]) * (1 - frac)) == 6  # the two largest sizes held out
    assert bench.real_cut("porian0", c4) == ("params*tokens_seen", 1 / 3)
    assert set(bench.real_sources(str(tmp_path))) == {"overtrain_c4", "overtrain_rpj"}
