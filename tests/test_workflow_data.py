"""The workflow JSON format, its validation errors, and the seed's error-code x site-status features."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cmsdl.data.workflow_features import WorkflowMatrix
from cmsdl.data.workflows import load_workflows, parse_workflows
from cmsdl.errors import InputFormatError


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
