"""The workflow JSON format, its validation errors, and the seed's error-code x site-status features."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cmsdl.data.tabular import TabularDataModule, class_weights
from cmsdl.errors import ConfigError, InputFormatError
from cmsdl.evaluate import overtraining_ks
from cmsdl.features.workflows.records import load_workflows, parse_workflows
from cmsdl.features.workflows.source import WorkflowActionSource, WorkflowMatrix
from conftest import run_cmsdl


def workflow(name: str, action: str | None, errors: dict, status: dict | None = None) -> dict:
    return {"name": name, "action": action, "tasks": [{"name": f"/{name}/GENSIM", "errors": errors,
                                                      "site_status": status or {}}]}


def write(tmp_path: Path, doc) -> Path:
    path = tmp_path / "wf.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def test_parses_errors_per_site_with_status(tmp_path: Path) -> None:
    doc = {"workflows": [workflow("wf1", "acdc", {"50664": {"T1_US_FNAL": 12, "T2_CH_CERN": 3}, "-1": {"T3_US_OSG": 1}},
                                  {"T1_US_FNAL": "good", "T2_CH_CERN": "bad", "T3_US_OSG": None})]}
    [wf] = load_workflows(write(tmp_path, doc))
    assert wf.name == "wf1" and wf.action == "acdc" and wf.n_failed_jobs == 16
    by_site = {e.site: e for e in wf.errors}
    assert by_site["T2_CH_CERN"].site_bad and not by_site["T1_US_FNAL"].site_bad
    assert not by_site["T3_US_OSG"].site_bad, "unknown status counts as good, as in the seed"
    assert by_site["T3_US_OSG"].code == -1


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ("{not json", "not valid JSON (line 1"),
        ({"workflows": [{"name": "wfA", "action": "acdc"}]}, "workflow 'wfA': field 'tasks'"),
        ({"workflows": [workflow("wfB", "acdc", {"50660": {"T1_UK_RAL": -3}})]},
         "workflow 'wfB': tasks[0].errors['50660']['T1_UK_RAL']: expected a non-negative integer count, got -3"),
        ({"workflows": [workflow("wfC", "reboot", {})]}, "workflow 'wfC': field 'action' is 'reboot'"),
        ({"workflows": [workflow("wfD", "clone", {"oops": {"T1_UK_RAL": 1}})]}, "exit code 'oops' is not an integer"),
        ({"workflows": [workflow("wfE", "clone", {"84": {"T1_UK_RAL": 1}}, {"T1_UK_RAL": "drain"})]},
         "site_status['T1_UK_RAL']: got 'drain'"),
        ({"workflows": [{"action": "acdc", "tasks": []}]}, "workflow #0: field 'name'"),
        ({"flows": []}, "expected a JSON object with a 'workflows' list"),
    ],
)
def test_malformed_input_names_file_workflow_and_field(tmp_path: Path, doc, expected: str) -> None:
    path = write(tmp_path, doc)
    with pytest.raises(InputFormatError) as err:
        load_workflows(path)
    message = str(err.value)
    assert expected in message
    assert message.startswith(str(path)) and "\n" not in message


def test_missing_file_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InputFormatError, match="no such workflow file"):
        load_workflows(tmp_path / "absent.json")


def test_bare_list_and_missing_action_are_accepted() -> None:
    [wf] = parse_workflows([workflow("wf", None, {"84": {"T2_US_MIT": 2}})])
    assert wf.action is None


def test_matrix_collapses_sites_into_good_and_bad() -> None:
    wfs = parse_workflows([
        workflow("a", "acdc", {"50660": {"T1_US_FNAL": 3, "T2_US_MIT": 4}, "84": {"T2_US_MIT": 1}},
                 {"T2_US_MIT": "bad"}),
        workflow("b", "clone", {"50660": {"T2_DE_DESY": 7}, "84": {"T2_DE_DESY": 2}}),
    ])
    matrix = WorkflowMatrix(log_scale=False).fit(wfs)
    x = matrix.transform(wfs)
    names = matrix.feature_names
    assert names[:4] == ["50660|good", "50660|bad", "84|good", "84|bad"] and names[-2:] == ["other|good", "other|bad"]
    np.testing.assert_array_equal(x[0, :4], [3, 4, 0, 1])
    np.testing.assert_array_equal(x[1, :4], [7, 0, 2, 0])


def test_vocabulary_comes_from_training_workflows_and_unseen_codes_go_to_other() -> None:
    train = parse_workflows([workflow(f"t{i}", "acdc", {"50664": {"T1_IT_CNAF": 1}}) for i in range(3)])
    unseen = parse_workflows([workflow("new", "acdc", {"71304": {"T1_IT_CNAF": 5}}, {"T1_IT_CNAF": "bad"})])
    matrix = WorkflowMatrix(log_scale=True).fit(train)
    assert matrix.codes == [50664]
    row = dict(zip(matrix.feature_names, matrix.transform(unseen)[0]))
    assert row["other|bad"] == pytest.approx(np.log1p(5))
    assert row["50664|good"] == 0


def test_rare_codes_and_per_site_columns() -> None:
    wfs = parse_workflows([
        workflow("a", "acdc", {"50660": {"T1_US_FNAL": 2}, "92": {"T2_IT_Pisa": 1}}),
        workflow("b", "acdc", {"50660": {"T2_IT_Pisa": 1}}),
    ])
    matrix = WorkflowMatrix(per_site=True, min_code_workflows=2, log_scale=False).fit(wfs)
    assert matrix.codes == [50660], "92 is seen in one workflow only"
    row = dict(zip(matrix.feature_names, matrix.transform(wfs)[0]))
    assert row["50660@T1_US_FNAL"] == 2 and row["other@T2_IT_Pisa"] == 1 and row["other|good"] == 1


def test_state_dict_restores_the_same_features() -> None:
    wfs = parse_workflows([workflow(f"w{i}", "acdc", {str(c): {"T1_DE_KIT": i + 1}}) for i, c in enumerate([84, 85, 84])])
    fitted = WorkflowMatrix(min_code_workflows=1).fit(wfs)
    restored = WorkflowMatrix()
    restored.load_state_dict(json.loads(json.dumps(fitted.state_dict())))
    np.testing.assert_array_equal(fitted.transform(wfs), restored.transform(wfs))
    assert restored.feature_names == fitted.feature_names


def many_workflows(n: int, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    codes, sites = ["84", "85", "50660", "50664", "8004", "60307"], ["T1_US_FNAL", "T2_CH_CERN", "T2_US_MIT"]
    return parse_workflows([
        workflow(f"w{i}", "acdc", {c: {s: int(rng.integers(1, 30))} for c in rng.choice(codes, 2, replace=False)
                                   for s in rng.choice(sites, 1)}, {sites[0]: "bad"})
        for i in range(n)
    ])


def test_svd_compresses_the_matrix_with_a_basis_fitted_on_the_training_workflows_only() -> None:
    train, other = many_workflows(40, seed=1), many_workflows(10, seed=2)
    matrix = WorkflowMatrix(svd_components=3).fit(train)
    assert matrix.feature_names == ["svd0", "svd1", "svd2"] and len(matrix.matrix_names) == 14
    basis = np.asarray(matrix.svd_basis)
    x = matrix.transform(other)
    assert x.shape == (10, 3)
    np.testing.assert_allclose(x, WorkflowMatrix().fit(train).transform(other) @ basis.T, rtol=1e-5, atol=1e-5)
    refitted = WorkflowMatrix(svd_components=3).fit(other).transform(other)
    assert not np.allclose(np.abs(refitted), np.abs(x), atol=1e-3), "fitted on other workflows, another basis"
    restored = WorkflowMatrix()
    restored.load_state_dict(json.loads(json.dumps(matrix.state_dict())))
    np.testing.assert_array_equal(restored.transform(other), x)


def test_svd_with_too_many_components_is_one_config_error() -> None:
    with pytest.raises(ConfigError, match="got 14, expected an integer from 1 to 13"):
        WorkflowMatrix(svd_components=14).fit(many_workflows(20))


def test_class_weights_balance_the_classes() -> None:
    labels = np.array([0] * 30 + [1] * 10)
    weights = class_weights(labels)
    assert weights[labels == 0].sum() == pytest.approx(weights[labels == 1].sum()) == pytest.approx(20)


def datamodule(path: Path, balance: str, **matrix) -> TabularDataModule:
    source = WorkflowActionSource(str(path), classes=["acdc", "kill"], matrix=WorkflowMatrix(**matrix))
    return TabularDataModule(source, batch_size=64, seed=3, balance=balance)


def training_labels(dm: TabularDataModule) -> tuple[np.ndarray, list[int]]:
    batches = list(dm.train_dataloader())
    return np.concatenate([b[1].numpy() for b in batches]), [len(b) for b in batches]


def test_balance_weights_and_oversample_use_the_training_split(workflows_file: Path) -> None:
    plain = datamodule(workflows_file, "none")
    labels, sizes = training_labels(plain)
    share = labels.mean()
    assert share < 0.35 and set(sizes) == {2}, "kill is the minority class of the simulated workflows"
    weighted = datamodule(workflows_file, "weights")
    batches = list(weighted.train_dataloader())
    y, w = np.concatenate([b[1].numpy() for b in batches]), np.concatenate([b[2].numpy() for b in batches])
    assert w[y == 1].sum() == pytest.approx(w[y == 0].sum(), rel=1e-4) and w[y == 1][0] > w[y == 0][0]
    assert all(len(b) == 2 for split in ("train", "test") for b in weighted.split_loader(split)), \
        "only the training loader carries class weights (eval of the train split does not)"
    oversampled = datamodule(workflows_file, "oversample")
    drawn, _ = training_labels(oversampled)
    assert len(drawn) == len(labels) and 0.43 < drawn.mean() < 0.57
    assert len(oversampled.split_ids("train")) == len(labels), "the train split itself is not resampled"


def test_datamodule_svd_features_come_from_the_training_split(workflows_file: Path) -> None:
    dm = datamodule(workflows_file, "none", svd_components=5)
    dm.setup()
    assert dm.feature_names == [f"svd{i}" for i in range(5)] and dm.num_features == 5
    train = [dm.records[i] for i in dm.split_rows["train"]]
    expected = WorkflowMatrix(svd_components=5).fit(train).svd_basis
    np.testing.assert_allclose(dm.source.matrix.svd_basis, expected)


def test_unknown_balance_is_a_config_error(workflows_file: Path) -> None:
    with pytest.raises(ConfigError, match="data.balance: got 'smote'"):
        datamodule(workflows_file, "smote")


def test_ks_p_values_flag_train_and_test_scores_that_differ() -> None:
    rng = np.random.default_rng(0)
    p_train = rng.uniform(size=400)
    train_probs = np.stack([1 - p_train, p_train], axis=1)
    train_labels = (p_train > 0.5).astype(int)
    same = overtraining_ks(train_probs, train_labels, train_probs[::2], train_labels[::2], ["acdc", "clone"])
    assert set(same) == {"acdc", "clone"} and same["clone"]["p_value"] > 0.5
    shifted = np.clip(train_probs + [[-0.2, 0.2]], 0, 1)
    differ = overtraining_ks(train_probs, train_labels, shifted, train_labels, ["acdc", "clone"])
    assert differ["clone"]["p_value"] < 1e-6 and differ["clone"]["n_train"] == int(train_labels.sum())


def test_eval_reports_the_overtraining_ks_test(tmp_path: Path, trained_checkpoint: Path) -> None:
    proc = run_cmsdl("eval", f"ckpt={trained_checkpoint}", f"paths.log_dir={tmp_path}", "run_name=e",
                     "accelerator=cpu", cwd=tmp_path)
    assert "overtraining check (KS test of train vs test scores, per true class): acdc p=" in proc.stdout
    out = tmp_path / "eval" / "runs" / "e"
    ks = json.loads((out / "metrics.json").read_text())["overtraining_ks"]
    assert set(ks) == {"acdc", "clone"} and all(0 <= v["p_value"] <= 1 for v in ks.values())
    assert (out / "overtraining.png").read_bytes()[:4] == b"\x89PNG"
