"""The `finflow` command line: set-up, tokens that work against the API, the demo, and bad arguments."""

from click.testing import CliRunner

from engine.cli import main


def run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_init_is_idempotent_and_deploy_reports_unchanged():
    assert run("init").exit_code == 0
    result = run("deploy")
    assert result.exit_code == 0
    assert set(result.output.split("\n")) >= {"reimbursement v1 unchanged", "payment v1 unchanged",
                                               "contract v1 unchanged"}


def test_token_authenticates_against_the_api(app):
    result = run("token", "create", "suxiaoyun")
    assert result.exit_code == 0
    user, token = result.output.split()
    response = app.test_client().get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert user == "suxiaoyun" and response.json["id"] == "suxiaoyun" and "employee" in response.json["roles"]


def test_create_user_then_issue_token():
    result = run("create-user", "--id", "newbie", "--name", "新同事", "--department", "rd", "--manager", "lihua",
                 "--role", "designer")
    assert result.exit_code == 0
    assert run("token", "create", "newbie").exit_code == 0


def test_demo_drives_every_scenario_to_completion():
    result = run("demo")
    assert result.exit_code == 0, result.output
    assert "13 scenarios, 13 completed" in result.output


def test_bad_arguments_are_clear_errors():
    unknown_user = CliRunner().invoke(main, ["token", "create", "ghost"])
    assert unknown_user.exit_code == 1 and "ghost" in unknown_user.output
    bad_dept = CliRunner().invoke(main, ["create-user", "--id", "x", "--name", "X", "--department", "nowhere"])
    assert bad_dept.exit_code == 1 and "nowhere" in bad_dept.output
    missing = CliRunner().invoke(main, ["deploy", "/no/such/path"])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    bad_port = CliRunner().invoke(main, ["serve", "--port", "99999"])
    assert bad_port.exit_code == 2 and "99999" in bad_port.output
    invalid = CliRunner().invoke(main, ["deploy", __file__])
    assert invalid.exit_code == 2 and "no .bpmn" in invalid.output
