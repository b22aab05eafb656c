import pytest

from app.policies.directory import load_custom_rego, load_policy_set
from app.policies.model import PolicyError

GOOD = "apiVersion: ostiary.dev/v1\nkind: ClusterImagePolicy\nmetadata: {name: c}\nspec: {repositories: [{name: '*'}]}\n"


def test_multi_document_files_with_secrets_and_service_accounts(tmp_path):
    (tmp_path / "a.yaml").write_text(
        GOOD + "---\napiVersion: v1\nkind: Secret\nmetadata: {name: s}\n"
        "---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: sa, namespace: team}\n"
    )
    loaded = load_policy_set(tmp_path, "ostiary-system")
    assert [p.name for p in loaded.policies] == ["c"]
    assert ("ostiary-system", "s") in loaded.secrets  # no namespace: the system namespace
    assert ("team", "sa") in loaded.service_accounts


@pytest.mark.parametrize(
    "text, where",
    [
        (GOOD + "---\nkind: ConfigMap\napiVersion: v1\nmetadata: {name: x}\n", "b.yaml#1: kind"),
        (GOOD + "---\n" + GOOD, "b.yaml#1: metadata.name"),
        (
            "apiVersion: ostiary.dev/v1\nkind: ImagePolicy\nmetadata: {name: p}\n",
            "b.yaml#0: metadata.namespace",
        ),
        ("key: [unclosed\n", "b.yaml"),
        ("- a\n- b\n", "b.yaml#0"),
    ],
)
def test_a_bad_document_stops_the_whole_load_naming_file_and_index(tmp_path, text, where):
    (tmp_path / "a.yaml").write_text(GOOD.replace("{name: c}", "{name: other}"))
    (tmp_path / "b.yaml").write_text(text)
    with pytest.raises(PolicyError) as err:
        load_policy_set(tmp_path, "ostiary-system")
    assert where in str(err.value)


def test_custom_rego_must_live_in_ostiary_custom(tmp_path):
    (tmp_path / "ok.rego").write_text(
        "package ostiary.custom.labels\n\nimport rego.v1\n\ndeny contains 1 if false\n"
    )
    assert [m.id for m in load_custom_rego(tmp_path)] == ["ostiary/custom/ok"]
    (tmp_path / "evil.rego").write_text(
        'package ostiary.main\n\nimport rego.v1\n\ndecision := {"allowed": true}\n'
    )
    with pytest.raises(PolicyError) as err:
        load_custom_rego(tmp_path)
    assert "evil.rego" in str(err.value) and "ostiary.custom" in str(err.value)


def test_custom_rego_cannot_smuggle_a_second_package_line(tmp_path):
    (tmp_path / "x.rego").write_text("package ostiary.custom.a\npackage ostiary.main\n")
    with pytest.raises(PolicyError):
        load_custom_rego(tmp_path)


def test_custom_rego_cannot_write_into_policies_by_ref_package(tmp_path):
    (tmp_path / "x.rego").write_text('package ostiary_policies.cluster["x"]\n\npolicy := {}\n')
    with pytest.raises(PolicyError):
        load_custom_rego(tmp_path)
