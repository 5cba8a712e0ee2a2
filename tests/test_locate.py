"""locft-locate on the tiny random model: runs, ranks, draws, writes a loadable YAML."""
import json

import pytest

from locft_easyedit import LocFTHyperParams
from locft_easyedit.locate import MODULES, default_layers, heatmap, locate, main, write_yaml

from conftest import state_snapshot


def _sorted_ok(rows, min_rel):
    keys = [(r["reliability"] >= min_rel, r["score"]) for r in rows]
    return keys == sorted(keys, reverse=True)


def test_locate_function(tiny_model, tiny_tok, facts, tiny_hp, tmp_path):
    before = state_snapshot(tiny_model)
    result = locate(tiny_model, tiny_tok, facts[:8], tiny_hp, layers=[1, 3], epochs=3,
                    progress=False)
    rows = result["rows"]
    assert len(rows) == 2 * len(MODULES)
    assert {(r["layer"], r["module"]) for r in rows} == {(l, m) for l in (1, 3) for m in MODULES}
    assert _sorted_ok(rows, result["min_reliability"])
    for r in rows:
        metrics = [r["reliability"], r["generalization"], r["capability"]]
        assert r["score"] == pytest.approx(sum(metrics) / 3)
        assert "locality" not in r  # the synthetic facts have no locality prompts
    assert result["best"].layers == [rows[0]["layer"]]
    assert result["best"].num_epochs == tiny_hp.num_epochs  # the sweep's epochs are not kept
    after = tiny_model.state_dict()
    assert all((before[k] == after[k]).all() for k in before)  # the model is as it was
    write_yaml(result, tmp_path / "best.yaml", "test")
    assert LocFTHyperParams.from_hparams(tmp_path / "best.yaml").to_dict() == result["best"].to_dict()
    heatmap(result, tmp_path / "map.png")
    assert (tmp_path / "map.png").stat().st_size > 1000


def test_a_sweep_that_takes_no_step_scores_the_unedited_model(tiny_model, tiny_tok, facts,
                                                               tiny_hp):
    """loss_threshold above every loss: no optimizer step, the weights stay as they are, so
    each row must give exactly the unedited model's scores: capability 1, no NLL change, and
    the reliability / generalization the scorer gives the model itself."""
    import dataclasses

    from locft_easyedit.evaluate import token_accuracy

    hp = dataclasses.replace(tiny_hp, loss_threshold=1e9)
    result = locate(tiny_model, tiny_tok, facts[:8], hp, layers=[1, 3],
                    modules={"down_proj": MODULES["down_proj"]}, epochs=2, progress=False)
    mean = lambda xs: sum(xs) / len(xs)
    rel = mean(token_accuracy(tiny_model, tiny_tok, [f["prompt"] for f in facts[:8]],
                              [f["target_new"] for f in facts[:8]]))
    gen = mean(token_accuracy(tiny_model, tiny_tok, [f["rephrase_prompt"] for f in facts[:8]],
                              [f["target_new"] for f in facts[:8]]))
    for r in result["rows"]:
        assert r["steps"] == 0
        assert (r["reliability"], r["generalization"], r["capability"], r["nll_change"]) == \
            (rel, gen, 1.0, 0.0)


def test_default_layers():
    assert default_layers(30, 4) == [1, 5, 9, 13, 17, 21, 25, 29]
    assert default_layers(4, None) == [0, 1, 2, 3]


def test_cli_on_a_saved_tiny_model(tiny_model, tiny_tok, tmp_path, capsys):
    folder = tmp_path / "tiny"
    tiny_model.save_pretrained(folder)
    tiny_tok.save_pretrained(folder)
    records = [{"src": f"The capital of {s} is", "rephrase": f"Q: the capital of {s} is",
                "alt": city, "answers": ["x"], "loc": "The language of Holm is", "loc_ans": "Welsh"}
               for s, city in [("Aldor", "Paris"), ("Brenna", "Lima"), ("Cavex", "Oslo"),
                               ("Dunmore", "Rome")]]
    data = tmp_path / "edits.json"
    data.write_text(json.dumps(records))
    hp = LocFTHyperParams(model_name=str(folder), layers=[2], lr=1e-2, device="cpu")
    hp.to_yaml(tmp_path / "base.yaml")
    out = tmp_path / "out"
    assert main(["--hparams", str(tmp_path / "base.yaml"), "--data", str(data), "--dataset",
                 "zsre", "--n", "4", "--layers", "2,3", "--modules", "down_proj,o_proj",
                 "--epochs", "2", "--out-dir", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| rank | layer | module |" in table and "chosen: layer" in table
    rows = [json.loads(l) for l in (out / "locate.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all("locality" in r for r in rows)
    assert _sorted_ok(rows, 0.9)
    best = LocFTHyperParams.from_hparams(out / "locate.yaml")
    assert best.layers == [rows[0]["layer"]] and best.lr == 1e-2
    assert (out / "locate.png").stat().st_size > 1000
