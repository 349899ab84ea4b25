"""The command line: crds (write and drift check), validate, version."""

import pytest

from inferscale.cli.main import crd_files, main
from tests.manifests import EXAMPLES, INVALID


def test_crds_writes_every_file_then_check_passes(tmp_path, capsys):
    assert main(["crds", "--out", str(tmp_path)]) == 0
    assert {p.name for p in tmp_path.iterdir()} == set(crd_files())
    assert main(["crds", "--out", str(tmp_path), "--check"]) == 0


def test_crds_check_reports_edited_and_stale_files(tmp_path, capsys):
    main(["crds", "--out", str(tmp_path)])
    first = sorted(tmp_path.iterdir())[0]
    first.write_text(first.read_text() + "# hand edit\n")
    (tmp_path / "old.inferscale.io.yaml").write_text("stale")
    assert main(["crds", "--out", str(tmp_path), "--check"]) == 1
    err = capsys.readouterr().err
    assert first.name in err and "old.inferscale.io.yaml" in err and "make crds" in err


def test_validate_examples(capsys):
    assert main(["validate", *map(str, sorted(EXAMPLES.glob("*.yaml")))]) == 0
    assert capsys.readouterr().out.count(": valid") == 4


def test_validate_reports_each_problem_with_its_field(capsys):
    assert main(["validate", str(INVALID / "min-greater-than-max.yaml")]) == 1
    err = capsys.readouterr().err
    assert "InferenceModel/bad-min-max: invalid" in err
    assert "minReplicas must be less than or equal to maxReplicas" in err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("key: [unclosed", "cannot read"),
        ("apiVersion: v1\nkind: ConfigMap\n", "no inferscale objects found"),
    ],
)
def test_validate_bad_files(tmp_path, capsys, content, message):
    path = tmp_path / "x.yaml"
    path.write_text(content)
    assert main(["validate", str(path)]) == 1
    assert message in capsys.readouterr().err


def test_validate_missing_file(capsys):
    assert main(["validate", "does-not-exist.yaml"]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_version(capsys):
    assert main(["version"]) == 0
    assert capsys.readouterr().out.startswith("inferscale ")


def test_unknown_command_exits_with_usage():
    with pytest.raises(SystemExit) as exit_info:
        main(["nope"])
    assert exit_info.value.code == 2
